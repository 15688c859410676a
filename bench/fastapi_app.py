"""The peer for bench/http.sh: the stack the design documents chose (FastAPI + uvicorn).

It does what CoachLibre's GET /api/v1/me does: validate the HS256 access token and read the
caller's row from the same SQLite database, then answer JSON. The JWT key is derived from
CoachLibre's master secret exactly as CoachLibre derives it, so both servers accept the same
token and read the same row.
"""

import hashlib
import hmac
import os
import sqlite3
import threading
import uuid

import jwt
from fastapi import FastAPI, Header, HTTPException

MASTER = open(os.environ["BENCH_SECRET_FILE"], "rb").read().strip()
KEY = hmac.new(MASTER, b"coachlibre/jwt/v1", hashlib.sha256).digest()
DB = os.environ["BENCH_SQLITE_FILE"]

app = FastAPI()
local = threading.local()


def db() -> sqlite3.Connection:
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(f"file:{DB}?mode=ro", uri=True)
        local.conn = conn
    return conn


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.get("/me")
def me(authorization: str = Header(default="")):
    if not authorization.startswith("Bearer "):
        raise HTTPException(401, "missing credentials")
    try:
        claims = jwt.decode(authorization[7:], KEY, algorithms=["HS256"])
    except jwt.PyJWTError:
        raise HTTPException(401, "invalid token")
    row = db().execute(
        "SELECT id, tenant_id, email, display_name, role, totp_secret, created_at "
        "FROM users WHERE tenant_id = ? AND id = ?",
        (uuid.UUID(claims["tid"]).bytes, uuid.UUID(claims["sub"]).bytes),
    ).fetchone()
    if row is None:
        raise HTTPException(404, "user not found")
    return {
        "id": str(uuid.UUID(bytes=row[0])),
        "tenant_id": str(uuid.UUID(bytes=row[1])),
        "email": row[2],
        "display_name": row[3],
        "role": row[4],
        "mfa_enabled": row[5] is not None,
        "created_at": row[6],
    }

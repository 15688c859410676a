#!/usr/bin/env bash
# HTTP benchmark: CoachLibre against FastAPI + uvicorn on the same machine, in one run.
#
#   bash bench/http.sh            # 10 s per target
#   DURATION=30s CONNECTIONS=64 bash bench/http.sh
#
# Both servers answer GET /healthz and an authenticated GET of the caller's own row
# (CoachLibre: /api/v1/me; FastAPI: /me), validating the same JWT and reading the same row of
# the same SQLite file. The load generator is wrk (Debian), with latency percentiles.
# Prints a Markdown table to paste into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
UVICORN_WORKERS=${UVICORN_WORKERS:-2}
CL_PORT=18080
PY_PORT=18081

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
if [ ! -x bench/.venv/bin/uvicorn ]; then
  echo "installing FastAPI + uvicorn into bench/.venv"
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q fastapi 'uvicorn[standard]' pyjwt
fi
cargo build --release -q -p coachlibre
BIN=${CARGO_TARGET_DIR:-target}/release/coachlibre

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export COACHLIBRE_ADMIN_EMAIL=bench@example.org COACHLIBRE_ADMIN_PASSWORD='bench password 123'
export COACHLIBRE_RATE_LIMIT__ENABLED=false RUST_LOG=warn
"$BIN" --data-dir "$work" serve --bind 127.0.0.1:$CL_PORT >"$work/cl.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs http://127.0.0.1:$CL_PORT/healthz >/dev/null && break; sleep 0.2; done

TOKEN=$(curl -fs -X POST http://127.0.0.1:$CL_PORT/api/v1/auth/login \
  -H 'content-type: application/json' \
  -d '{"email":"bench@example.org","password":"bench password 123"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

BENCH_SECRET_FILE="$work/secret.key" BENCH_SQLITE_FILE="$work/coachlibre.db" \
  bench/.venv/bin/uvicorn --app-dir bench fastapi_app:app --host 127.0.0.1 --port $PY_PORT \
  --workers "$UVICORN_WORKERS" --log-level warning >"$work/py.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fs http://127.0.0.1:$PY_PORT/healthz >/dev/null && break; sleep 0.2; done
curl -fs -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$PY_PORT/me >/dev/null ||
  { echo "FastAPI peer cannot read the row"; cat "$work/py.log"; exit 1; }
curl -fs -H "Authorization: Bearer $TOKEN" http://127.0.0.1:$CL_PORT/api/v1/me >/dev/null

# wrk's percentiles, normalised to milliseconds.
to_ms() { python3 -c '
import sys
v = sys.argv[1]
for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
    if v.endswith(unit):
        print(f"{float(v[:-len(unit)]) * f:.2f}"); break
' "$1"; }

run() {
  local name=$1 url=$2 auth=${3:-}
  local args=(-t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency)
  [ -n "$auth" ] && args+=(-H "Authorization: Bearer $auth")
  wrk "${args[@]}" -d2s "$url" >/dev/null # warm-up
  local out; out=$(wrk "${args[@]}" "$url")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out"); errors=${errors:-0}
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$rps" "$p50" "$p99" "$errors"
}

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| target | requests/s | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
run "CoachLibre GET /healthz" "http://127.0.0.1:$CL_PORT/healthz"
run "FastAPI+uvicorn ($UVICORN_WORKERS workers) GET /healthz" "http://127.0.0.1:$PY_PORT/healthz"
run "CoachLibre GET /api/v1/me (JWT + 1 row)" "http://127.0.0.1:$CL_PORT/api/v1/me" "$TOKEN"
run "FastAPI+uvicorn ($UVICORN_WORKERS workers) GET /me (JWT + 1 row)" "http://127.0.0.1:$PY_PORT/me" "$TOKEN"

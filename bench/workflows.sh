#!/usr/bin/env bash
# Workflow runs started over HTTP by their webhook, end to end, as n8n's published figure is
# measured: the real server (`coachlibre serve`, its worker inside) on a fresh database, a
# three-step workflow without a model (transform -> aggregate -> condition), wrk POSTing to the
# workflow's webhook from CONNECTIONS connections for DURATION; then the time until every run
# it accepted is done.
#
#   bash bench/workflows.sh            # SQLite (a fresh file)
#   bash bench/workflows.sh postgres   # PostgreSQL (recreates the coachlibre_bench database)
#   DURATION=20s CONNECTIONS=32 bash bench/workflows.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${1:-sqlite}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
PORT=18090
BASE=http://127.0.0.1:$PORT

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -qq wrk >/dev/null; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/coachlibre/target}
cargo build --release -q -p coachlibre
BIN=$CARGO_TARGET_DIR/release/coachlibre

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

db_args=()
if [ "$ENGINE" = postgres ]; then
  dropdb -h 127.0.0.1 -U postgres --if-exists coachlibre_bench 2>/dev/null
  createdb -h 127.0.0.1 -U postgres coachlibre_bench
  db_args=(--database-url postgres://postgres@127.0.0.1:5432/coachlibre_bench)
fi
export COACHLIBRE_ADMIN_EMAIL=bench@example.org COACHLIBRE_ADMIN_PASSWORD='bench password 123'
export COACHLIBRE_RATE_LIMIT__ENABLED=false RUST_LOG=warn
"$BIN" --data-dir "$work" "${db_args[@]}" serve --bind 127.0.0.1:$PORT >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -fs $BASE/healthz >/dev/null && break; sleep 0.2; done

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
TOKEN=$(curl -fs -X POST $BASE/api/v1/auth/login -H 'content-type: application/json' \
  -d '{"email":"bench@example.org","password":"bench password 123"}' | json 'd["access_token"]')
auth=(-H "authorization: Bearer $TOKEN")
curl -fs "${auth[@]}" -H 'content-type: application/json' $BASE/api/v1/workflows -d '
  {"definition": {"name": "three", "steps": [
    {"id": "shape", "kind": "transform", "value": {"n": "{{input.n}}"}},
    {"id": "say", "kind": "aggregate", "template": "n={{steps.shape.n}}", "needs": ["shape"]},
    {"id": "check", "kind": "condition", "path": "steps.shape.n", "equals": 1,
     "needs": ["say"]}]}}' >/dev/null
hook=$(curl -fs "${auth[@]}" $BASE/api/v1/workflows/three/webhook | json 'd["path"] + "?token=" + d["secret"]')
cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"n": 1}'
wrk.headers["Content-Type"] = "application/json"
EOF

# Jobs not finished yet, and workflow runs succeeded, from the queue's summary.
counts() { curl -fs "${auth[@]}" $BASE/api/v1/jobs-summary |
  json 'd["counts"].get("queued", 0) + d["counts"].get("running", 0), d["counts"].get("succeeded", 0)'; }
drain() { while :; do set -- $(counts | tr -d '(),'); [ "$1" = 0 ] && { echo "$2"; return; }; sleep 0.05; done; }

wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$work/post.lua" "$BASE$hook" >/dev/null # warm-up
before=$(drain)
start=$(date +%s.%N)
out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/post.lua" "$BASE$hook")
accepted_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
errors=$(awk '/Non-2xx/ {print $5}' <<<"$out"); errors=${errors:-0}
p50=$(awk '$1 == "50%" {print $2}' <<<"$out"); p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
after=$(drain)
end=$(date +%s.%N)
done_runs=$((after - before))
echo
echo "$ENGINE, wrk -t$THREADS -c$CONNECTIONS -d$DURATION on the webhook, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| engine | runs done | seconds to all done | runs/s done | webhook requests/s | p50 / p99 | non-2xx |"
echo "|---|---|---|---|---|---|---|"
python3 -c "
n, s = $done_runs, $end - $start
print(f'| $ENGINE | {n} | {s:.2f} | {n / s:.0f} | $accepted_rps | $p50 / $p99 | $errors |')"

#!/usr/bin/env bash
# The job queue against Celery on Redis, same machine, one run: no-op job throughput (enqueue
# to done) and latency. Needs PostgreSQL and Redis on localhost (as on CI) and Python 3.
#   bash bench/jobs.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coachlibre/target}"
cargo build -q --release -p coachlibre-jobs --example queue_bench
venv="$HOME/.cache/coachlibre/celery-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q 'celery[redis]'
# A fresh database per run: a queue table's dead row versions (before autovacuum catches
# up) slow claims, and runs would otherwise inherit each other's.
pg=postgres://postgres@127.0.0.1:5432/coachlibre_bench
dropdb -h 127.0.0.1 -U postgres --if-exists coachlibre_bench
createdb -h 127.0.0.1 -U postgres coachlibre_bench
"$CARGO_TARGET_DIR/release/examples/queue_bench" "$n"
"$CARGO_TARGET_DIR/release/examples/queue_bench" "$n" "$pg"
(cd bench && "$venv/bin/python" jobs_celery.py "$n")

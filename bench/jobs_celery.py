"""Celery on Redis, the peer of `queue_bench`: no-op task throughput (enqueue to done) and
latency on this machine.

    python bench/jobs_celery.py [JOBS]

Starts a Celery worker (prefork, one process per core, the default) on the local Redis
(database 15, flushed first), then, like `queue_bench`:
- enqueues JOBS no-op tasks one by one with `delay()` and times until the last one is done;
- the same from 16 producer threads at once, each calling `delay()` one task at a time;
- the same with the tasks sent in one `group` (Celery's batch);
- latency: one task at a time, from `delay()` to the task having run (500 samples).
"Done" is the task having run and recorded itself in Redis (INCR), the equivalent of the
Rust queue committing the job's outcome. Results are ignored (no result backend), as a
no-op job's result is nothing.
"""

import os
import subprocess
import sys
import threading
import time

import redis
from celery import Celery, group

BROKER = "redis://127.0.0.1:6379/15"
app = Celery("jobs_celery", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=16,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
r = redis.Redis.from_url(BROKER)


@app.task(name="noop")
def noop():
    r.incr("done")


@app.task(name="noop_timed")
def noop_timed(sent):
    r.rpush("lat", time.time() - sent)


def wait_done(n, timeout=600):
    deadline = time.time() + timeout
    while int(r.get("done") or 0) < n:
        if time.time() > deadline:
            raise SystemExit(f"only {int(r.get('done') or 0)} of {n} done")
        time.sleep(0.002)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    r.flushdb()
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "jobs_celery", "worker", "--loglevel=WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # Warm-up (also waits for the worker to be up).
        for _ in range(200):
            noop.delay()
        wait_done(200, timeout=120)
        r.set("done", 0)

        print("| engine | measurement | jobs | seconds | jobs/s |")
        print("|---|---|---|---|---|")
        t = time.time()
        for _ in range(n):
            noop.delay()
        wait_done(n)
        s = time.time() - t
        print(f"| Celery 5 + Redis | enqueued one by one, to done | {n} | {s:.2f} | {n / s:.0f} |")

        r.set("done", 0)
        producers = 16
        t = time.time()
        threads = [threading.Thread(target=lambda k=k: [noop.delay() for _ in range(k, n, producers)])
                   for k in range(producers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wait_done(n)
        s = time.time() - t
        print(f"| Celery 5 + Redis | enqueued one by one by {producers} producers, to done | {n} "
              f"| {s:.2f} | {n / s:.0f} |")

        r.set("done", 0)
        t = time.time()
        group(noop.s() for _ in range(n)).apply_async()
        wait_done(n)
        s = time.time() - t
        print(f"| Celery 5 + Redis | enqueued as one group, to done | {n} | {s:.2f} | {n / s:.0f} |")

        lat = []
        for _ in range(500):
            t = time.time()
            noop_timed.delay(t)
            r.blpop("lat")
            lat.append(time.time() - t)
        lat.sort()
        pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000
        print(f"\nCelery latency, enqueue to done (ms, 500 tasks one at a time): "
              f"p50 {pct(50):.2f}, p90 {pct(90):.2f}, p99 {pct(99):.2f}, max {lat[-1] * 1000:.2f}")
    finally:
        worker.terminate()
        worker.wait()


if __name__ == "__main__":
    main()

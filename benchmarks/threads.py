"""An app-level ThreadPoolExecutor of blocking C-driver queries: real threads vs patched.

Issue 10's figure: ``ThreadPoolExecutor(8)`` running 2 ms PostgreSQL queries
(``SELECT pg_sleep(0.002)``) with plain psycopg2, no wait callback, so each
query is a C call that blocks its thread while releasing the GIL. Each worker
keeps its own connection (a ``threading.local``), as a thread-style app does.

``--driver mysqlclient`` runs the same with mysqlclient against MariaDB
(``SELECT SLEEP(0.002)``), the C driver Django recommends for MySQL (issue 18:
``ThreadPoolExecutor(16)`` on 4 hubs, goal >= 0.8x real threads).

Three modes, each in its own fresh interpreter (patching is per process):

* ``threads``: unpatched, real OS threads (the reference);
* ``gevent``: ``gevent.monkey.patch_all()``: every worker is a greenlet on the
  main thread's hub, so the queries run one at a time;
* ``greenpool``: ``greenpool.monkey.patch_all()`` with ``GREENPOOL_HUBS``
  (default 8) hubs: workers started from the main thread are dispatched over
  the default pool's hubs;
* ``greenpool-task``: the same, with the executor made and used inside a pool
  task (as in a request handler): its workers are dispatched too (see
  ``greenpool/monkey/threads.py``), not pinned to the task's hub;
* ``greenpool-green``: ``patch_all(psycopg2="green", mysqldb="green")``: each
  query waits on its hub's loop instead of a connection's helper thread.

A run does the whole batch once untimed (workers start and connect), then
times the same batch. Runs alternate between modes; medians are printed with
the raw figures, and the ratio of each mode's median throughput to real
threads'.

Usage: python benchmarks/threads.py [--queries 800] [--workers 8] [--runs 5]
       [--hubs 8] [--modes threads,gevent,greenpool,greenpool-task]
       [--driver psycopg2|mysqlclient] [--dsn ...]
       [--json benchmarks/results/threads-latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

MODES = ("threads", "gevent", "greenpool", "greenpool-task", "greenpool-green")
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"

CHILD = textwrap.dedent(
    """
    import json, sys
    mode, dsn, queries, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    driver = sys.argv[5]
    if mode == "gevent":
        from gevent import monkey
        monkey.patch_all()
    elif mode == "greenpool-green":  # the drivers' waits on the hub, no helper threads
        from greenpool import monkey
        monkey.patch_all(psycopg2="green", mysqldb="green")
    elif mode.startswith("greenpool"):
        from greenpool import monkey
        monkey.patch_all()
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    if driver == "mysqlclient":
        import MySQLdb

        def connect():
            return MySQLdb.connect(host="127.0.0.1", port=3306, user="root", password="",
                                   database="test", autocommit=True)

        SQL = "SELECT SLEEP(0.002)"
    else:
        import psycopg2

        def connect():
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            return conn

        SQL = "SELECT pg_sleep(0.002)"

    local = threading.local()
    connections = []
    worker_hubs = {}  # worker ident -> index of the hub it runs on (greenpool mode)
    if mode.startswith("greenpool"):
        from greenpool import current_hub
    else:
        current_hub = lambda: None

    def query(_):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect()
            connections.append(conn)
            hub = current_hub()
            worker_hubs[threading.get_ident()] = None if hub is None else hub.index
        cur = conn.cursor()
        cur.execute(SQL)
        cur.fetchall()
        cur.close()
        return threading.get_ident()

    def bench():
        with ThreadPoolExecutor(workers) as executor:
            list(executor.map(query, range(queries)))  # warm-up: workers start, connect
            t0 = time.perf_counter()
            idents = set(executor.map(query, range(queries)))
            return time.perf_counter() - t0, idents

    if mode == "greenpool-task":  # the executor made inside a pool task (a request handler)
        import greenpool
        elapsed, idents = greenpool.spawn(bench).result()
    else:
        elapsed, idents = bench()
    for conn in connections:
        conn.close()
    print(json.dumps({"seconds": elapsed, "threads": len(idents),
                      "hubs": sorted(h for h in worker_hubs.values() if h is not None)}))
    """
)


def run_once(mode: str, args) -> dict:
    env = dict(os.environ, GREENPOOL_HUBS=str(args.hubs))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, args.dsn, str(args.queries), str(args.workers),
         args.driver],
        capture_output=True, text=True, timeout=300, env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=800)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hubs", type=int, default=8)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--dsn", default=DSN, help="PostgreSQL's (psycopg2)")
    parser.add_argument("--driver", choices=("psycopg2", "mysqlclient"), default="psycopg2")
    parser.add_argument("--json", metavar="PATH", help="also write raw runs and medians here")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    raw: dict[str, list[float]] = {m: [] for m in modes}
    print(
        f"ThreadPoolExecutor({args.workers}), {args.queries} x a 2 ms query ({args.driver}), "
        f"GREENPOOL_HUBS={args.hubs}, {args.runs} alternating runs"
    )
    for run in range(args.runs):
        for mode in modes:
            result = run_once(mode, args)
            rate = args.queries / result["seconds"]
            raw[mode].append(rate)
            print(
                f"  run {run + 1} {mode:14s} {result['seconds']:.3f} s  {rate:7.0f} queries/s  "
                f"workers used={result['threads']} their hubs={result['hubs']}"
            )
    medians = {m: statistics.median(v) for m, v in raw.items()}
    print("medians (queries/s):")
    for mode in modes:
        ratio = ""
        if "threads" in medians and mode != "threads":
            ratio = f"  {medians[mode] / medians['threads']:.2f}x real threads"
        print(f"  {mode:14s} {medians[mode]:7.0f}{ratio}  raw {[round(r) for r in raw[mode]]}")
    if args.json:
        ratios = {m: medians[m] / medians["threads"] for m in modes if "threads" in medians}
        with open(args.json, "w") as out:
            json.dump({"driver": args.driver, "queries": args.queries, "workers": args.workers,
                       "hubs": args.hubs,
                       "raw_queries_per_s": raw, "medians": medians,
                       "ratio_to_threads": ratios, "loadavg": os.getloadavg()}, out, indent=1)


if __name__ == "__main__":
    main()

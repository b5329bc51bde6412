"""Child process of tests/test_legacy_apps.py: one thread-style scenario, patched, on 4 hubs.

    GREENPOOL_HUBS=4 python tests/legacy_apps_child.py SCENARIO [--reps N] [--url URL]

It patches with ``greenpool.monkey.patch_all()`` first, as a legacy app's main
module does, then starts WORKERS ``threading.Thread`` workers from the main
thread (greenpool puts each on a hub its dispatcher picks) that share ONE client
object made at "import time" in the main thread, the way a thread-style app
shares a module-level client. Every repetition runs TASKS tasks; every result
is checked here. The last line on stdout is a JSON report (hubs the workers ran
on, per-scenario facts the parent checks). A hang dumps every thread's stack to
stderr and exits 1 (faulthandler), so the parent sees where it stuck.

``--gevent-only`` runs the same scenario after gevent's ``patch_all()`` alone
(one hub, every "thread" a greenlet on it): the control the issue compares with.
"""

import sys

if "--gevent-only" in sys.argv:  # the control: gevent's own patching, one hub, no pool
    from gevent import monkey

    monkey.patch_all()
else:
    import greenpool.monkey

    # psycopg2's mode (greenpool.monkey.psycopg2): offload (the default) or blocking;
    # the psycopg2 scenario's --green adds the wait callback later.
    greenpool.monkey.patch_all(psycopg2="blocking" if "--psycopg2-blocking" in sys.argv
                               else "offload")

import argparse  # noqa: E402
import collections  # noqa: E402
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402

import greenpool  # noqa: E402

TASKS = 400
WORKERS = 16
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5"
POOL_SIZE = 4


def fan_out(task: Callable[[int], object], expect: Callable[[int], object], reps: int) -> set:
    """Run ``task(i)`` for i in range(TASKS) on WORKERS threads, ``reps`` times; check each result.

    Returns the hub indexes the workers ran on (None for a worker on no hub).
    """
    hubs: set = set()
    for rep in range(reps):
        results = one_round(task, hubs)
        wrong = [(i, results[i]) for i in range(TASKS) if results[i] != expect(i)]
        if wrong:
            raise AssertionError(f"repetition {rep}: {len(wrong)} wrong results, e.g. {wrong[:3]}")
    return hubs


def one_round(task: Callable[[int], object], hubs: set) -> list:
    """One repetition: WORKERS threads share the TASKS tasks; returns the results in order.

    The workers wait on one ``threading.Event`` (set by the main thread) before
    they start, so the event is waited on every hub at once.
    """
    results: list = [None] * TASKS
    errors: list[str] = []
    gate = threading.Event()

    def worker(w: int) -> None:
        hub = greenpool.current_hub()
        hubs.add(None if hub is None else hub.index)
        try:
            if not gate.wait(10):
                raise AssertionError("the start event was never seen set")
            for i in range(w, TASKS, WORKERS):
                results[i] = task(i)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=worker, args=(w,), name=f"worker-{w}")
               for w in range(WORKERS)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    if errors:
        raise AssertionError(f"{len(errors)} workers failed; first:\n{errors[0]}")
    return results


# -- HTTP clients (the server runs in the parent, unpatched) --------------------------------


def scenario_requests(args) -> dict:
    import requests

    session = requests.Session()  # module-level in a real app; never closed: exit must be quiet

    def task(i: int) -> str:
        response = session.get(f"{args.url}/item/{i}", timeout=10)
        response.raise_for_status()
        return response.text

    return {"hubs": fan_out(task, lambda i: f"item {i}", args.reps)}


def scenario_urllib3(args) -> dict:
    import urllib3

    http = urllib3.PoolManager(maxsize=POOL_SIZE, block=True)

    def task(i: int) -> str:
        response = http.request("GET", f"{args.url}/item/{i}", timeout=10, retries=False)
        assert response.status == 200, response.status
        return response.data.decode()

    return {"hubs": fan_out(task, lambda i: f"item {i}", args.reps)}


# -- Redis -----------------------------------------------------------------------------------


def scenario_redis(args) -> dict:
    import redis

    name = f"greenpool-test-{uuid.uuid4().hex[:12]}"
    pool = redis.BlockingConnectionPool(host="127.0.0.1", port=6379, max_connections=POOL_SIZE,
                                        timeout=10, client_name=name, socket_timeout=10)
    client = redis.Redis(connection_pool=pool)
    counter = f"{name}:count"

    def task(i: int) -> int:
        key = f"{name}:{i}"
        client.set(key, i, ex=60)
        client.incr(counter)
        return int(client.get(key))

    try:
        hubs = fan_out(task, lambda i: i, args.reps)
        count = int(client.get(counter))
        connections = sum(1 for c in client.client_list() if c.get("name") == name)
    finally:
        client.delete(counter, *(f"{name}:{i}" for i in range(TASKS)))
    return {"hubs": hubs, "count": count, "connections": connections}


# -- PostgreSQL and MariaDB --------------------------------------------------------------------


def scenario_psycopg2(args) -> dict:
    from psycopg2.pool import ThreadedConnectionPool

    if args.green:  # psycogreen's wait callback: queries wait on the calling hub
        import greenpool.monkey

        greenpool.monkey.patch_psycopg2()
    # minconn = maxconn: psycopg2 closes a returned connection beyond minconn.
    db = ThreadedConnectionPool(POOL_SIZE, POOL_SIZE, PG_DSN)
    # getconn() raises when all connections are out: thread-style apps bound it.
    slots = threading.BoundedSemaphore(POOL_SIZE)
    backends: set[int] = set()

    def task(i: int) -> int:
        with slots:
            conn = db.getconn()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT %s + 1, pg_backend_pid(), pg_sleep(0.001)", (i,))
                    value, pid, _ = cur.fetchone()
                conn.rollback()
            finally:
                db.putconn(conn)
        backends.add(pid)
        return value

    try:
        hubs = fan_out(task, lambda i: i + 1, args.reps)
    finally:
        db.closeall()
    return {"hubs": hubs, "connections": len(backends)}


def scenario_sqlalchemy(args) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test",
                           pool_size=POOL_SIZE, max_overflow=0, pool_timeout=10)
    backends: set[int] = set()
    query = text("SELECT :x + 1, pg_backend_pid(), pg_sleep(0.001)")

    def task(i: int) -> int:
        with engine.connect() as conn:
            value, pid, _ = conn.execute(query, {"x": i}).one()
        backends.add(pid)
        return value

    try:
        hubs = fan_out(task, lambda i: i + 1, args.reps)
    finally:
        engine.dispose()
    return {"hubs": hubs, "connections": len(backends)}


class LockedPool:
    """The pool a thread-style app writes by hand: a list of connections and a Condition."""

    def __init__(self, connect: Callable, size: int) -> None:
        self._free = [connect() for _ in range(size)]
        self._all = list(self._free)
        self._changed = threading.Condition(threading.Lock())

    @contextlib.contextmanager
    def connection(self):
        with self._changed:
            while not self._free:
                self._changed.wait()
            conn = self._free.pop()
        try:
            yield conn
        finally:
            with self._changed:
                self._free.append(conn)
                self._changed.notify()

    def close(self) -> None:
        for conn in self._all:
            conn.close()


def scenario_pymysql(args) -> dict:
    import pymysql

    db = LockedPool(lambda: pymysql.connect(host="127.0.0.1", port=3306, user="root",
                                            password="", database="test", connect_timeout=5,
                                            read_timeout=10, write_timeout=10, autocommit=True),
                    POOL_SIZE)
    ids: set[int] = set()

    def task(i: int) -> int:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT %s + 1, CONNECTION_ID(), SLEEP(0.001)", (i,))
            value, conn_id, _ = cur.fetchone()
        ids.add(conn_id)
        return value

    try:
        hubs = fan_out(task, lambda i: i + 1, args.reps)
    finally:
        db.close()
    return {"hubs": hubs, "connections": len(ids)}


# -- the stdlib's thread tools -----------------------------------------------------------------


def scenario_queue(args) -> dict:
    jobs: queue.Queue = queue.Queue(maxsize=32)  # bounded: the producers block too
    log: queue.Queue = queue.Queue()  # unbounded, as a request log to a writer thread
    consumed = collections.Counter()
    written: list[int] = []

    def consumer(n: int) -> None:
        while True:
            item = jobs.get()
            try:
                if item is None:
                    return
                i, reply = item
                consumed[n] += 1
                reply.put(i * 2)
            finally:
                jobs.task_done()

    def writer() -> None:
        while True:
            item = log.get()
            try:
                if item is None:
                    return
                written.append(item)
            finally:
                log.task_done()

    background = [threading.Thread(target=consumer, args=(n,), name=f"consumer-{n}", daemon=True)
                  for n in range(2)]
    background.append(threading.Thread(target=writer, name="writer", daemon=True))
    for t in background:
        t.start()

    def task(i: int) -> int:
        reply: queue.SimpleQueue = queue.SimpleQueue()
        jobs.put((i, reply), timeout=10)
        log.put(i)
        return reply.get(timeout=10)

    hubs = set()
    for _ in range(args.reps):
        hubs |= fan_out(task, lambda i: i * 2, 1)
        jobs.join()  # every item consumed and marked done
        log.join()
    for _ in range(2):
        jobs.put(None)
    log.put(None)
    jobs.join()
    log.join()
    for t in background:
        t.join(10)
    alive = [t.name for t in background if t.is_alive()]
    assert sorted(written) == sorted(list(range(TASKS)) * args.reps), "log items lost"
    return {"hubs": hubs, "consumed": sum(consumed.values()), "written": len(written),
            "alive": alive}


def scenario_queue_burst(args) -> dict:
    """16 threads put back-to-back on one unbounded queue, 2 threads drain it.

    Each put holds the queue's mutex for a moment; with 4 hub threads at it
    the mutex has waiters on other hubs at release, the path a lost wake-up
    would hang (every hub idle, the main thread's join() waiting forever).
    """
    burst = 20000
    items: queue.Queue = queue.Queue()
    received = collections.Counter()

    def drain() -> None:
        while True:
            item = items.get()
            try:
                if item is None:
                    return
                received[item] += 1
            finally:
                items.task_done()

    drainers = [threading.Thread(target=drain, name=f"drain-{n}") for n in range(2)]
    for t in drainers:
        t.start()

    def task(i: int) -> int:
        if i < WORKERS:  # one burst per worker, the rest of the round is quick
            for n in range(burst):
                items.put(i * burst + n)
        return i

    hubs = fan_out(task, lambda i: i, args.reps)
    for _ in drainers:
        items.put(None)
    for t in drainers:
        t.join()
    items.join()
    expected = collections.Counter(range(WORKERS * burst))
    expected = collections.Counter({k: v * args.reps for k, v in expected.items()})
    assert received == expected, "items lost or doubled"
    return {"hubs": hubs, "received": sum(received.values())}


def scenario_executor(args) -> dict:
    executor = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="app-executor")

    def square_slowly(i: int) -> int:
        time.sleep(0.001)
        return i * i

    def task(i: int) -> int:
        first = executor.submit(square_slowly, i)
        second = executor.submit(square_slowly, i + 1)
        done, _ = concurrent.futures.wait([first, second], timeout=10)
        assert len(done) == 2, "executor tasks did not finish within 10 s"
        return second.result() - first.result(timeout=10)

    try:
        hubs = fan_out(task, lambda i: 2 * i + 1, args.reps)
    finally:
        executor.shutdown(wait=True)
    return {"hubs": hubs}


LOG_LINE = re.compile(r"^(worker-\d+)\|task (\d+) (x{300}) end$")


def scenario_logging(args) -> dict:
    handle, path = tempfile.mkstemp(suffix=".log")
    os.close(handle)
    try:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(threadName)s|%(message)s"))
        log = logging.getLogger("legacy")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        filler = "x" * 300

        def task(i: int) -> int:
            log.info("task %d %s end", i, filler)
            return i

        hubs = fan_out(task, lambda i: i, args.reps)
        handler.close()
        with open(path) as f:
            lines = f.read().splitlines()
    finally:
        os.unlink(path)
    broken = [line for line in lines if not LOG_LINE.match(line)]
    assert not broken, f"{len(broken)} of {len(lines)} lines mangled, e.g. {broken[:2]}"
    per_task = collections.Counter(int(LOG_LINE.match(line).group(2)) for line in lines)
    assert per_task == {i: args.reps for i in range(TASKS)}, "lines missing or doubled"
    return {"hubs": hubs, "lines": len(lines)}


SCENARIOS = {
    name[len("scenario_"):]: fn for name, fn in globals().items() if name.startswith("scenario_")
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--url", default=None)
    parser.add_argument("--green", action="store_true", help="psycopg2: psycogreen wait callback")
    parser.add_argument("--psycopg2-blocking", action="store_true",
                        help="patch with psycopg2='blocking' (read before parsing, at import)")
    parser.add_argument("--gevent-only", action="store_true", help="control: gevent alone")
    parser.add_argument("--deadline", type=float, default=40.0,
                        help="dump every stack and exit 1 after this many seconds")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(args.deadline, exit=True)
    started = time.monotonic()
    report = SCENARIOS[args.scenario](args)
    report["hubs"] = sorted(report["hubs"], key=lambda h: -1 if h is None else h)
    report["seconds"] = round(time.monotonic() - started, 2)
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(report))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

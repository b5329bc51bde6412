"""Stress: 4 hubs, the main thread and 2 native threads share a Lock, Condition, Queue, Semaphore.

After ``greenpool.monkey.patch_all()``, in a child process, for 10 s
(``GREENPOOL_STRESS_SECONDS``): every participant (12 greenlets per hub)
loops over the four primitives. Each blocking call has a 10 s timeout (every
third try first a 0.2 ms one, to exercise waiters woken as they time out); every operation here is
short, so a call that times out is a lost wake-up. Invariants are checked as
it runs (one holder of the lock, at most 3 in the semaphore, every queued item
got once, the condition's token passed round the ring in order) and the worst
wait of each primitive is printed.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import run_python

SECONDS = float(os.environ.get("GREENPOOL_STRESS_SECONDS", "10"))

STRESS = """
import greenpool.monkey
greenpool.monkey.patch_all()
import json, queue, threading, time, traceback
import gevent
import greenpool
from gevent._hub_local import get_hub_if_exists
from gevent.monkey import get_original

SECONDS = __SECONDS__
PER_HUB, HUBS, NATIVE = 12, 4, 2
TIMEOUT = 10.0
native_sleep = get_original("time", "sleep")
native_start = get_original("_thread", "start_new_thread")
count_lock = get_original("_thread", "allocate_lock")()  # the test's own bookkeeping

lock, cond = threading.Lock(), threading.Condition()
items, sem = queue.Queue(maxsize=8), threading.Semaphore(3)
relay = queue.Queue()  # unbounded: the lock-free put/get
state = {"counter": 0, "lock_ops": 0, "inside_lock": 0, "inside_sem": 0, "turn": 0,
         "passes": 0, "stop": False, "put": 0, "got": 0, "relayed": 0}
stats = {"lost": [], "errors": [], "worst": {"lock": 0.0, "semaphore": 0.0, "queue": 0.0,
                                             "condition": 0.0}, "ops": 0}

def pause():
    # let others run: cooperative where a hub runs this thread, native elsewhere
    if get_hub_if_exists() is not None:
        gevent.sleep(0)
    else:
        native_sleep(0)

def timed(kind, fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args)
    finally:
        waited = time.perf_counter() - t0
        with count_lock:
            if waited > stats["worst"][kind]:
                stats["worst"][kind] = waited

def take(kind, acquire, n):
    # Every third try first with a timeout shorter than most waits: exercises the
    # woken-as-it-timed-out paths; then with the long one, whose expiry is a loss.
    if n % 3 == 0 and timed(kind, acquire, True, 0.0002):
        return True
    return timed(kind, acquire, True, TIMEOUT)

def get_one(q, n):
    # As take(): every third try first with the short timeout, then the long one.
    if n % 3 == 0:
        try:
            return timed("queue", q.get, True, 0.0002)
        except queue.Empty:
            pass
    return timed("queue", q.get, True, TIMEOUT)

def ring_turn(me, ring):
    with cond:
        ok = timed("condition", cond.wait_for,
                   lambda: state["turn"] == me or state["stop"], TIMEOUT)
        if not ok:
            stats["lost"].append(f"{me}: condition (turn {state['turn']})")
            return False
        if state["turn"] == me:
            state["turn"] = (me + 1) % ring
            state["passes"] += 1
            cond.notify_all()
    return True

def participant(me, ring):
    deadline = time.monotonic() + SECONDS
    n = 0
    try:
        while True:
            n += 1
            # Lock: exclusive, with a switch inside
            if not take("lock", lock.acquire, n):
                stats["lost"].append(f"{me}: lock"); return
            try:
                state["inside_lock"] += 1
                assert state["inside_lock"] == 1, "two holders of the lock"
                value = state["counter"]
                pause()
                state["counter"] = value + 1
                state["lock_ops"] += 1
                state["inside_lock"] -= 1
            finally:
                lock.release()
            # Semaphore(3)
            if not take("semaphore", sem.acquire, n):
                stats["lost"].append(f"{me}: semaphore"); return
            try:
                with count_lock:
                    state["inside_sem"] += 1
                    assert state["inside_sem"] <= 3, "more than 3 inside the semaphore"
                pause()
                with count_lock:
                    state["inside_sem"] -= 1
            finally:
                sem.release()
            # Queue(8): put one, get one (nobody can be left waiting for ever)
            try:
                timed("queue", items.put, (me, n), True, TIMEOUT)
                with count_lock:
                    state["put"] += 1
                got = get_one(items, n)
                with count_lock:
                    state["got"] += 1
                assert isinstance(got, tuple) and len(got) == 2
                # unbounded Queue: put one, get one, task_done (lock-free put/get)
                relay.put((me, n))
                get_one(relay, n)
                relay.task_done()
                with count_lock:
                    state["relayed"] += 1
            except (queue.Full, queue.Empty) as exc:
                stats["lost"].append(f"{me}: queue {type(exc).__name__}"); return
            # Condition: a token goes round the ring of participants, notify_all each
            # pass; every 4th round, so that the ring does not serialize the rest
            if n % 4 == 0 and not ring_turn(me, ring):
                return
            if time.monotonic() >= deadline:
                return
    except AssertionError as exc:
        stats["errors"].append(f"{me}: {exc}")
    except BaseException:
        stats["errors"].append(f"{me}: {traceback.format_exc()}")
    finally:
        with count_lock:
            stats["ops"] += n
        stop_ring()  # the first to leave ends the ring: nobody waits for its turn

def stop_ring():
    with cond:
        state["stop"] = True
        cond.notify_all()

ring = HUBS * PER_HUB + 1 + NATIVE
with greenpool.Pool(HUBS) as pool:
    tasks = [pool.spawn_on(i % HUBS, participant, i, ring) for i in range(HUBS * PER_HUB)]
    natives = []
    for k in range(NATIVE):
        done = threading.Event()
        def run(me=HUBS * PER_HUB + 1 + k, done=done):
            try:
                participant(me, ring)
            finally:
                done.set()
        native_start(run, ())
        natives.append(done)
    participant(HUBS * PER_HUB, ring)  # the main thread, on its own (foreign) gevent hub
    for t in tasks:
        t.result(60)
    for done in natives:
        assert done.wait(60), "a native participant never finished"
assert state["counter"] == state["lock_ops"], state
assert state["put"] == state["got"] and items.qsize() == 0, state
assert relay.qsize() == 0 and relay.unfinished_tasks == 0, (relay.qsize(), relay.unfinished_tasks)
relay.join()
print(json.dumps({"lost": stats["lost"], "errors": stats["errors"], "ops": stats["ops"],
                  "lock_ops": state["lock_ops"], "passes": state["passes"],
                  "queue_items": state["got"] + state["relayed"],
                  "worst_ms": {k: round(v * 1e3, 2) for k, v in stats["worst"].items()}}))
"""


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 180)
def test_lock_condition_queue_semaphore_from_4_hubs_main_and_native_threads(capsys, record):
    proc = run_python(STRESS.replace("__SECONDS__", repr(SECONDS)), timeout=SECONDS + 150)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    with capsys.disabled():
        print(
            f"\nsync stress {SECONDS:g} s: {result['ops']} rounds, {result['lock_ops']} lock "
            f"sections, {result['queue_items']} queue items, {result['passes']} condition "
            f"passes; lost wake-ups {len(result['lost'])}, assertion errors "
            f"{len(result['errors'])}; worst wait ms {result['worst_ms']}"
        )
    record(
        "patched Lock/Condition/Queue/Semaphore, 4 hubs + main + 2 native threads",
        f"{result['ops']} rounds in {SECONDS:g} s",
        len(result["lost"]) + len(result["errors"]),
        "worst wait ms " + ", ".join(f"{k} {v}" for k, v in result["worst_ms"].items()),
    )
    assert result["lost"] == [], result["lost"]
    assert result["errors"] == [], result["errors"]
    assert result["lock_ops"] > 0 and result["passes"] > 0

"""``os.fork()`` with a live pool: the child gets BrokenPool and a working default pool,
no future it holds stays pending, and the parent never notices.

Forking from one thread while hub threads run tasks can catch a hub at any
bytecode; the stress test forks many times under load with a short GIL switch
interval (so more of those moments are hit), and two deterministic tests pause a
hub at the two moments that once went wrong: a task taken from the mailbox but
not yet marked running (the child left its future pending), and a future's lock
held while it completes (the child deadlocked in the at-fork hook).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_python
from tests.reliability._support import REPO_ROOT, sized

FORK_SCRIPT = """
    import json, logging, os, sys, threading, time
    import gevent
    import greenpool
    from greenpool import BrokenPool
    from tests.reliability._children import wait_child

    FORKS = __FORKS__
    sys.setswitchinterval(1e-5)  # hand the GIL over often: forks land anywhere

    class DropForkedTaskErrors(logging.Filter):
        # The child fails the tasks the parent's hubs held with BrokenPool and
        # logs each one nobody retrieved: expected here, and noisy.
        def filter(self, record):
            return not (record.exc_info and record.exc_info[0] is BrokenPool)

    logging.getLogger("greenpool").addFilter(DropForkedTaskErrors())

    def work(i):
        gevent.sleep(0)
        return i

    pool = greenpool.Pool(4, name="forked")
    greenpool.spawn(work, 0).result(5)  # the default pool is live too
    stop = threading.Event()
    held = []
    done = [0]

    def load():
        n = 0
        while not stop.is_set():
            batch = [pool.spawn(work, n + k) for k in range(500)]
            batch.append(greenpool.spawn(work, -1))
            held[:] = batch
            for k, f in enumerate(batch[:-1]):
                assert f.result(30) == n + k
            assert batch[-1].result(30) == -1
            done[0] += len(batch)
            n += 500

    def child_check(before):
        try:
            pool.spawn(work, 1)
            return 10
        except BrokenPool:
            pass
        if any(not f.done() for f in before):
            return 11
        if greenpool.spawn(work, 42).result(5) != 42:
            return 12
        return 0

    loader = threading.Thread(target=load)
    loader.start()
    failures = {}
    for k in range(FORKS):
        time.sleep(0.001 * (k % 5))
        before = list(held)
        pid = os.fork()
        if pid == 0:
            try:
                code = child_check(before)
            except BaseException:
                code = 13
            os._exit(code)
        code = wait_child(pid, 10)
        if code != 0:
            failures[code] = failures.get(code, 0) + 1
    stop.set()
    loader.join(30)
    parent_ok = not loader.is_alive() and pool.spawn(work, 5).result(5) == 5
    pool.shutdown()
    print(json.dumps({"failures": failures, "parent_ok": parent_ok, "tasks": done[0]}))
"""

CHILD_CODES = (
    "10: pool.spawn did not raise BrokenPool, 11: a future the parent held stayed "
    "pending, 12: no fresh default pool, 13: the check raised, hung: deadlock in the child"
)


@sized(50, 500, fast_timeout=60, full_timeout=300)
def test_fork_under_load_breaks_the_pool_in_the_child_only(record, size):
    result = run_python(
        FORK_SCRIPT.replace("__FORKS__", str(size)), timeout=40 + size / 2, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    failures = outcome["failures"]
    record(
        "os.fork() under load",
        f"{size} forks of a 4-hub pool + default pool ({outcome['tasks']:,} tasks)",
        sum(failures.values()),
        f"failed children by exit code: {failures or 'none'}",
    )
    assert outcome["parent_ok"], "the parent's pool stopped serving"
    assert failures == {}, f"children failed: {failures} ({CHILD_CODES})"


FORK_RACE_SCRIPT = """
    import json, os, sys, threading, time
    import greenpool
    from tests.reliability._children import wait_child

    STEP = "__STEP__"
    pool = greenpool.Pool(1, name="race")
    paused, resume = threading.Event(), threading.Event()

    def target():
        return 7

    def pause():
        paused.set()
        resume.wait(10)  # a native wait: the hub thread sits here while the main thread forks

    def tracer(frame, event, arg):
        # Runs in the hub's thread: pause it at one exact point of target's task.
        if paused.is_set() or event != "call":
            return None
        task = frame.f_locals.get("self")
        if getattr(task, "_fn", None) is not target:
            return None
        name = frame.f_code.co_name
        if STEP == "start" and name == "set_running_or_notify_cancel":
            pause()  # taken from the mailbox, not yet running
        elif STEP == "complete" and name == "_complete":
            def in_complete(frame, event, arg):
                if event == "line" and not paused.is_set() and task._condition.locked():
                    pause()  # completing, with the future's lock held
                return in_complete
            return in_complete
        return None

    pool.spawn(sys.settrace, tracer).result(5)
    future = pool.spawn(target)
    assert paused.wait(5), "the hub never reached the pause point"
    pid = os.fork()
    if pid == 0:
        ok = future.done() and isinstance(future.exception(0), greenpool.BrokenPool)
        os._exit(0 if ok else 11)
    code = wait_child(pid, 5, 0.005)
    resume.set()
    parent = future.result(5)
    pool.shutdown()
    print(json.dumps({"child": code, "parent": parent}))
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "step, moment",
    [
        ("start", "a hub takes a task from its mailbox"),
        ("complete", "a hub completes a task (future locked)"),
    ],
)
def test_fork_at_the_worst_moment_fails_the_task_in_the_child_and_not_the_parent(
    record, step, moment
):
    result = run_python(FORK_RACE_SCRIPT.replace("__STEP__", step), timeout=25, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    record(
        f"os.fork() while {moment}",
        "1 fork, hub paused at that point",
        int(outcome["child"] != 0) + int(outcome["parent"] != 7),
        f"child exit {outcome['child']}",
    )
    assert outcome["parent"] == 7, "the parent's task did not finish"
    assert outcome["child"] == 0, f"child: {outcome['child']} ({CHILD_CODES})"

"""The optional C extension (greenpool/_speedups.c) and its pure-Python twins.

``make test`` installs with a C compiler, so the suite runs the C paths; a
silent fallback would hide a broken build, so it is a failure here. The
pure-Python twins (no compiler, or ``GREENPOOL_PURE_PYTHON=1``) must pass the
same tests: the files that pin those paths run again in a child with it set.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenpool import _compiled, _waiter
from greenpool.monkey import queue as _stdqueue
from greenpool.monkey.gevent_primitives import _parking
from greenpool.monkey.gevent_primitives import event as _gevent
from greenpool.monkey.gevent_primitives import greenlet as _greenlet
from greenpool.monkey.gevent_primitives import lock as _glock
from greenpool.monkey.gevent_primitives import queue as _gqueue

HERE = Path(__file__).parent
PURE = bool(os.environ.get("GREENPOOL_PURE_PYTHON"))


def test_the_extension_is_built_and_used_unless_pure_python_is_asked_for():
    python_put = _gqueue._QueueCore.__dict__["put"]
    if PURE:
        assert _compiled.speedups is None and _compiled.gevent_speedups is None
        assert _stdqueue._QueueCore is _stdqueue._PyQueueCore
        assert _gqueue.SimpleQueue.put is python_put
        assert type(_gqueue.PriorityQueue()._gp_heap_lock).__name__ == "lock"
        assert _compiled.waiter_speedups is None and _waiter.Entry.__module__ == _waiter.__name__
        assert _parking._Flag is _parking._PyFlag and _parking._Lot is _parking._PyLot
        assert _gevent.Event.__dict__["set"].__module__ == _gevent.__name__
        assert _greenlet.Greenlet.__dict__["join"].__module__ == _greenlet.__name__
        assert _glock.BoundedSemaphore.__dict__["release"].__module__ == _glock.__name__
        return
    from greenpool import _speedups, _speedups_gevent, _speedups_waiter

    assert _compiled.speedups is _speedups
    assert _compiled.gevent_speedups is _speedups_gevent
    assert _stdqueue.Queue.put is _speedups.QueueCore.put
    for cls in (_gqueue.SimpleQueue, _gqueue.Queue, _gqueue.PriorityQueue, _gqueue.LifoQueue):
        assert type(cls.__dict__.get("put", cls.put)).__name__ == "method_descriptor", cls
    assert type(_gqueue.PriorityQueue()._gp_heap_lock) is _speedups_gevent.Heap
    assert type(_gqueue.PriorityQueue(None, [2, 1])._gp_heap_lock) is _speedups_gevent.Heap
    assert _compiled.waiter_speedups is _speedups_waiter
    assert _waiter.Entry is _speedups_waiter.Entry
    assert _waiter.PoolHubWaiter is _speedups_waiter.PoolHubWaiter
    assert issubclass(_parking._Flag, _speedups_gevent.Flag)
    assert _parking._Lot is _speedups_gevent.Lot and _parking._lot_wait is _speedups_gevent.lot_wait
    assert _parking._make_flag is _speedups_gevent.make_flag
    assert type(_gevent.Event.__dict__["set"]).__name__ == "method_descriptor"
    for cls in (_glock.Semaphore, _glock.BoundedSemaphore):
        for name in ("release", "__enter__", "__exit__"):
            assert type(cls.__dict__[name]).__name__ == "method_descriptor", (cls, name)
    for name in ("rawlink", "join", "get"):
        assert type(_greenlet.Greenlet.__dict__[name]).__name__ == "method_descriptor", name
    assert type(_greenlet.Greenlet.__dict__["spawn"]).__name__ == "classmethod_descriptor"


@pytest.mark.timeout(240)
@pytest.mark.skipif(PURE, reason="this run is already pure Python")
def test_the_pure_python_twins_pass_the_same_tests():
    env = {**os.environ, "GREENPOOL_PURE_PYTHON": "1"}
    mine = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         str(HERE / "test_compiled.py"), str(HERE / "test_stdqueue.py"),
         str(HERE / "test_socket_follow.py"), str(HERE / "test_socket_recv.py"),
         str(HERE / "test_gevent_primitives.py"), str(HERE / "test_sync.py"),
         "-k", "queue or compiled or socket or sync or event or reentered"],
        env=env, capture_output=True, text=True, timeout=150, cwd=HERE.parent,
    )
    assert mine.returncode == 0, mine.stdout[-3000:] + mine.stderr[-3000:]
    assert "failed" not in mine.stdout and " passed" in mine.stdout
    stdlib = subprocess.run(
        [sys.executable, str(HERE / "stdlib" / "run_stdlib_tests.py"), "hubs",
         "PyQueueTest", "PyLifoQueueTest", "PyPriorityQueueTest", "PyFailingQueueTest"],
        env=env, capture_output=True, text=True, timeout=80, cwd=HERE.parent,
    )
    output = stdlib.stdout + stdlib.stderr
    assert stdlib.returncode == 0 and "failures=0 errors=0" in output, output[-3000:]

"""Child process: CPython's lock and queue tests after ``greenpool.monkey.patch_all()``.

``python tests/stdlib/run_stdlib_tests.py hubs|mixed [unittest args]``: the
tests' helper threads start round-robin on the 4 hubs of a pool (``mixed``:
with a native thread between hubs); the test bodies run in the main thread,
which after patching waits on a gevent hub greenpool does not own.
"""

from greenpool import monkey

monkey.patch_all()

import _thread  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import unittest  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import greenpool  # noqa: E402
from tests.stdlib import _lock_tests as lock_tests  # noqa: E402
from tests.stdlib import _queue_tests as queue_tests  # noqa: E402
from tests.stdlib import _support  # noqa: E402


class LockTests(lock_tests.LockTests):
    locktype = staticmethod(threading.Lock)


class ThreadAllocateLockTests(lock_tests.LockTests):
    locktype = staticmethod(_thread.allocate_lock)


class RLockTests(lock_tests.RLockTests):
    locktype = staticmethod(threading.RLock)


class EventTests(lock_tests.EventTests):
    # After greenpool.monkey.patch_all() threading.Event is gevent.event.Event's
    # cross-hub subclass, as gevent's own patch_all makes it gevent's Event.
    eventtype = staticmethod(threading.Event)

    def test_at_fork_reinit(self):
        self.skipTest("CPython's Event internals (_cond), which gevent's Event never had")

    def test_repr(self):
        self.skipTest("threading.Event's repr format, which gevent's Event never had")

    if os.environ.get("GREENPOOL_STDLIB_CONTROL") == "gevent":
        # The negative control: gevent's own (compiled, one-hub) Event fails these tests
        # across hubs. (After patch_all, gevent.event.Event is greenpool's subclass.)
        from gevent._gevent_cevent import Event as _OneHubEvent

        eventtype = staticmethod(_OneHubEvent)
    elif os.environ.get("GREENPOOL_STDLIB_CONTROL") == "gevent-patched":
        # gevent.event.Event after greenpool.monkey.patch_all(): the cross-hub subclass.
        import gevent.event

        eventtype = staticmethod(gevent.event.Event)


class ConditionAsRLockTests(lock_tests.RLockTests):
    # Condition uses an RLock by default and exports its API.
    locktype = staticmethod(threading.Condition)

    def test_recursion_count(self):
        self.skipTest("Condition does not expose _recursion_count (as in CPython's own suite)")


class ConditionTests(lock_tests.ConditionTests):
    condtype = staticmethod(threading.Condition)


class SemaphoreTests(lock_tests.SemaphoreTests):
    semtype = staticmethod(threading.Semaphore)


class BoundedSemaphoreTests(lock_tests.BoundedSemaphoreTests):
    semtype = staticmethod(threading.BoundedSemaphore)


class BarrierTests(lock_tests.BarrierTests):
    barriertype = staticmethod(threading.Barrier)


class SimpleQueueTests(queue_tests.BaseSimpleQueueTest, unittest.TestCase):
    queue = queue

    def setUp(self):
        self.type2test = queue.SimpleQueue
        super().setUp()

    def test_is_the_patched_one(self):
        import _queue

        self.assertIs(queue.SimpleQueue, _queue.SimpleQueue)
        self.assertIn("greenpool", queue.SimpleQueue.__module__)


class PlacementTests(unittest.TestCase):
    def test_helper_threads_run_on_every_hub_and_native_threads(self):
        places = []

        def where():
            hub = greenpool.current_hub()
            places.append("native" if hub is None else hub.index)

        with lock_tests.Bunch(where, 8):
            pass
        expected = {0, 1, 2, 3} | ({"native"} if sys.argv[1] == "mixed" else set())
        self.assertEqual(set(places), expected)


PyQueueTest = queue_tests.PyQueueTest
PyLifoQueueTest = queue_tests.PyLifoQueueTest
PyPriorityQueueTest = queue_tests.PyPriorityQueueTest
PyFailingQueueTest = queue_tests.PyFailingQueueTest
PySimpleQueueTest = queue_tests.PySimpleQueueTest


def main() -> None:
    mode = sys.argv[1]
    assert mode in ("hubs", "mixed"), mode
    assert "greenpool" in threading.Lock.__module__, threading.Lock
    assert "greenpool" in queue.Queue.__module__, queue.Queue
    pool = greenpool.Pool(4, name="stdlib")
    _support.configure(pool, mode)
    program = unittest.main(argv=[sys.argv[0], *sys.argv[2:]], exit=False, verbosity=1)
    pool.shutdown(wait=True, cancel_futures=True)
    result = program.result
    print(f"RESULT mode={mode} run={result.testsRun} failures={len(result.failures)} "
          f"errors={len(result.errors)} skipped={len(result.skipped)}", flush=True)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()

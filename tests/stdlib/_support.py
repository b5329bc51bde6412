"""Shims for the parts of CPython's ``test.support`` the vendored tests use, and the hub placement.

:func:`start_new_thread` is the point of the exercise: every helper thread of
the vendored tests starts here, round-robin over the places configured by
:func:`configure` (hubs of a pool, and native threads in ``mixed`` mode).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time as _time

import gevent
from gevent._hub_local import get_hub_if_exists
from gevent.monkey import get_original

from greenpool._native import allocate_lock

_native_sleep = get_original("time", "sleep")
_native_start = get_original("_thread", "start_new_thread")

_places: list = []
_counter = itertools.count()
_live_lock = allocate_lock()
_live = [0]


def configure(pool, mode: str) -> None:
    """``hubs``: round-robin over the pool's hubs; ``mixed``: a native thread after each hub."""
    _places.clear()
    for index in range(pool.size):
        _places.append((pool, index))
        if mode == "mixed":
            _places.append(None)


def sleep(seconds: float) -> None:
    """Cooperative where a gevent hub runs this thread, native in a plain thread."""
    if get_hub_if_exists() is not None:
        gevent.sleep(seconds)
    else:
        _native_sleep(seconds)


def start_new_thread(func, args=(), kwargs=None) -> None:
    """Run ``func`` on the next place: a pool hub (as a task) or a new native thread."""
    kwargs = kwargs or {}
    place = _places[next(_counter) % len(_places)]
    with _live_lock:
        _live[0] += 1

    def run():
        try:
            func(*args, **kwargs)
        except SystemExit:
            pass
        except BaseException:  # noqa: BLE001 - a helper thread reports and ends, as _thread does
            import traceback

            traceback.print_exc()
        finally:
            with _live_lock:
                _live[0] -= 1

    if place is None:
        _native_start(run, ())
    else:
        pool, index = place
        pool.spawn_on(index, run)


class Thread:
    """The slice of ``threading.Thread`` the vendored tests use, started via start_new_thread."""

    def __init__(self, target=None, args=(), kwargs=None, daemon=None) -> None:
        import threading

        self._target, self._args, self._kwargs = target, args, kwargs or {}
        self.daemon = daemon
        self._done = threading.Event()

    def run(self) -> None:
        if self._target is not None:
            self._target(*self._args, **self._kwargs)

    def _bootstrap(self) -> None:
        try:
            self.run()
        finally:
            self._done.set()

    def start(self) -> None:
        start_new_thread(self._bootstrap)

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()


class support:  # noqa: N801 - stands in for the module test.support
    SHORT_TIMEOUT = 10.0
    LONG_TIMEOUT = 30.0
    has_fork_support = hasattr(os, "fork") and sys.platform != "emscripten"

    @staticmethod
    def sleeping_retry(timeout, err_msg=None, /, *, init_delay=0.010, max_delay=1.0, error=True):
        delay = init_delay
        deadline = _time.monotonic() + timeout
        while True:
            yield
            if _time.monotonic() >= deadline:
                if error:
                    raise AssertionError(err_msg or f"timeout ({timeout} seconds)")
                return
            sleep(delay)
            delay = min(delay * 2, max_delay)

    @staticmethod
    def reap_children() -> None:
        pass

    @staticmethod
    def gc_collect() -> None:
        import gc

        gc.collect()
        gc.collect()


class threading_helper:  # noqa: N801 - stands in for test.support.threading_helper
    @staticmethod
    def threading_setup():
        return ()

    @staticmethod
    def threading_cleanup(*_args) -> None:
        pass

    @staticmethod
    @contextlib.contextmanager
    def wait_threads_exit(timeout=None):
        """Wait (bounded) until the helper threads started inside have all ended."""
        with _live_lock:
            before = _live[0]
        yield
        for _ in support.sleeping_retry(timeout or support.SHORT_TIMEOUT, "helpers still alive"):
            if _live[0] <= before:
                break

    @staticmethod
    def join_thread(thread, timeout=None) -> None:
        thread.join(timeout or support.SHORT_TIMEOUT)
        if thread.is_alive():
            raise AssertionError(f"thread {thread} still alive after {timeout}s")

    @staticmethod
    @contextlib.contextmanager
    def start_threads(threads):
        threads = list(threads)
        for t in threads:
            t.start()
        try:
            yield
        finally:
            for t in threads:
                threading_helper.join_thread(t)

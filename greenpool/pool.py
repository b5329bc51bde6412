"""The Pool: N hubs on N native threads, a dispatcher, and an orderly shutdown.

A Pool is a ``concurrent.futures.Executor``. Tasks go to a hub chosen by the
dispatch strategy (see :mod:`greenpool.dispatch`) and stay on it for life.

Shutdown is pool-wide, never per hub: while any task runs anywhere it may still
spawn onto any hub, so hubs stop only once the whole pool is idle. The states:

``running`` -> (``shutdown()``) ``draining``: spawns from outside the pool
raise, spawns from pool greenlets (children) are still accepted -> (every hub
idle) ``terminating``: every spawn raises, hubs close their mailboxes and run
their loops until idle -> ``terminated``: all hub threads have ended.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from contextvars import copy_context
from typing import Any, Literal, overload

from greenlet import getcurrent

from greenpool import rebind
from greenpool._native import allocate_lock, get_ident
from greenpool._waiter import PoolHubWaiter, Signal, make_waiter
from greenpool.compat import RoomNotifier
from greenpool.dispatch import STRATEGIES
from greenpool.errors import BrokenPool, PoolFull, check_callable
from greenpool.future import FINISHED, Future
from greenpool.hub import Hub, current_hub
from greenpool.monitor import BlockedHubMonitor, HubStats, measure

RUNNING, DRAINING, TERMINATING, TERMINATED, BROKEN = (
    "running", "draining", "terminating", "terminated", "broken",
)
FULL_POLICIES = ("block", "raise")

_live_pools: weakref.WeakSet = weakref.WeakSet()

#: Called with the pool's size as each Pool starts, before its hub threads;
#: greenpool.monkey's guard adds its half-patched warning here at import, so
#: that this module need not know about monkey patching.
_start_checks: list[Callable[[int], None]] = []


def add_start_check(check: Callable[[int], None]) -> None:
    """Call ``check(size)`` as each :class:`Pool` starts, before its hubs (added once)."""
    if check not in _start_checks:
        _start_checks.append(check)


def _check_size(size: object) -> int:
    if size is None:
        return os.cpu_count() or 1
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"Pool size must be an int (number of hubs), got {type(size).__name__}")
    if size < 1:
        raise ValueError(f"Pool size must be at least 1, got {size}")
    return size


class Pool(Executor):
    """A pool of gevent hubs, one per native thread.

    :param size: number of hubs (threads); defaults to the CPU count.
    :param name: prefix of hub names (``name-0``, ``name-1``...).
    :param dispatch: ``"round_robin"`` (default), ``"least_loaded"`` or
        ``"two_choices"``: which hub gets each :meth:`spawn`.
    :param on_start: ``on_start(hub)`` runs in each hub's thread as it starts;
        if it raises, the pool is not created and ``Pool()`` raises that error.
    :param on_stop: ``on_stop(hub)`` runs in each hub's thread as it ends.
    :param max_pending: bound on *queued* (not yet started) tasks per hub;
        ``None`` (default) means unbounded. See :meth:`full`.
    :param full_policy: when every hub is at ``max_pending``, ``"block"``
        (default) makes :meth:`spawn` wait for room (cooperatively inside a
        pool greenlet) and ``"raise"`` makes it raise :class:`PoolFull`.
    :param blocked_hub_threshold: seconds; when set, a monitor thread logs one
        warning (logger ``greenpool.monitor``) with the offending stack whenever
        a hub stays out of its event loop longer than this. Off by default.
    :param cpu_affinity: CPUs the hub threads may run on (Linux), e.g. ``{0}``.
        Hubs running pure-Python handlers on *different* cores hand the GIL
        to each other on every socket call; measured on 2 cores, 2 hubs made
        0.77x the requests/s of one hub, and 0.99x when pinned to one core.
        Leave it unset when the hubs overlap CPU-heavy GIL-releasing calls
        (TLS, compression), which need the other cores.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        name: str = "greenpool",
        dispatch: str = "round_robin",
        on_start: Callable[[Hub], Any] | None = None,
        on_stop: Callable[[Hub], Any] | None = None,
        max_pending: int | None = None,
        full_policy: str = "block",
        blocked_hub_threshold: float | None = None,
        cpu_affinity: Iterable[int] | None = None,
    ) -> None:
        size = _check_size(size)
        if dispatch not in STRATEGIES:
            raise ValueError(
                f"unknown dispatch strategy {dispatch!r}; choose one of {sorted(STRATEGIES)}"
            )
        for hook_name, hook in (("on_start", on_start), ("on_stop", on_stop)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{hook_name} must be callable(hub) or None")
        if max_pending is not None:
            if isinstance(max_pending, bool) or not isinstance(max_pending, int):
                raise TypeError("max_pending must be an int or None")
            if max_pending < 1:
                raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if full_policy not in FULL_POLICIES:
            raise ValueError(f"full_policy must be one of {FULL_POLICIES}, got {full_policy!r}")
        if not isinstance(name, str):
            raise TypeError("name must be a str")
        if blocked_hub_threshold is not None:
            if isinstance(blocked_hub_threshold, bool) or not isinstance(
                blocked_hub_threshold, (int, float)
            ):
                raise TypeError("blocked_hub_threshold must be a number of seconds or None")
            if blocked_hub_threshold <= 0:
                raise ValueError("blocked_hub_threshold must be > 0 seconds")
        self.name = name
        self.dispatch = dispatch
        self.max_pending = max_pending
        self.full_policy = full_policy
        self._lock = allocate_lock()
        self._spawned = 0
        self._state = RUNNING
        self._draining = False
        self._cancelling = False
        self._abandon_strays = False
        self._idle_waiters: list = []
        self._space_waiters: list = []
        self._toplevel: set = set()
        #: gevent servers given ``spawn=pool`` rawlink here to resume accepting.
        self._semaphore = RoomNotifier(self)
        if cpu_affinity is not None:
            on_start = _chain(_pin_to(_check_cpus(cpu_affinity)), on_start)
        _prepare_for_patched_threads()
        for check in _start_checks:
            check(size)
        hubs: list[Hub] = []
        self._monitor = None
        if blocked_hub_threshold is not None:
            self._monitor = BlockedHubMonitor(hubs, blocked_hub_threshold)
            on_start = _chain(self._monitor.install, on_start)
        try:
            for index in range(size):
                hub = Hub(self, index, f"{name}-{index}")
                hubs.append(hub)
                # One at a time: concurrent first-hub creation can deadlock
                # on patched import locks (see gevent-threads-notes).
                hub.start(on_start, on_stop)
        except BaseException:
            self._hubs = tuple(h for h in hubs if h.is_alive())
            self.shutdown(wait=True)
            raise
        self._hubs = tuple(hubs)
        self._choose = STRATEGIES[dispatch](self._hubs)
        if self._monitor is not None:
            self._monitor.start()
        _live_pools.add(self)

    def __repr__(self) -> str:
        return (
            f"<greenpool.Pool {self.name!r} size={len(self._hubs)} "
            f"state={self._state} live={sum(h.live for h in self._hubs)}>"
        )

    # -- introspection ---------------------------------------------------

    @property
    def hubs(self) -> tuple[Hub, ...]:
        """The pool's :class:`Hub` objects, index order."""
        return self._hubs

    @property
    def size(self) -> int:
        return len(self._hubs)

    def __len__(self) -> int:
        """Live tasks (queued or running) across all hubs, as ``gevent.pool.Pool`` counts."""
        return sum(h.live for h in self._hubs)

    def full(self) -> bool:
        """True when every hub holds ``max_pending`` queued tasks (never without a bound)."""
        bound = self.max_pending
        return bound is not None and all(len(h._mailbox) >= bound for h in self._hubs)

    def stats(self, timeout: float = 1.0) -> list[HubStats]:
        """Per hub: live/queued/running tasks, tasks done and loop lag (see :class:`HubStats`).

        The lag is measured by a callback posted to every hub at once; a hub
        that does not run it within ``timeout`` seconds reports ``None``.
        """
        return measure(self._hubs, timeout)

    def _inside(self) -> bool:
        hub = current_hub()
        return hub is not None and hub.pool is self

    # -- spawning ----------------------------------------------------------

    def spawn(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` as a greenlet on the hub the dispatcher picks.

        With ``max_pending`` set this is where backpressure applies (explicit
        placement with :meth:`spawn_on` / :meth:`broadcast` and pinned
        ``greenpool.spawn`` children are not bounded: a hub waiting for room
        in its own queue would wait for itself).
        """
        check_callable(fn, "spawn")
        if self.max_pending is None:
            return self._spawn_on(self._choose(), fn, args, kwargs)
        while True:
            task = self._spawn_on(self._pick_hub(), fn, args, kwargs, bounded=True)
            if task is not None:
                return task

    submit = spawn

    def spawn_on(self, index: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn`` on hub number ``index`` (0 <= index < size)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"hub index must be an int, got {type(index).__name__}")
        if not -len(self._hubs) <= index < len(self._hubs):
            raise IndexError(
                f"hub index {index} out of range for a pool of {len(self._hubs)} hubs "
                f"(0..{len(self._hubs) - 1})"
            )
        check_callable(fn, "spawn_on")
        return self._spawn_on(self._hubs[index], fn, args, kwargs)

    def broadcast(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> list[Future]:
        """Run ``fn`` once on every hub (per-hub servers, warm-up); one future per hub."""
        check_callable(fn, "broadcast")
        return [self._spawn_on(hub, fn, args, kwargs) for hub in self._hubs]

    @overload
    def _spawn_on(
        self, hub: Hub, fn: Callable, args: tuple, kwargs: dict, bounded: Literal[False] = ...
    ) -> Future: ...

    @overload
    def _spawn_on(
        self, hub: Hub, fn: Callable, args: tuple, kwargs: dict, bounded: bool
    ) -> Future | None: ...

    def _spawn_on(
        self, hub: Hub, fn: Callable, args: tuple, kwargs: dict, bounded: bool = False
    ) -> Future | None:
        """Queue a task on ``hub``; None if ``bounded`` and the hub filled up meanwhile."""
        task = Future()
        task._fn = fn
        task._args = args
        task._kwargs = kwargs
        task._context = copy_context()
        task._hub = hub
        if (args or kwargs) and rebind.needs_rebind(args, kwargs, hub):
            task._fn = rebind.Rebound(fn)
        if hub.thread_ident == get_ident():
            # Same thread: nothing can race us; children of running tasks are
            # accepted until the whole pool is idle.
            if self._state is BROKEN:
                raise BrokenPool(_FORK_MESSAGE)
            if not hub._accepting or self._state in (TERMINATING, TERMINATED):
                raise RuntimeError(f"cannot spawn on {self!r}: it has shut down")
            if bounded and len(hub._mailbox) >= self.max_pending:  # type: ignore[operator]
                return None
            if self._cancelling:
                task.cancel()
                return task
            hub._submit(task)
            return task
        with self._lock:
            state = self._state
            # _inside() only when it matters: it is a lookup on every spawn otherwise.
            if state is not RUNNING and not (state is DRAINING and self._inside()):
                if state is BROKEN:
                    raise BrokenPool(_FORK_MESSAGE)
                raise RuntimeError(f"cannot spawn on {self!r}: it has been shut down")
            if bounded and len(hub._mailbox) >= self.max_pending:  # type: ignore[operator]
                return None  # another spawner took the last slot: pick again
            if self._cancelling:
                task.cancel()
                return task
            hub._submit(task)
        return task

    def _pick_hub(self) -> Hub:
        """The dispatcher's choice, or any hub with room; waits or raises when all are full."""
        bound: int = self.max_pending  # type: ignore[assignment]  # set: only bounded spawns pick
        hub = self._choose()
        if len(hub._mailbox) < bound:
            return hub
        while True:
            for hub in self._hubs:
                if len(hub._mailbox) < bound:
                    return hub
            if self.full_policy == "raise":
                raise PoolFull(
                    f"all {len(self._hubs)} hubs hold max_pending={bound} queued tasks; "
                    "retry later, raise max_pending, or use full_policy='block'"
                )
            state = self._state
            if state is not RUNNING and not (state is DRAINING and self._inside()):
                raise RuntimeError(f"cannot spawn on {self!r}: it has been shut down")
            waiter = make_waiter()
            self._add_space_waiter(waiter)
            if self.full():
                waiter.wait()
            self._forget(self._space_waiters, waiter)

    def _room_made(self) -> None:
        """Called by a hub that popped a task while spawners wait for room."""
        with self._lock:
            waiters, self._space_waiters = self._space_waiters, []
        for waiter in waiters:
            waiter.wake()

    def _add_space_waiter(self, waiter) -> None:
        with self._lock:
            self._space_waiters.append(waiter)

    def _remove_space_waiters(self, predicate) -> list:
        with self._lock:
            removed = [w for w in self._space_waiters if predicate(w)]
            self._space_waiters = [w for w in self._space_waiters if not predicate(w)]
        return removed

    def _forget(self, waiters: list, waiter) -> None:
        with self._lock:
            if waiter in waiters:
                waiters.remove(waiter)

    # -- waiting -----------------------------------------------------------

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no task the pool runs is queued or alive; False on timeout.

        Children spawned by tasks count; ``gevent.spawn``'d greenlets do not
        (``shutdown`` waits for those too, as it runs each loop until idle).
        From inside the pool it needs a ``timeout`` and waits for every task
        but the caller's own (what a gevent server's ``stop()`` does with its
        spawner); without one it would wait for itself, and raises.
        """
        mine = 0
        if self._inside():
            if timeout is None:
                raise RuntimeError(
                    "Pool.join() from inside the pool would wait for itself; give a timeout"
                )
            mine = 1 if self._current_task() is not None else 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waiter = make_waiter()
            with self._lock:
                self._idle_waiters.append(waiter)
            if self._idle(mine):
                self._forget(self._idle_waiters, waiter)
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._forget(self._idle_waiters, waiter)
                return False
            waiter.wait(remaining)
            self._forget(self._idle_waiters, waiter)

    def _idle(self, allowed: int = 0) -> bool:
        """At most ``allowed`` tasks live anywhere, read as one consistent snapshot.

        Hubs are read one after another, so a task could spawn onto a hub
        already read and end before its own is read. Every spawn bumps
        ``_spawned`` first: if it did not move during the scan, nothing did.
        """
        before = self._spawned
        live = sum(h.live for h in self._hubs)
        return live <= allowed and self._spawned == before

    def _current_task(self) -> Future | None:
        hub = current_hub()
        me = getcurrent()
        for task in list(hub._running):  # type: ignore[union-attr]  # called inside the pool
            if task._greenlet is me:
                return task
        return None

    def _hub_idle(self, hub: Hub) -> None:
        """Called by a hub thread when its last task ends."""
        if self._idle_waiters:
            with self._lock:
                waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.wake()
        if self._draining:
            self._terminate_if_idle()

    def _terminate_if_idle(self) -> None:
        with self._lock:
            if self._state is not DRAINING or not self._idle():
                return
            self._state = TERMINATING
        for hub in self._hubs:
            hub.call_soon_threadsafe(hub._finish)

    # -- shutting down -----------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 strays: str = "kill") -> None:
        """Stop accepting tasks from outside the pool and stop the hubs once idle.

        With ``wait`` every task already spawned (and every child it spawns)
        runs to the end and each hub's loop runs until idle, then the threads
        end. With ``cancel_futures`` queued and running tasks are cancelled
        (running greenlets get ``GreenletExit``). Every future ends done.
        Calling it again is harmless; ``wait=True`` from inside the pool raises.

        ``strays`` says what becomes of greenlets the pool did not start
        (``gevent.spawn``'d ones, patched "threads") once a hub's tasks are
        done. ``"kill"``: a cancelling shutdown gives each ``GreenletExit``
        (their ``finally`` blocks run), other shutdowns wait for them.
        ``"abandon"``: each hub stops at once and leaves them suspended, as a
        process's exit leaves daemon threads and gevent's own hub leaves its
        greenlets: for a shutdown on the way out of the process, where a
        library's background loop (python-engineio's service task catches
        everything, ``GreenletExit`` too, and logs it) must not be woken.
        """
        if strays not in ("kill", "abandon"):
            raise ValueError(f"strays must be 'kill' or 'abandon', got {strays!r}")
        if wait and self._inside():
            raise RuntimeError(
                "shutdown(wait=True) from inside the pool would wait for itself; "
                "use shutdown(wait=False)"
            )
        abandon_now = strays == "abandon" and not self._abandon_strays
        if abandon_now:
            self._abandon_strays = True
        with self._lock:
            if self._state is RUNNING:
                self._state = DRAINING
                self._draining = True
            if cancel_futures and not self._cancelling:
                self._cancelling = True
                cancel = True
            else:
                cancel = False
        for hub in getattr(self, "_hubs", ()):
            if cancel:
                hub.call_soon_threadsafe(hub._cancel_all)
            if abandon_now:  # a hub an earlier shutdown retired: only strays keep it
                hub.call_soon_threadsafe(hub._abandon_if_retired)
        self._room_made()  # blocked spawners: they now raise instead of waiting
        self._terminate_if_idle()
        if wait:
            for hub in self._hubs:
                hub.wait_stopped()
            if self._monitor is not None:
                self._monitor.stop()
            with self._lock:
                if self._state is TERMINATING:
                    self._state = TERMINATED
            _live_pools.discard(self)

    def kill(self, block: bool = True, timeout: float | None = None) -> None:
        """Cancel every queued and running task (``gevent.pool.Pool.kill``'s contract).

        The pool keeps running and accepts new tasks; with ``block`` wait up to
        ``timeout`` for the killed greenlets to finish their cleanup.
        """
        for hub in self._hubs:
            hub.call_soon_threadsafe(hub._cancel_all)
        if block and not self._inside():
            self.join(timeout)

    def _break_after_fork(self) -> None:
        """In a forked child: the hub threads are gone; fail what they held."""
        self._state = BROKEN
        self._lock = allocate_lock()
        error = BrokenPool(_FORK_MESSAGE)
        here = get_ident()
        for hub in self._hubs:
            hub._wakeup_lock = allocate_lock()
            if hub.thread_ident == here:
                # Forked from inside one of this pool's tasks: this thread is
                # that hub's and lives on; stop its wake-up so its loop can end.
                hub._accepting = False
                if hub._wakeup is not None:
                    hub._wakeup.stop()
            hub._wakeup = None
            pending = list(hub._mailbox) + list(hub._running)
            hub._mailbox.clear()
            hub._running.clear()
            hub._nrunning = 0
            for task in pending:
                _fail_after_fork(task, error, here)
            # A fresh latch: the old one's native lock may be held by a thread
            # that is gone in the child (its set() would wait for good).
            stopped = hub._stopped = Signal()
            stopped.set()


def _fail_after_fork(task: Future, error: BaseException, here: int) -> None:
    """In a forked child: fail a task whose hub is gone, waking only this thread.

    Only this thread survives the fork (and, if it is a hub's, that hub's
    greenlets). Every other waiter, ``wait()``er and done callback belongs to
    a thread that is gone and may need a lock that thread held at the fork:
    running them would wait for good, so they are dropped with the task.
    """
    task._condition = allocate_lock()  # may have been held by a gone thread
    task._waiters = []
    task._done_callbacks = []
    wakers = task._wakers
    if wakers:
        task._wakers = [
            w for w in wakers
            if isinstance(w, PoolHubWaiter) and w._hub.thread_ident == here
        ]
    task._complete(FINISHED, None, error)


def live_pools() -> list[Pool]:
    """Pools (the default pool included) with at least one hub thread still running."""
    return [pool for pool in list(_live_pools) if any(h.is_alive() for h in pool._hubs)]


_FORK_MESSAGE = (
    "this pool's hub threads did not survive os.fork(); create a new Pool in the child "
    "(greenpool.spawn() makes a new default pool there by itself)"
)


def _check_cpus(cpus: Any) -> frozenset[int]:
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("cpu_affinity needs os.sched_setaffinity (Linux)")
    try:
        chosen = frozenset(cpus)
    except TypeError:
        raise TypeError("cpu_affinity must be an iterable of CPU numbers, e.g. {0}") from None
    if not chosen or not all(isinstance(c, int) and not isinstance(c, bool) for c in chosen):
        raise ValueError(f"cpu_affinity must be a non-empty set of CPU numbers, got {cpus!r}")
    allowed = os.sched_getaffinity(0)
    if not chosen <= allowed:
        raise ValueError(
            f"cpu_affinity {sorted(chosen)} is not within the CPUs this process may use "
            f"{sorted(allowed)}"
        )
    return chosen


def _pin_to(cpus: frozenset[int]) -> Callable[[Hub], None]:
    def pin(hub: Hub) -> None:
        os.sched_setaffinity(0, cpus)  # 0: the calling thread, i.e. this hub's

    return pin


def _chain(first: Callable, then: Callable | None) -> Callable:
    """``on_start`` hooks: greenpool's own first, then the user's."""

    def both(hub: Hub) -> None:
        first(hub)
        if then is not None:
            then(hub)

    return both


def _prepare_for_patched_threads() -> None:
    """Under monkey patching, create this thread's hub before any hub thread starts.

    Several threads creating their first hub at once deadlocked on patched
    import locks in 3 of 3 tries; a main hub made first avoided it.
    """
    from gevent import monkey

    if monkey.is_module_patched("threading"):
        import gevent

        gevent.get_hub()


def _shutdown_all_at_exit() -> None:
    for pool in list(_live_pools):
        if pool._state is RUNNING or pool._state is DRAINING:
            pool.shutdown(wait=False, cancel_futures=True)
    for pool in list(_live_pools):
        for hub in pool._hubs:
            hub.wait_stopped(5.0)


def _after_fork_in_child() -> None:
    for pool in list(_live_pools):
        pool._break_after_fork()
    _live_pools.clear()


atexit.register(_shutdown_all_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)

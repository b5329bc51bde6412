"""Locks, events and queues that greenlets on different hubs, and plain threads, can share.

Each primitive keeps its state under a native (never patched) lock and parks
a caller through :func:`greenpool._waiter.make_waiter`: a greenlet on a pool
hub waits cooperatively while its hub keeps serving, a greenlet on another
gevent hub (the main thread after ``patch_all()``) parks on an async watcher,
and a plain thread blocks natively, as its stdlib twin would. A waker updates
the state under that lock, pops the waiter(s) it wakes, releases the lock and
only then wakes them, from any thread. Nothing polls.

**Lock policy** (:class:`Lock`, and :class:`RLock` on it): Go's
``sync.Mutex``, adapted to hubs that may be stuck in a blocking C call. A
release frees the lock and wakes the longest waiter of each hub; they compete
with newcomers, so a lock released while one waiter's hub runs a 2 ms query is
taken by a hub that can run (``benchmarks/sync.py``: 16 workers on 4 hubs
sharing a connection pool's lock: 0.83x the throughput of one connection each,
against 0.27x for a FIFO hand-off and 0.61x for gevent's lock). A waiter that
has waited over 1 ms and lost turns on starvation mode: newcomers queue
behind, and the lock passes only to the waiters a release wakes, until the
queue drains. Uncontended, ``acquire()``/``release()`` is one C call each
(0.85x the time of gevent's patched lock).

**Hand-offs** (:class:`Semaphore`, :class:`BoundedSemaphore`, :class:`Queue`):
``release()`` gives the permit to the longest waiter, ``put()`` gives the item
to the longest getter (FIFO, trio's choice). A woken waiter never finds that
somebody else took what it was woken for, and a waiter that times out or is
killed (``GreenletExit``) while being handed something passes it on: the
permit to the next waiter, the item back to the head of the queue. The price
is one wake-up per contended hand-off, and the convoy above if a waiter's hub
is stuck.

**What is safe across hubs** (gevent 26.9, greenlet 3.5, CPython 3.11,
Linux/libev; pinned by ``tests/test_sync.py``, ``tests/test_monkey_sync.py``,
``tests/stdlib`` and ``tests/reliability/test_sync_stress.py``):

+-----------------------------+---------------------------------+----------------------------------+
| primitive                   | after                           | after                            |
|                             | ``gevent.monkey.patch_all()``   | ``greenpool.monkey.patch_all()`` |
|                             | alone                           |                                  |
+=============================+=================================+==================================+
| ``threading.Lock``,         | gevent's cross-thread           | :class:`Lock` (policy above);    |
| ``_thread.allocate_lock`` / | semaphore: hand-offs work, but  | CPython's ``lock_tests`` pass    |
| ``LockType``                | under contention a wake-up is   | with their threads on 4 hubs and |
|                             | lost or gevent's ``assert       | native threads                   |
|                             | self.counter > 0`` fails (the   |                                  |
|                             | stress test: 10 lost in 3 s; 48 |                                  |
|                             | greenlets on 4 hubs: the        |                                  |
|                             | AssertionError)                 |                                  |
+-----------------------------+---------------------------------+----------------------------------+
| ``threading.RLock``         | ``gevent.lock.RLock`` on that   | :class:`RLock` (owned by a       |
|                             | semaphore: the same caveats     | greenlet)                        |
+-----------------------------+---------------------------------+----------------------------------+
| ``threading.Condition``,    | the stdlib's classes on         | the stdlib's own classes on      |
| ``Semaphore``,              | gevent's locks: lose wake-ups   | :class:`Lock`: exact stdlib      |
| ``BoundedSemaphore``,       | under contention (one Semaphore | semantics by construction        |
| ``Barrier``                 | shared by 100 greenlets on 4    | (``lock_tests``)                 |
|                             | hubs: about 4 runs in 10)       |                                  |
+-----------------------------+---------------------------------+----------------------------------+
| ``threading.Event`` (and    | ``gevent.event.Event``: the     | ``gevent.event.Event``'s         |
| ``Timer``, which waits on   | first hub to wait owns it;      | cross-hub subclass (as gevent    |
| one)                        | ``wait()`` on another raises    | patches it): any hubs and        |
|                             | ``InvalidThreadUseError``       | threads; CPython's EventTests    |
+-----------------------------+---------------------------------+----------------------------------+
| ``queue.Queue``,            | ``gevent.queue``'s: a ``put``   | the stdlib's classes on          |
| ``LifoQueue``,              | from another hub wakes nobody   | :class:`Lock`, with fast         |
| ``PriorityQueue``           | (the getter times out, the item | uncontended ``put``/``get``;     |
|                             | stays queued)                   | ``test_queue`` passes            |
+-----------------------------+---------------------------------+----------------------------------+
| ``queue.SimpleQueue``,      | gevent's ``SimpleQueue``: as    | greenpool's (unbounded; woken    |
| ``_queue.SimpleQueue``      | ``gevent.queue``                | getters compete, like the lock)  |
+-----------------------------+---------------------------------+----------------------------------+
| ``concurrent.futures``,     | built on the above: they share  | work across hubs, the main       |
| ``logging``'s handler       | its caveats                     | thread and native threads        |
| locks, ``Thread.join``      |                                 |                                  |
+-----------------------------+---------------------------------+----------------------------------+
| ``gevent.queue``,           | as above: unsafe, or one hub    | cross-hub subclasses (from       |
| ``gevent.event``,           |                                 | ``monkey.gevent_primitives``);   |
| ``gevent.lock`` classes     |                                 | objects made before patching     |
| used by name                |                                 | stay one-hub                     |
+-----------------------------+---------------------------------+----------------------------------+
| Greenlet,                   | owner hub only                  | owner hub only; sockets follow   |
| ``gevent.pool.Pool``,       |                                 | the greenlet that uses them      |
| servers,                    |                                 | (``greenpool.monkey.sockets``)   |
| ``hub.threadpool``, sockets |                                 |                                  |
+-----------------------------+---------------------------------+----------------------------------+

This module's classes work the same with or without patching. After
``greenpool.monkey.patch_all()`` the stdlib's names mostly *are* them (the
lock) or are built on them; :class:`Condition` and :class:`Queue` here differ
from the stdlib's only in passing a notification or an item on when its
waiter dies, and ``Queue.join(timeout)``.
"""

from __future__ import annotations

import time
from _thread import TIMEOUT_MAX
from collections import deque
from collections.abc import Callable
from itertools import islice
from queue import Empty, Full
from typing import Any

from greenlet import getcurrent

from greenpool._native import allocate_lock, get_ident
from greenpool._waiter import Entry, remove_entry

__all__ = [
    "BoundedSemaphore",
    "Condition",
    "Empty",
    "Event",
    "Full",
    "Lock",
    "Queue",
    "RLock",
    "Semaphore",
]


def _owner():
    """Who owns an RLock taken now: the greenlet, or the native thread.

    (As :func:`greenpool._waiter.current_greenlet`, which says None instead.)
    """
    try:
        return getcurrent()
    except RuntimeError:
        return get_ident()


def _wait_registered(mutex, waiters, entry: Entry, timeout: float | None) -> bool:
    """Wait for a broadcast wake-up (Event.set, Queue.join): True unless timed out.

    Nothing is handed over, so a waiter that is killed just leaves the list.
    """
    woken = False
    try:
        woken = entry.waiter.wait(timeout)
    finally:
        if not woken:
            with mutex:
                woken = not remove_entry(waiters, entry)  # popped: woken as it timed out
    return woken


def _lock_timeout(blocking: bool, timeout: float) -> float | None:
    """Check ``threading.Lock.acquire`` arguments; None means wait forever."""
    if not blocking:
        if timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return None
    if timeout == -1:
        return None
    if timeout < 0:
        raise ValueError("timeout value must be positive")
    return timeout


def _queue_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


#: What a lock or semaphore nobody ever waited on has for its queue: an empty
#: deque costs 624 bytes, and objects that are never contended (most of an
#: app's: a WebSocket connection's events and conditions) would each carry one.
_NO_WAITERS: Any = ()


class _HandOffCounter:
    """A counter of permits handed FIFO to waiters; the core of Lock and Semaphore."""

    __slots__ = ("_mutex", "_value", "_waiters", "__weakref__")

    def __init__(self, value: int) -> None:
        self._mutex = allocate_lock()
        self._value = value
        self._waiters: deque[Entry] = _NO_WAITERS

    def _acquire(self, blocking: bool, timeout: float | None) -> bool:
        with self._mutex:
            if self._value > 0:  # never > 0 while anyone waits (hand-off)
                self._value -= 1
                return True
            if not blocking:
                return False
            entry = Entry()
            if self._waiters is _NO_WAITERS:
                self._waiters = deque()
            self._waiters.append(entry)
        try:
            if entry.waiter.wait(timeout):
                return True
        except BaseException:
            with self._mutex:
                if remove_entry(self._waiters, entry):
                    raise
            self._release()  # handed a permit while being killed: pass it on
            raise
        with self._mutex:
            if remove_entry(self._waiters, entry):
                return False
        return True  # handed a permit just as the timeout expired

    def _release(self) -> None:
        with self._mutex:
            if not self._waiters:
                self._value += 1
                return
            entry = self._waiters.popleft()
        entry.waiter.wake()


#: A waiter that has waited longer than this switches a :class:`Lock` to
#: starvation mode (no barging), as Go's ``sync.Mutex`` does.
STARVATION_THRESHOLD = 0.001

#: How far down its queue a release looks for the longest waiter of each hub.
_WAKE_SCAN = 64


class Lock:
    """A mutex like ``threading.Lock`` that any hub or thread can wait on cooperatively.

    The lock itself is a native lock, so the uncontended ``acquire()`` and
    ``release()`` cost one C call each; waiters queue under a second native
    lock only when it is contended. The policy follows Go's ``sync.Mutex``,
    adapted to waiters whose hub may be stuck in a blocking C call:

    * normal mode: ``release()`` frees the lock and wakes the longest waiter
      *of each hub* (and each thread) in the queue; they compete with each
      other and with newcomers (barging), so the lock goes to whoever can run
      first. A FIFO hand-off gives it to a waiter whose hub may be stuck in
      a query, and nobody can take it meanwhile (a convoy);
    * starvation mode: a woken waiter that lost the race after waiting more
      than :data:`STARVATION_THRESHOLD` (1 ms) turns it on. ``release()``
      then keeps the lock held and offers it to the waiters it wakes (one per
      hub, as above): the first of them to run takes it, newcomers queue
      behind. It ends once the queue is empty or a winner waited < 1 ms.

    As with ``threading.Lock`` (and unlike ``RLock``) anyone may release it.
    """

    __slots__ = (
        "_inner", "_try", "_free", "_mutex", "_waiters", "_starving", "_offered",
        "__weakref__",
    )

    _starvation_threshold = STARVATION_THRESHOLD

    def __init__(self) -> None:
        inner = allocate_lock()
        self._inner = inner
        self._try = inner.acquire  # bound C methods: the fast paths are one call
        self._free = inner.release
        self._mutex = allocate_lock()
        self._waiters: deque[Entry] = _NO_WAITERS  # a deque once contended
        self._starving = False
        self._offered = False  # starvation mode: held, offered to the woken waiters

    def __repr__(self) -> str:
        state = "locked" if self._inner.locked() else "unlocked"
        return (
            f"<{state} {type(self).__module__}.{type(self).__qualname__} object "
            f"waiters={len(self._waiters)} at {id(self):#x}>"
        )

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock; False if ``blocking`` is false or ``timeout`` expires first."""
        if timeout == -1 and self._try(False):
            return True
        return self._acquire_slow(blocking, timeout)

    def __enter__(self) -> bool:
        if self._try(False):
            return True
        return self._acquire_slow(True, -1)

    def release(self) -> None:
        """Release the lock and wake waiters (see the class docstring for who gets it)."""
        if self._starving:
            return self._release_slow()
        self._free()  # before looking at the waiters: see _acquire_slow
        if self._waiters:
            self._wake_waiters()

    def __exit__(self, *exc_info) -> None:
        if self._starving:
            return self._release_slow()
        self._free()
        if self._waiters:
            self._wake_waiters()

    def locked(self) -> bool:
        return self._inner.locked()

    def _at_fork_reinit(self) -> None:
        # threading calls this in a forked child: the lock is free, nobody waits.
        self._inner = inner = allocate_lock()
        self._try = inner.acquire
        self._free = inner.release
        self._mutex = allocate_lock()
        self._waiters = deque()
        self._starving = self._offered = False

    # The protocol threading.Condition looks for; for a plain lock it means "held".
    def _is_owned(self) -> bool:
        return self._inner.locked()

    def _release_save(self) -> None:
        self.release()

    def _acquire_restore(self, _state) -> None:
        self.acquire()

    def _pop_one_per_place(self) -> list[Entry]:
        """Under the mutex: remove and return the longest waiter of each hub or thread."""
        waiters = self._waiters
        if len(waiters) == 1:
            return [waiters.popleft()]
        chosen: list[Entry] = []
        places = set()
        for entry in islice(waiters, _WAKE_SCAN):
            if entry.place not in places:
                places.add(entry.place)
                chosen.append(entry)
        for entry in chosen:
            waiters.remove(entry)
        return chosen

    def _wake_waiters(self) -> None:
        with self._mutex:
            if not self._waiters:
                return
            entries = self._pop_one_per_place()
        for entry in entries:
            entry.waiter.wake()

    def _release_slow(self) -> None:
        entries: list[Entry] = []
        with self._mutex:
            if self._offered or not self._inner.locked():
                raise RuntimeError("release unlocked lock")
            if self._starving and self._waiters:
                self._offered = True  # stays held: only a woken waiter may take it
                entries = self._pop_one_per_place()
            else:
                self._starving = False
                self._free()
                if self._waiters:
                    entries = self._pop_one_per_place()
        for entry in entries:
            entry.waiter.wake()

    def _take_offer(self, since: float) -> bool:
        """Under the mutex: take the lock offered in starvation mode, if it still is."""
        if not self._offered:
            return False
        self._offered = False
        if not self._waiters or time.monotonic() - since < self._starvation_threshold:
            self._starving = False
        return True

    def _acquire_slow(self, blocking: bool, timeout: float) -> bool:
        deadline = None
        if not blocking:
            if timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return False
        if timeout != -1:
            if timeout < 0:
                raise ValueError("timeout value must be positive")
            if timeout > TIMEOUT_MAX:
                raise OverflowError("timeout value is too large")
            if self._try(False):
                return True
            deadline = time.monotonic() + timeout
        since = time.monotonic()
        woken = False
        mutex = self._mutex
        if self._waiters is _NO_WAITERS:
            with mutex:
                if self._waiters is _NO_WAITERS:
                    self._waiters = deque()
        waiters = self._waiters
        while True:
            entry = Entry()
            with mutex:
                # Queue first, then try: a release() frees the lock before it
                # looks for waiters, so either this try sees the lock free or
                # that release sees this entry. A woken waiter that lost the
                # race goes back to the head of the queue (Go's rule) and, once
                # it has waited past the threshold, turns on starvation mode.
                if woken:
                    if self._take_offer(since):
                        return True
                    waiters.appendleft(entry)
                else:
                    waiters.append(entry)
                # Try even in starvation mode: its releases keep the lock held
                # (offered), so a lock found free here was freed by a release
                # that read _starving just before it turned on, and that release
                # may have found no waiter to wake (one that has since left).
                if self._try(False):
                    if woken:
                        waiters.popleft()
                    else:
                        waiters.pop()
                    return True
                if woken and time.monotonic() - since > self._starvation_threshold:
                    self._starving = True
            if deadline is None:
                left = None
            else:
                left = max(0.0, deadline - time.monotonic())
            try:
                got = entry.waiter.wait(left)
            except BaseException:
                with mutex:
                    queued = remove_entry(waiters, entry)
                    took = not queued and self._take_offer(since)
                if took or (not queued and self._try(False)):
                    self.release()  # woken while being killed: pass it on
                raise
            if not got:
                with mutex:
                    if remove_entry(waiters, entry):
                        return False
                    if self._take_offer(since):
                        return True  # offered the lock just as the timeout expired
                # Woken just as the timeout expired: if the lock is taken, its
                # holder's release wakes the next waiter, so nothing is lost.
                return self._try(False)
            if self._try(False):
                return True
            woken = True



class SentinelLock(Lock):
    """A :class:`Lock` that never enters starvation mode: ``Thread.join``'s lock.

    CPython's ``Thread._wait_for_tstate_lock`` acquires the lock, releases it
    and then asserts ``not lock.locked()``. In starvation mode a release keeps
    the lock held while it is offered to a woken waiter, so a second joiner on
    another hub that had lost a race would make the first joiner's
    ``join()`` raise AssertionError. Nobody holds this lock for long (it only
    signals a thread's end), so barging costs nothing here.
    """

    __slots__ = ()

    _starvation_threshold = float("inf")

class Semaphore(_HandOffCounter):
    """A counting semaphore like ``threading.Semaphore``, FIFO, usable across hubs."""

    __slots__ = ()

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        super().__init__(value)

    def __repr__(self) -> str:
        return (
            f"<greenpool.{type(self).__name__} value={self._value} "
            f"waiters={len(self._waiters)}>"
        )

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take one permit; False if ``blocking`` is false or ``timeout`` expires first."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        _queue_timeout(timeout)
        return self._acquire(blocking, timeout)

    def release(self, n: int = 1) -> None:
        """Return ``n`` permits, each handed to a waiter if one is queued."""
        if n < 1:
            raise ValueError("n must be one or more")
        for _ in range(n):
            self._release()

    @property
    def value(self) -> int:
        """Permits available now (0 while anyone waits)."""
        return self._value

    def __enter__(self) -> bool:
        return self._acquire(True, None)

    def __exit__(self, *exc_info) -> None:
        self._release()


class BoundedSemaphore(Semaphore):
    """A :class:`Semaphore` whose ``release()`` raises ValueError past its initial value."""

    __slots__ = ("_initial",)

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial = value

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        for _ in range(n):
            with self._mutex:
                if self._value >= self._initial:
                    raise ValueError("Semaphore released too many times")
                if not self._waiters:
                    self._value += 1
                    continue
                entry = self._waiters.popleft()
            entry.waiter.wake()

    def _release(self) -> None:
        self.release()


class RLock:
    """A reentrant lock owned by a greenlet (a plain thread's main greenlet outside hubs).

    Like the patched ``threading.RLock``, ownership is per greenlet: two
    greenlets on one hub exclude each other. Built on :class:`Lock`, so it
    shares its barging/starvation policy. It has the private protocol
    ``threading.Condition`` and ``threading`` use (``_is_owned``,
    ``_release_save``, ``_acquire_restore``, ``_recursion_count``,
    ``_at_fork_reinit``), so it can stand in for ``threading.RLock``.
    """

    __slots__ = ("_lock", "_owner", "_count", "__weakref__")

    def __init__(self) -> None:
        self._lock = Lock()
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return (
            f"<{state} {type(self).__module__}.{type(self).__qualname__} object "
            f"owner={self._owner!r} count={self._count} at {id(self):#x}>"
        )

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock, or count one more level if this greenlet holds it already."""
        me = _owner()
        if self._owner == me:
            self._count += 1
            return True
        lock = self._lock
        if not (timeout == -1 and lock._try(False)) and not lock._acquire_slow(
            blocking, timeout
        ):
            return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        """Drop one level; the last one releases the lock. Only the owner may."""
        if self._owner != _owner():
            raise RuntimeError("cannot release un-acquired lock")
        self._count = count = self._count - 1
        if not count:
            self._owner = None
            self._lock.release()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _is_owned(self) -> bool:
        return self._owner == _owner()

    def _recursion_count(self) -> int:
        return self._count if self._owner == _owner() else 0

    def _release_save(self) -> tuple:
        if not self._count or self._owner != _owner():
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._lock.release()
        return state

    def _acquire_restore(self, state: tuple) -> None:
        self._lock.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._owner = None
        self._count = 0


class Condition:
    """``threading.Condition`` for greenpool locks: wait on one hub, notify from any.

    ``lock`` defaults to a new :class:`RLock`; a :class:`Lock` works too.
    A waiter that times out or is killed just as it was notified passes the
    notification on to the next waiter, so ``notify()`` is never lost.
    """

    def __init__(self, lock: Lock | RLock | None = None) -> None:
        if lock is None:
            lock = RLock()
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release
        self._waiters: deque[Entry] = deque()

    def __repr__(self) -> str:
        return f"<greenpool.Condition {self._lock!r} waiters={len(self._waiters)}>"

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info) -> None:
        self._lock.__exit__(*exc_info)

    def _release_save(self):
        release_save = getattr(self._lock, "_release_save", None)
        if release_save is not None:
            return release_save()
        self._lock.release()
        return None

    def _acquire_restore(self, state) -> None:
        acquire_restore = getattr(self._lock, "_acquire_restore", None)
        if acquire_restore is not None:
            acquire_restore(state)
        else:
            self._lock.acquire()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait for a notify (or ``timeout``), re-acquire; False on timeout."""
        if not self._lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        _queue_timeout(timeout)
        entry = Entry()
        self._waiters.append(entry)
        saved = self._release_save()
        error = None
        notified = False
        try:
            notified = entry.waiter.wait(timeout)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error = exc
        # The lock must be held again whatever is thrown at us meanwhile (a
        # kill while re-acquiring), or `with cond:` would release another
        # greenlet's lock; asyncio.Condition keeps the same rule.
        while True:
            try:
                self._acquire_restore(saved)
                break
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                error = error or exc
        if remove_entry(self._waiters, entry):
            notified = False  # still queued: never notified
        elif error is not None:
            self._notify(1)  # it had been notified: hand that on
        else:
            notified = True  # notified, possibly just as the timeout expired
        if error is not None:
            try:
                raise error
            finally:
                error = None
        return notified

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (or ``timeout``); return its last value."""
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = time.monotonic() + waittime
                else:
                    waittime = endtime - time.monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters; the caller must hold the lock."""
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._notify(n)

    def _notify(self, n: int) -> None:
        waiters = self._waiters
        while waiters and n > 0:
            waiters.popleft().waiter.wake()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiter; the caller must hold the lock."""
        self.notify(len(self._waiters))



class Event:
    """``threading.Event`` whose waiters may sit on any hubs and threads at once.

    ``set()`` wakes every waiter wherever it is; ``wait()`` returns True if the
    flag was set before it returned, even if it has been cleared since.
    """

    __slots__ = ("_mutex", "_flag", "_waiters", "__weakref__")

    def __init__(self) -> None:
        self._mutex = allocate_lock()
        self._flag = False
        self._waiters: list[Entry] = []

    def __repr__(self) -> str:
        state = "set" if self._flag else "unset"
        return f"<greenpool.Event {state} waiters={len(self._waiters)}>"

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        with self._mutex:
            self._flag = True
            waiters, self._waiters = self._waiters, []
        for entry in waiters:
            entry.waiter.wake()

    def clear(self) -> None:
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set; False if ``timeout`` expired first."""
        with self._mutex:
            if self._flag:
                return True
            entry = Entry()
            self._waiters.append(entry)
        return _wait_registered(self._mutex, self._waiters, entry, timeout)


class Queue:
    """A FIFO queue with ``queue.Queue``'s API, shared safely by any hubs and threads.

    ``put``/``get`` block cooperatively on a pool hub and natively in a plain
    thread, and raise ``queue.Full``/``queue.Empty`` like the stdlib.
    ``maxsize <= 0`` means unbounded. ``join(timeout)`` also takes a timeout
    (returning False when it expires), a gevent extension.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self.queue: deque = deque()
        self.unfinished_tasks = 0
        self._mutex = allocate_lock()
        self._getters: deque[Entry] = deque()
        self._putters: deque[Entry] = deque()
        self._joiners: list[Entry] = []

    def __repr__(self) -> str:
        return (
            f"<greenpool.Queue maxsize={self.maxsize} qsize={len(self.queue)} "
            f"getters={len(self._getters)} putters={len(self._putters)}>"
        )

    def qsize(self) -> int:
        return len(self.queue)

    def empty(self) -> bool:
        return not self.queue

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self.queue)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; if full, wait for room (up to ``timeout``) or raise ``queue.Full``."""
        if block:
            _queue_timeout(timeout)
        with self._mutex:
            if self._getters:
                getter = self._getters.popleft()
                getter.value = item
                self.unfinished_tasks += 1
            elif not (0 < self.maxsize <= len(self.queue)):
                self.queue.append(item)
                self.unfinished_tasks += 1
                return
            elif not block:
                raise Full
            else:
                getter = None
                entry = Entry(item)
                self._putters.append(entry)
        if getter is not None:
            getter.waiter.wake()
            return
        try:
            if entry.waiter.wait(timeout):
                return
        except BaseException:
            with self._mutex:
                remove_entry(self._putters, entry)
            raise  # if it was already taken, the item is queued: nothing to undo
        with self._mutex:
            if remove_entry(self._putters, entry):
                raise Full
        # taken just as the timeout expired

    def put_nowait(self, item: Any) -> None:
        self.put(item, False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; wait up to ``timeout``, else raise ``queue.Empty``."""
        if block:
            _queue_timeout(timeout)
        putter = entry = None
        with self._mutex:
            if self.queue:
                item = self.queue.popleft()
                if self._putters:
                    putter = self._putters.popleft()
                    self.queue.append(putter.value)
                    putter.value = None
                    self.unfinished_tasks += 1
            elif not block:
                raise Empty
            else:
                entry = Entry()
                self._getters.append(entry)
        if entry is not None:
            return self._wait_for_item(entry, timeout)
        if putter is not None:
            putter.waiter.wake()
        return item

    def _wait_for_item(self, entry: Entry, timeout: float | None) -> Any:
        try:
            got = entry.waiter.wait(timeout)
        except BaseException:
            with self._mutex:
                if remove_entry(self._getters, entry):
                    raise
            self._give_back(entry.value)  # handed an item while being killed
            raise
        if not got:
            with self._mutex:
                if remove_entry(self._getters, entry):
                    raise Empty
        item, entry.value = entry.value, None
        return item

    def _give_back(self, item: Any) -> None:
        """Return an item a dying getter was handed: to the next getter, or the head."""
        with self._mutex:
            self.unfinished_tasks -= 1
            if self._getters:
                getter = self._getters.popleft()
                getter.value = item
                self.unfinished_tasks += 1
            else:
                self.queue.appendleft(item)
                self.unfinished_tasks += 1
                return
        getter.waiter.wake()

    def get_nowait(self) -> Any:
        return self.get(False)

    def task_done(self) -> None:
        """Mark one item got earlier as processed; ValueError if called too often."""
        with self._mutex:
            if self.unfinished_tasks <= 0:
                raise ValueError("task_done() called too many times")
            self.unfinished_tasks -= 1
            if self.unfinished_tasks or not self._joiners:
                return
            joiners, self._joiners = self._joiners, []
        for entry in joiners:
            entry.waiter.wake()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every item put has been marked done; False if ``timeout`` expires."""
        with self._mutex:
            if not self.unfinished_tasks:
                return True
            entry = Entry()
            self._joiners.append(entry)
        return _wait_registered(self._mutex, self._joiners, entry, timeout)

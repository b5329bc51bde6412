"""Each direction of a gevent socket follows the greenlet that waits in it (``greenpool.monkey``).

A gevent socket belongs to one hub: its ``hub`` and its two libev I/O watchers
(read and write) live on that hub's loop, so a thread-style app that shares a
socket (through a ``requests.Session``, a redis-py pool, a DB driver's
connection pool) between hubs fails with "Cannot switch to a different
thread". After :func:`install`, each *direction* of a socket moves, in place,
to the hub of the greenlet that has to wait in it: same object, same
descriptor, same buffered bytes (``makefile()``), same OpenSSL state. Only the
wait path and close/shutdown are patched (and, with the C extension,
recv/recv_into: below): a send or receive that does not have to wait never
looks at the hub.

**Full duplex.** A reader on one hub and a writer on another at the same time
is the commonest full-duplex pattern of thread-style code (websocket-client's
reader thread plus ``ws.send`` from app threads, a broadcaster thread, SSH and
DB transports); threads and one gevent hub allow it, so it must work at any
message size. The read watcher and the write watcher are independent libev
watchers on one descriptor, and libev (epoll) lets one descriptor be in several
loops: each loop's epoll set holds its own registration with its own event
mask, and stopping one loop's watcher changes only that loop's set (libev
updates the mask lazily and filters a spurious event itself). So a socket
read on hub A and written on hub B has its read watcher on A's loop and its
write watcher on B's; its ``hub`` is then :data:`SPLIT`, since there is no one
hub: anything that would act on "the socket's hub" raises ``WrongHubError``
rather than touch another thread's loop (``sock.hub.wait(watcher)``, which
gevent-style code uses, still works for a watcher of the caller's loop). When
a direction moves, the other one comes along unless a greenlet on another hub
waits in it, so a socket is split only while it is really used in full duplex
from two hubs; otherwise it keeps gevent's one-hub wait. A direction already on
its waiter's hub moves nothing, so a reader and a writer that stay on their
hubs run at the throughput of two threads (``benchmarks/socket_follow.py``).

**The same direction on two hubs** (two readers, two writers, threads on
several hubs blocked in ``accept()`` on one listener) is refused with
:class:`ConcurrentSocketUseError`, whose message names the fix. Why not let
both wait, as threads do: gevent refuses two waiters in one direction on one
hub (``ConcurrentObjectUseError``), and which hub a thread lands on is not the
app's choice, so letting them wait across hubs would make the same program
work or fail by placement; and on a stream socket, two readers or two writers
interleave their bytes at arbitrary points, a bug in a threaded program too
(libraries that send from several threads serialize their writers with a lock,
as websocket-client does). Listeners are served per hub instead
(``each_hub=True``).

**TLS.** OpenSSL's read may have to wait until the socket is writable
(``SSLWantWriteError``) and its write until it is readable: such a wait belongs
to the operation, not to the direction of the watcher it needs. When a
greenlet on another hub already waits in that direction (the writer, for a
read that wants to write), the TLS wait uses a one-shot watcher of its own on
its own hub; both wake when the socket is ready, as two threads would. (Two
TLS readers on two hubs cannot be told apart from that, so they both wait, as
threads do.) Reads and writes of one ``SSLSocket`` from two threads are what
CPython's ``ssl`` lets threads do; here they share one OpenSSL connection
whose calls are serialized by a per-socket lock (:class:`_LockedSSLObject`:
OpenSSL cannot run a read and a write of one connection at once), held only
for each non-blocking call, never across a wait.

**close() and shutdown().** ``close()`` from any hub wakes every waiter on its
own loop with gevent's close error (``EBADF``, as on one hub): each hub with a
waiter is asked to cancel its waits, and the last of them closes the
descriptor, only after every watcher has stopped (libev must never watch a
closed descriptor: it would silently leave the epoll set, and a reused number
would wake the wrong waiter). An idle socket's descriptor is closed directly
(also when its hub has stopped: nothing is printed, at exit either).
``shutdown()`` from a hub that does not own both directions leaves the waking
to the kernel, which wakes every loop's watchers: a reader gets EOF, a writer
``EPIPE``, as between threads.

**Moves.** A direction moves only while nothing waits on its old watcher: it is
inactive, so it is in no loop and can be dropped from any thread (libev's
``ev_io_stop`` on an inactive watcher touches nothing, and the cython watcher's
dealloc never touches its loop). A dropped watcher is pointed at a destroyed
loop, so a greenlet that fetched it just before the move (gevent's methods read
``self._read_event`` before calling ``_wait``) fails to start it and waits on
the direction's current watcher instead, never on one nobody will wake. libev's
loop calls ``stop()`` once more on a watcher after its callback (the waiting
greenlet's switch) returns; when the direction moved before its hub got control
back, that stop meets a retired watcher and has nothing left to do, so gevent's
``Hub.handle_error`` is taught not to print it.

**Cost.** A wait on the socket's own hub (both directions there) costs one hub
check more than gevent's (gevent's ``get_hub()`` and an identity check, in C,
``greenpool/_speedups.c``: ~90 ns a wait; the pure-Python twin ~105 ns). With
the C extension, ``recv`` and ``recv_into`` of plain sockets are also replaced,
so that the same-hub path as a whole is not slower than gevent's: gevent's
first try a recv, catch the ``BlockingIOError`` CPython raises when nothing is
there (~0.6 us: an exception, its message, a Python ``except``), then wait and
try again; these make the non-blocking ``recv(2)`` themselves and treat EAGAIN
as a return code, then wait exactly as gevent does
(``self._wait(self._read_event)``). Anything else (keywords, a non-int size, a
buffer they cannot write) goes to gevent's own method. TLS sockets keep
gevent's (``SSLSocket`` overrides both). A split socket's waits take a Python
path (~0.8 us more a wait, small next to a wait's loop iteration). Each
OpenSSL call of a TLS socket takes its connection's lock (~0.2 us, in Python: a
1 KiB TLS send and receive on one hub 12.5 us instead of 11.8).

Written against, and tested with, gevent 26.9's libev (cython) loop, the
default on Linux; the libuv and libev-cffi loops are untested (with them,
watchers would be dropped without being retired).
"""

from __future__ import annotations

import weakref

from gevent import _socketcommon
from gevent._hub_local import get_hub_if_exists
from gevent._hub_local import get_hub_noargs as get_hub
from gevent._hub_primitives import wait_on_socket as _gevent_wait
from gevent._hub_primitives import wait_on_watcher as _gevent_wait_on_watcher
from gevent.exceptions import ConcurrentObjectUseError
from gevent.hub import Hub as GeventHub
from gevent.monkey import get_original

from greenpool._compiled import speedups
from greenpool.errors import WrongHubError
from greenpool.rebind import follow_in_place

__all__ = ["ConcurrentSocketUseError", "install", "installed", "adopt"]

_RLock = get_original("_thread", "RLock")
_Lock = get_original("_thread", "allocate_lock")
_move_lock = _RLock()
_Mixin = _socketcommon.SocketMixin
_installed = False
_originals: dict[str, object] = {}
#: What install() put in place of gevent's SocketMixin._wait: the C method
#: descriptor, or the pure-Python _wait.
_installed_wait: object = None
_dead_loops: dict[type, object] = {}
#: The two hubs, (reading, writing), of each socket whose directions are on
#: different hubs (its ``hub`` is then :data:`SPLIT`). Weak: a socket dropped
#: without close() must not stay here.
_split_owners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: One-shot watchers of TLS waits made beside a direction another hub waits in:
#: socket -> {(hub, watcher)}, so that close() can wake them too.
_side_waits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

READ, WRITE = 1, 2  # libev's EV_READ, EV_WRITE: the events of each direction's watcher


class ConcurrentSocketUseError(WrongHubError, ConcurrentObjectUseError):
    """Greenlets on two hubs waited on one socket in the same direction at the same time.

    A ``WrongHubError`` for greenpool code and a gevent
    ``ConcurrentObjectUseError`` (what one hub raises for the same bug), but
    deliberately not an ``OSError``: connection pools catch ``OSError`` as a
    network failure and would retry the shared socket, hiding the bug.
    """


class _SplitHub:
    """The ``hub`` of a socket read on one hub and written on another: there is no one hub.

    gevent's socket code reads ``sock.hub`` to wait on one of its watchers
    (``sock.hub.wait(watcher)``): that still works here, on the hub the watcher
    belongs to, which is the caller's whenever the wait is legitimate (the
    watcher was moved to the caller's hub first). Anything else a caller might
    want from "the socket's hub" has no answer, and says so instead of acting
    on the wrong loop.
    """

    __slots__ = ()

    def wait(self, watcher) -> None:
        hub = get_hub()
        if watcher.loop is not hub.loop:
            raise WrongHubError(
                "this socket's watcher belongs to another hub's loop; wait through the "
                "socket's own methods (recv, send, ...), which move it to the caller's hub"
            )
        hub.wait(watcher)

    def __getattr__(self, name: str):
        raise WrongHubError(
            f"sock.hub.{name}: this socket is read on one hub and written on another, so it "
            "has no single hub; use the socket's own methods, or call greenpool.rebind(sock) "
            "on one hub (when neither direction is waiting) to give it one"
        )

    def __repr__(self) -> str:
        return "<socket split across two hubs: greenpool.monkey.sockets>"


#: ``sock.hub`` while its reading and writing directions belong to different hubs.
SPLIT = _SplitHub()


def installed() -> bool:
    """True once :func:`install` ran: sockets move to the hub that waits on them."""
    return _installed


def _hub_name(hub) -> str:
    if hub is None:
        return "a thread without a hub"
    if hub is SPLIT:
        return "two hubs"
    owner = getattr(hub, "greenpool_hub", None)
    if owner is not None:
        return f"hub {owner.name!r}"
    return f"the gevent hub of thread {getattr(hub, 'thread_ident', '?')}"


def _describe(sock) -> str:
    try:
        return f"{sock!r} (peer {sock._sock.getpeername()})"
    except Exception:  # not connected, or closed meanwhile
        return repr(sock)


def _busy_error(sock, owner, hub, direction: int = 0) -> ConcurrentSocketUseError:
    what = {READ: "reading from", WRITE: "writing to"}.get(direction, "using")
    return ConcurrentSocketUseError(
        f"{_describe(sock)} is in use by a greenlet on {_hub_name(owner)} while a greenlet on "
        f"{_hub_name(hub)} tries to use it: a greenlet waits {what} it already. One reader "
        "and one writer may use a socket at once, from any hubs; two readers or two writers "
        "would interleave their bytes (gevent refuses it on one hub too). Serialize them "
        "with a lock, give each its own connection (a pool does), or hand it over only when "
        "the other is done with it"
    )


def _loop_alive(loop) -> bool:
    if loop is None:  # hub.destroy() drops its loop
        return False
    try:
        return bool(loop.ptr)
    except Exception:  # a loop implementation without ``ptr``: assume alive
        return True


def _hub_alive(hub) -> bool:
    return hub is not None and hub is not SPLIT and _loop_alive(hub.loop)


def _dead_loop(loop, fd: int):
    """A destroyed loop of ``loop``'s class: watchers pointed at it refuse to start.

    False where the loop implementation does not refuse (then retired watchers
    are only dropped).
    """
    cls = type(loop)
    dead = _dead_loops.get(cls)
    if dead is None:
        dead = False
        try:
            candidate = cls(default=False)
            candidate.destroy()
            probe = loop.io(fd, 1)
            probe.loop = candidate
            try:
                probe.start(id)
            except ValueError:
                dead = candidate  # refused, as a retired watcher must
            else:  # pragma: no cover - an implementation that ignores its loop
                probe.loop = loop
                probe.stop()
        except Exception:  # pragma: no cover - e.g. libuv: no retirement
            dead = False
        _dead_loops[cls] = dead
    return dead


def _busy(watcher) -> bool:
    """Started (gevent's waits set the callback on start and clear it on stop)."""
    return watcher is not None and watcher.callback is not None


def owners(sock) -> tuple:
    """``(hub its reads wait on, hub its writes wait on)``: the same hub unless split."""
    hub = sock.hub
    if hub is SPLIT:
        pair = _split_owners.get(sock)
        if pair is not None:
            return pair
        return (None, None)  # pragma: no cover - SPLIT is only set with its owners
    return (hub, hub)


def _set_owners(sock, read_hub, write_hub) -> None:
    """Record each direction's hub; ``sock.hub`` is the hub only while both share it."""
    if read_hub is write_hub:
        sock.hub = read_hub
        _split_owners.pop(sock, None)
    else:
        _split_owners[sock] = (read_hub, write_hub)
        sock.hub = SPLIT


def _move(sock, direction: int, old_owner, hub, fd: int):
    """Give ``direction`` of ``sock`` a watcher on ``hub``'s loop; return it (under the lock).

    Raises :class:`ConcurrentSocketUseError` when a greenlet on a live hub
    still waits in that direction. The other direction is not touched: a
    greenlet may be waiting in it, on its own hub.
    """
    name = "_read_event" if direction == READ else "_write_event"
    old = getattr(sock, name)
    alive = _hub_alive(old_owner)
    dead = _dead_loop(old.loop, fd)
    new = hub.loop.io(fd, direction)
    if not old.ref:
        new.ref = False
    # Check, retire, re-check, with no call in between (so no switch to
    # another thread in CPython 3.11+): a watcher its old hub's thread starts
    # after the retirement refuses to start (that greenlet gets the error);
    # one started just before is seen by the re-check and the move undone.
    if alive and old.callback is not None:
        raise _busy_error(sock, old_owner, hub, direction)
    if dead:
        old.loop = dead
        if alive and old.callback is not None:
            old.loop = old_owner.loop
            raise _busy_error(sock, old_owner, hub, direction)
    # No same-hub fast path may pass for this hub until the owners are recorded.
    sock.hub = SPLIT
    setattr(sock, name, new)
    return new


def adopt(sock: _socketcommon.SocketMixin, hub: GeventHub | None = None):
    """Move both directions of ``sock`` to ``hub`` (the caller's by default) in place.

    Returns ``sock``. Raises :class:`ConcurrentSocketUseError`, moving
    nothing, when a greenlet on another live hub still waits on it in either
    direction. A closed socket is left as it is.
    """
    if hub is None:
        hub = get_hub()
    with _move_lock:
        if sock.hub is hub:
            return sock
        read, write = sock._read_event, sock._write_event
        if read is None or write is None:
            return sock  # closed or detached: its methods raise EBADF themselves
        fd = sock._sock.fileno()
        if fd < 0:
            return sock
        read_owner, write_owner = owners(sock)
        for owner, watcher, direction in ((read_owner, read, READ), (write_owner, write, WRITE)):
            if owner is not hub and _hub_alive(owner) and watcher.callback is not None:
                raise _busy_error(sock, owner, hub, direction)
        try:
            if read_owner is not hub:
                _move(sock, READ, read_owner, hub, fd)
                read_owner = hub
            if write_owner is not hub:
                _move(sock, WRITE, write_owner, hub, fd)
                write_owner = hub
        finally:
            _set_owners(sock, read_owner, write_owner)
        return sock


def _wait(self, watcher, timeout_exc=None):
    """``SocketMixin._wait``: wait on the direction's watcher on the caller's hub.

    On the socket's own hub (both directions there) this is gevent's wait;
    otherwise the waited direction moves to the caller's hub first
    (:func:`_wait_elsewhere`).
    """
    hub = get_hub()
    if self.hub is not hub:
        return _wait_elsewhere(self, watcher, timeout_exc, hub)
    try:
        _gevent_wait(self, watcher, timeout_exc)
    except ValueError as exc:
        _wait_failed(self, watcher, timeout_exc, exc)


def _wait_elsewhere(self, watcher, timeout_exc, hub):
    """Wait from a hub that does not own both directions of ``self``.

    The direction waited in (the watcher's events) moves to ``hub`` unless a
    greenlet on another hub waits in it now: then a plain socket refuses
    (:class:`ConcurrentSocketUseError`), and a TLS socket waits on a one-shot
    watcher of its own (OpenSSL's read may have to wait until the socket is
    writable, its write until it is readable: such a wait belongs to the
    operation, not to the direction the other hub's greenlet waits in).

    When the waited direction moves, the other one comes along unless a
    greenlet on another hub waits in it: a socket is split across two hubs
    only while it is really used in full duplex from both, and otherwise keeps
    gevent's (and the C) same-hub wait. A direction already on the caller's
    hub leaves the other where it is, so a reader and a writer that stay on
    their hubs never move anything (no watcher made per wait).
    """
    if watcher is None:  # closed: gevent's wait says so
        return _gevent_wait(self, watcher, timeout_exc)
    direction = WRITE if watcher.events & WRITE else READ
    if (
        self.hub is SPLIT
        and watcher is (self._read_event if direction == READ else self._write_event)
        and watcher.loop is hub.loop
    ):
        # The steady state of full duplex: this direction is already here. No
        # lock: a move that retires it meanwhile makes the wait's start fail
        # (ValueError), and _wait_failed() waits again on the current watcher.
        return _wait_here(self, watcher, timeout_exc, hub)
    other_direction = READ if direction == WRITE else WRITE
    side = None
    with _move_lock:
        current = _watcher(self, direction)
        other_watcher = _watcher(self, other_direction)
        if current is None or other_watcher is None:  # closed meanwhile
            return _gevent_wait(self, None, timeout_exc)
        read_owner, write_owner = owners(self)
        mine, other = (read_owner, write_owner) if direction == READ else (write_owner, read_owner)
        fd = self._sock.fileno()
        try:
            if mine is not hub:
                if _hub_alive(mine) and current.callback is not None and _is_tls(self):
                    side = current = hub.loop.io(fd, direction)
                    _side_waits.setdefault(self, set()).add((hub, side))
                else:
                    current = _move(self, direction, mine, hub, fd)
                    mine = hub
                    if other is not hub and not (
                        _hub_alive(other) and other_watcher.callback is not None
                    ):
                        try:
                            _move(self, other_direction, other, hub, fd)
                            other = hub
                        except ConcurrentSocketUseError:
                            pass  # its waiter started meanwhile: it stays on its hub
        finally:
            if direction == READ:
                _set_owners(self, mine, other)
            else:
                _set_owners(self, other, mine)
    if side is None:
        return _wait_here(self, current, timeout_exc, hub)
    try:
        _wait_here(self, current, timeout_exc, hub)
    finally:
        with _move_lock:
            waits = _side_waits.get(self)
            if waits is not None:
                waits.discard((hub, side))
                if not waits:
                    del _side_waits[self]
        side.close()


def _wait_here(self, watcher, timeout_exc, hub):
    """gevent's socket wait, on ``hub`` (the caller's, which ``watcher`` belongs to)."""
    timeout = self.timeout
    if timeout is not None and timeout_exc is None:
        timeout_exc = _socketcommon.timeout("timed out")  # what gevent's wait raises
    try:
        _gevent_wait_on_watcher(watcher, timeout, timeout_exc, hub)
    except ValueError as exc:
        _wait_failed(self, watcher, timeout_exc, exc)


def _watcher(sock, direction: int):
    return sock._read_event if direction == READ else sock._write_event


def _is_tls(sock) -> bool:
    return getattr(sock, "_sslobj", None) is not None


def _wait_failed(self, watcher, timeout_exc, exc: ValueError):
    """A wait on ``watcher`` raised ``exc``: wait again, or raise what it means.

    A retired watcher (its direction moved to another hub after this greenlet
    fetched it: gevent's methods read ``self._read_event`` before calling
    ``_wait``) is only stale: the wait goes to the direction's current
    watcher, which refuses if a greenlet on another hub really waits in it.
    """
    if watcher is None or not _is_retired(watcher):
        raise exc
    direction = WRITE if watcher.events & WRITE else READ
    return _wait_elsewhere(self, _watcher(self, direction), timeout_exc, get_hub())


class _CloseWhenAllStopped:
    """Closes the descriptor once every hub that had a waiter on it has woken it.

    libev must never watch a closed descriptor (a closed fd leaves a loop's
    epoll set silently, so its waiter would never wake; a reused number would
    wake the wrong one): each hub stops its own watchers first.
    """

    __slots__ = ("remaining", "sock", "lock")

    def __init__(self, remaining: int, sock) -> None:
        self.remaining = remaining
        self.sock = sock
        self.lock = _RLock()

    def __call__(self, *_args) -> None:
        with self.lock:
            self.remaining -= 1
            if self.remaining:
                return
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _drop_events_and_close(self, closefd=True, _cancel_wait_ex=_socketcommon.cancel_wait_ex):
    """``SocketMixin._drop_events_and_close`` that never touches another thread's loop.

    Every waiter (at most a reader and a writer, each on its own hub, plus
    TLS one-shot waits) is woken on its own loop with gevent's close error
    (EBADF), and the descriptor is closed after all of them stopped watching it.
    """
    hub = get_hub_if_exists()
    old = self.hub
    if old is hub and _hub_alive(old) and self not in _side_waits:
        return _originals["_drop_events_and_close"](self, closefd, _cancel_wait_ex)
    with _move_lock:
        read, write = self._read_event, self._write_event
        read_owner, write_owner = owners(self)
        fd = self._sock.fileno()
        busy: dict = {}  # hub -> its watchers with a waiter
        idle = []
        for owner, watcher in ((read_owner, read), (write_owner, write)):
            if watcher is None:
                continue
            if _hub_alive(owner) and _busy(watcher):
                busy.setdefault(owner, []).append(watcher)
            else:
                idle.append((owner, watcher))
        for owner, watcher in _side_waits.get(self, ()):
            if _hub_alive(owner) and _busy(watcher):
                busy.setdefault(owner, []).append(watcher)
        for owner in busy:
            if owner is not hub and not _can_call(owner):
                raise _busy_error(self, owner, hub)
        for owner, watcher in idle:  # retire, re-check: as in _move()
            dead = _dead_loop(watcher.loop, fd) if fd >= 0 else False
            if dead:
                watcher.loop = dead
                if _hub_alive(owner) and watcher.callback is not None:
                    watcher.loop = owner.loop
                    if owner is not hub and not _can_call(owner):
                        raise _busy_error(self, owner, hub)
                    busy.setdefault(owner, []).append(watcher)
        self._read_event = self._write_event = None
        _side_waits.pop(self, None)
        if self.hub is SPLIT:
            _split_owners.pop(self, None)
            self.hub = read_owner
    if busy:
        # Each waiter is woken on its own loop (gevent's close semantics: it
        # gets EBADF); the last hub to do so closes the descriptor.
        then = _CloseWhenAllStopped(len(busy), self._sock if closefd else None)
        for owner, watchers in busy.items():
            if owner is hub:
                owner.cancel_waits_close_and_then(watchers, _cancel_wait_ex, then)
            else:
                owner.greenpool_hub.call_soon_threadsafe(
                    owner.cancel_waits_close_and_then, watchers, _cancel_wait_ex, then)
        return None
    # No watcher of any loop we know waits on it: close the descriptor directly
    # (gevent's closing_fd() dance exists to wake such waiters).
    if closefd:
        try:
            self._sock.close()
        except OSError:
            pass
    return None


def _can_call(hub) -> bool:
    """A hub another thread can ask to run something: a live greenpool hub."""
    owner = getattr(hub, "greenpool_hub", None)
    return owner is not None and owner.is_alive()


def _shutdown(self, how):
    """``SocketMixin.shutdown``: from another hub, let the kernel wake its waiters."""
    hub = self.hub
    if hub is get_hub_if_exists() and _hub_alive(hub):
        return _originals["shutdown"](self, how)
    # shutdown() makes the descriptor readable/writable: each waiter wakes
    # through its own loop (a reader gets EOF, a writer EPIPE, as threads do),
    # which this thread must not touch.
    return self._sock.shutdown(how)


def _is_retired(watcher) -> bool:
    loop = getattr(watcher, "loop", None)
    return loop is not None and any(loop is dead for dead in _dead_loops.values())


def _handle_error(self, context, type, value, tb):
    """``Hub.handle_error``, quiet about the loop's own ``stop()`` of a retired watcher.

    After an I/O callback (the waiting greenlet's switch) returns, libev's
    loop calls ``watcher.stop()`` once more. If the greenlet meanwhile handed
    the socket to another hub, the watcher has been retired and that stop
    raises "operation on destroyed loop"; there is nothing left to stop (the
    greenlet's own stop already ran), so it is not an error worth printing.
    """
    if type is ValueError and context is not None and _is_retired(context):
        return None
    return _originals["handle_error"](self, context, type, value, tb)


class _LockedSSLObject:
    """A TLS socket's ``_ssl._SSLSocket`` whose OpenSSL calls never overlap across hubs.

    gevent's TLS sockets are non-blocking: SSL_read and SSL_write return at
    once when they would block (WANT_READ/WANT_WRITE) and the wait happens
    outside OpenSSL. CPython releases the GIL around each call *and* the
    SSL_get_error() that classifies it, so a reader on one hub and a writer on
    another would run inside one SSL object at once. OpenSSL does not support
    that, and its state is not split by direction: ``rwstate``, which
    SSL_get_error() reads, is one field, and a write resetting it in the middle
    of a read turns the read's WANT_READ into a spurious EOF (a ``recv()`` that
    returns ``b""`` on a live connection: seen in the full-duplex TLS test).
    Each call here holds the socket's lock for its duration only: a
    non-blocking call of microseconds, never a wait, so a reader and a writer
    still wait at the same time, each on its own hub. (Threads with blocking
    sockets share the race in CPython but rarely hit it: their SSL_read blocks
    in the kernel instead of returning WANT_READ.) Greenlets of one hub never
    contend for it: nothing in these calls switches.
    """

    __slots__ = ("_greenpool_raw", "_greenpool_lock")

    def __init__(self, raw) -> None:
        object.__setattr__(self, "_greenpool_raw", raw)
        object.__setattr__(self, "_greenpool_lock", _Lock())

    def read(self, *args):
        with self._greenpool_lock:
            return self._greenpool_raw.read(*args)

    def write(self, data):
        with self._greenpool_lock:
            return self._greenpool_raw.write(data)

    def do_handshake(self):
        with self._greenpool_lock:
            return self._greenpool_raw.do_handshake()

    def shutdown(self):
        with self._greenpool_lock:
            return self._greenpool_raw.shutdown()

    def pending(self):
        with self._greenpool_lock:
            return self._greenpool_raw.pending()

    def __getattr__(self, name: str):
        return getattr(self._greenpool_raw, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self._greenpool_raw, name, value)  # e.g. gevent's ``_sslobj.context = ctx``


def _create_sslobj(self, server_side=False, session=None):
    """gevent's ``SSLSocket.__create_sslobj``: every OpenSSL object it makes is locked."""
    return _LockedSSLObject(_originals["create_sslobj"](self, server_side, session))


def install() -> None:
    """Idempotent: patch gevent's socket wait and close paths so sockets follow their user."""
    global _installed, _installed_wait
    with _move_lock:
        if _installed:
            return
        wait = _wait
        if speedups is not None:  # the same-hub wait in C: as cheap as gevent's own
            wait = speedups.make_follow_wait(_Mixin, get_hub, _gevent_wait, _wait, _wait_failed)
        _installed_wait = wait
        replacements = [
            ("_wait", wait),
            ("_drop_events_and_close", _drop_events_and_close),
            ("shutdown", _shutdown),
        ]
        if speedups is not None:  # recv/recv_into that wait without raising EAGAIN first
            recv, recv_into = speedups.make_fast_recv(
                _Mixin, _Mixin.__dict__["recv"], _Mixin.__dict__["recv_into"])
            replacements += [("recv", recv), ("recv_into", recv_into)]
        for name, replacement in replacements:
            _originals[name] = _Mixin.__dict__[name]
            setattr(_Mixin, name, replacement)
        _originals["handle_error"] = GeventHub.handle_error
        GeventHub.handle_error = _handle_error
        # Name-mangled: gevent's SSLSocket makes every ``_sslobj`` with it. Imported
        # here, not at the top: ``import greenpool`` must not import ``ssl`` before
        # a ``patch_all()`` does (docs/explanation/design.md); install() runs in it.
        from gevent.ssl import SSLSocket

        _originals["create_sslobj"] = SSLSocket.__dict__["_SSLSocket__create_sslobj"]
        SSLSocket._SSLSocket__create_sslobj = _create_sslobj
        follow_in_place(adopt)  # greenpool.rebind() now moves sockets in place
        _installed = True

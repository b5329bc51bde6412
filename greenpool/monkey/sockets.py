"""Gevent sockets follow the greenlet that uses them (part of ``greenpool.monkey``).

A gevent socket belongs to one hub: its ``hub`` and its two libev I/O watchers
live on that hub's loop, so a thread-style app that shares a socket (through a
``requests.Session``, a redis-py pool, a DB driver's connection pool) between
hubs fails with "Cannot switch to a different thread". After :func:`install`,
the socket *moves*, in place, to the hub of whichever greenlet has to wait on
it: same object, same descriptor, same buffered bytes (``makefile()``), same
OpenSSL state. Only the wait path and close/shutdown are patched (and, with
the C extension, recv/recv_into: below): a send or receive that does not have
to wait never looks at the hub, and a wait on the socket's own hub costs one
hub check more than gevent's (gevent's ``get_hub()`` and an identity check, in
C, ``greenpool/_speedups.c``: ~90 ns a wait; the pure-Python twin ~105 ns;
``benchmarks/socket_follow.py``).

With the C extension, ``recv`` and ``recv_into`` of plain sockets are also
replaced, so that the same-hub path as a whole is not slower than gevent's:
gevent's first try a recv, catch the ``BlockingIOError`` CPython raises when
nothing is there (~0.6 us: an exception, its message, a Python ``except``),
then wait and try again; these make the non-blocking ``recv(2)`` themselves
and treat EAGAIN as a return code, then wait exactly as gevent does
(``self._wait(self._read_event)``). Anything else (keywords, a non-int size,
a buffer they cannot write) goes to gevent's own method. TLS sockets keep
gevent's (``SSLSocket`` overrides both).

Closing or shutting down from another hub never touches the owning loop: an
idle socket's descriptor is closed directly (also when its hub has stopped:
nothing is printed, at exit either); a socket another greenpool hub waits on
is closed by that hub (its waiter gets EBADF, as on one hub); ``shutdown()``
leaves the waking to the kernel.

The move is safe only while nothing waits on the old hub's watchers: they are
inactive, so they are in no loop and can be dropped from any thread (libev's
``ev_io_stop`` on an inactive watcher touches nothing, and the cython
watcher's dealloc never touches its loop). A dropped watcher is pointed at a
destroyed loop, so a greenlet that still held it (a racing use from its old
hub) fails at once instead of waiting on a watcher nobody will wake. libev's
loop calls ``stop()`` once more on a watcher after its callback (the waiting
greenlet's switch) returns; when the greenlet handed the socket over before
its hub got control back, that stop meets a retired watcher and has nothing
left to do, so gevent's ``Hub.handle_error`` is taught not to print it.

Two greenlets on different hubs waiting on one socket at the same time is
refused with :class:`ConcurrentSocketUseError`, as gevent refuses two waiting
greenlets on one hub (``ConcurrentObjectUseError``). That includes a reader
on one hub and a writer on another (full duplex across hubs) and several
threads blocked in ``accept()`` on one listener: the socket has one hub.

Written against, and tested with, gevent 26.9's libev (cython) loop, the
default on Linux; the libuv and libev-cffi loops are untested (with them,
watchers would be dropped without being retired).
"""

from __future__ import annotations

from gevent import _socketcommon
from gevent._hub_local import get_hub_if_exists
from gevent._hub_local import get_hub_noargs as get_hub
from gevent._hub_primitives import wait_on_socket as _gevent_wait
from gevent.exceptions import ConcurrentObjectUseError
from gevent.hub import Hub as GeventHub
from gevent.monkey import get_original

from greenpool._compiled import speedups
from greenpool.errors import WrongHubError
from greenpool.rebind import follow_in_place

__all__ = ["ConcurrentSocketUseError", "install", "installed", "adopt"]

_RLock = get_original("_thread", "RLock")
_move_lock = _RLock()
_Mixin = _socketcommon.SocketMixin
_installed = False
_originals: dict[str, object] = {}
#: What install() put in place of gevent's SocketMixin._wait: the C method
#: descriptor, or the pure-Python _wait.
_installed_wait: object = None
_dead_loops: dict[type, object] = {}


class ConcurrentSocketUseError(WrongHubError, ConcurrentObjectUseError):
    """Greenlets on two hubs waited on one socket at the same time.

    A ``WrongHubError`` for greenpool code and a gevent
    ``ConcurrentObjectUseError`` (what one hub raises for the same bug), but
    deliberately not an ``OSError``: connection pools catch ``OSError`` as a
    network failure and would retry the shared socket, hiding the bug.
    """


def installed() -> bool:
    """True once :func:`install` ran: sockets move to the hub that waits on them."""
    return _installed


def _hub_name(hub) -> str:
    if hub is None:
        return "a thread without a hub"
    owner = getattr(hub, "greenpool_hub", None)
    if owner is not None:
        return f"hub {owner.name!r}"
    return f"the gevent hub of thread {getattr(hub, 'thread_ident', '?')}"


def _describe(sock) -> str:
    try:
        return f"{sock!r} (peer {sock._sock.getpeername()})"
    except Exception:  # not connected, or closed meanwhile
        return repr(sock)


def _busy_error(sock, owner, hub) -> ConcurrentSocketUseError:
    return ConcurrentSocketUseError(
        f"{_describe(sock)} is in use by a greenlet on {_hub_name(owner)} while a greenlet on "
        f"{_hub_name(hub)} tries to use it: one socket serves one caller at a time, as "
        "between threads; give each its own connection (a pool does), or hand it over "
        "only when the other is done with it"
    )


def _loop_alive(loop) -> bool:
    if loop is None:  # hub.destroy() drops its loop
        return False
    try:
        return bool(loop.ptr)
    except Exception:  # a loop implementation without ``ptr``: assume alive
        return True


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


def adopt(sock: _socketcommon.SocketMixin, hub: GeventHub | None = None):
    """Move ``sock`` to ``hub`` (the caller's by default) in place; return ``sock``.

    Raises :class:`ConcurrentSocketUseError` when a greenlet on a live hub
    still waits on it. A closed socket is left as it is.
    """
    if hub is None:
        hub = get_hub()
    with _move_lock:
        old = sock.hub
        if old is hub:
            return sock
        read, write = sock._read_event, sock._write_event
        if read is None or write is None:
            return sock  # closed or detached: its methods raise EBADF themselves
        fd = sock._sock.fileno()
        if fd < 0:
            return sock
        alive = old is not None and _loop_alive(old.loop)
        dead = _dead_loop(read.loop, fd)
        new_read = hub.loop.io(fd, 1)
        new_write = hub.loop.io(fd, 2)
        if not read.ref:
            new_read.ref = new_write.ref = False
        # Check, retire, re-check, with no call in between (so no switch to
        # another thread in CPython 3.11+): a watcher its old hub's thread starts
        # after the retirement refuses to start (that greenlet gets the error);
        # one started just before is seen by the re-check and the move undone.
        if alive and (read.callback is not None or write.callback is not None):
            raise _busy_error(sock, old, hub)
        if dead:
            read.loop = write.loop = dead
            if alive and (read.callback is not None or write.callback is not None):
                read.loop = write.loop = old.loop
                raise _busy_error(sock, old, hub)
        sock._read_event, sock._write_event = new_read, new_write
        sock.hub = hub
        return sock


def _wait(self, watcher, timeout_exc=None):
    """``SocketMixin._wait``: move to the waiting greenlet's hub first if needed."""
    hub = get_hub()
    if self.hub is not hub:
        adopt(self, hub)
        if watcher is not None and watcher.events & 2:
            watcher = self._write_event
        else:
            watcher = self._read_event
    try:
        _gevent_wait(self, watcher, timeout_exc)
    except ValueError as exc:
        _wait_failed(self, watcher, exc)


def _wait_failed(self, watcher, exc: ValueError):
    """A wait on ``watcher`` raised ``exc``: which error that means (always raises)."""
    if watcher is not None and _is_retired(watcher):
        # A watcher retired by a move from another hub while this greenlet was
        # about to wait on it: the two are using the socket at the same time.
        raise _busy_error(self, self.hub, get_hub()) from None
    raise exc


def _drop_events_and_close(self, closefd=True, _cancel_wait_ex=_socketcommon.cancel_wait_ex):
    """``SocketMixin._drop_events_and_close`` that never touches another thread's loop."""
    hub = get_hub_if_exists()
    old = self.hub
    if old is hub and old is not None and _loop_alive(old.loop):
        return _originals["_drop_events_and_close"](self, closefd, _cancel_wait_ex)
    with _move_lock:
        read, write = self._read_event, self._write_event
        alive = old is not None and _loop_alive(old.loop)
        fd = self._sock.fileno()
        both = read is not None and write is not None
        dead = _dead_loop(read.loop, fd) if both and fd >= 0 else False
        busy = alive and (_busy(read) or _busy(write))
        if not busy and dead:  # retire, re-check: as in adopt()
            read.loop = write.loop = dead
            busy = alive and (read.callback is not None or write.callback is not None)
            if busy:
                read.loop = write.loop = old.loop
        if busy:
            owner = getattr(old, "greenpool_hub", None)
            if owner is None or not owner.is_alive():
                raise _busy_error(self, old, hub)
            # Its waiter must be woken on its own loop (gevent's close semantics:
            # it gets EBADF); the owning greenpool hub runs the real close.
            self._read_event = self._write_event = None
            owner.call_soon_threadsafe(
                old.cancel_waits_close_and_then,
                (read, write), _cancel_wait_ex,
                self._drop_ref_on_close if closefd else id, self._sock,
            )
            return None
        self._read_event = self._write_event = None
    # No watcher of any loop we know waits on it: close the descriptor directly
    # (gevent's closing_fd() dance exists to wake such waiters).
    if closefd:
        try:
            self._sock.close()
        except OSError:
            pass
    return None


def _shutdown(self, how):
    """``SocketMixin.shutdown``: from another hub, let the kernel wake its waiters."""
    hub = self.hub
    if hub is get_hub_if_exists() and hub is not None and _loop_alive(hub.loop):
        return _originals["shutdown"](self, how)
    # shutdown() makes the descriptor readable/writable: a waiter on the owning
    # hub wakes through its own loop, which this thread must not touch.
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
        follow_in_place(adopt)  # greenpool.rebind() now moves sockets in place
        _installed = True

"""Moving a connection from one hub to another.

A gevent socket is bound to the hub that made it: its ``hub`` and its two libev
I/O watchers belong to that hub's loop, and using it from another hub's thread
fails with "Cannot switch to a different thread". :func:`rebind`, called on the
target hub's thread, returns a new socket object for the *same* connection
(same descriptor, same OpenSSL state for TLS) whose hub and watchers are the
caller's. The old object is left detached: closing it is a no-op (it must not
close a descriptor it no longer owns) and any other use raises
:class:`~greenpool.errors.WrongHubError` naming the fix.

After ``greenpool.monkey.patch_all()`` sockets follow the greenlet that waits
on them (``greenpool.monkey.sockets``), and :func:`rebind` moves the socket
*in place* and returns the same object: old references stay valid, and socket
files are fine to pass. Without the patch a new object is safer: the old
object's unpatched methods would start watchers on another thread's loop.

What is rebound: gevent sockets (``gevent.socket.socket`` and everything made
by a patched ``socket`` module) and gevent TLS sockets (``gevent.ssl.SSLSocket``),
passed to a task that crosses hubs as positional or keyword arguments, or as
items of a tuple argument (how gevent's servers pass ``(socket, address)`` to
their spawner). Sockets hidden deeper, or in closures, are not found: call
:func:`rebind` on them yourself. Socket
*files* (``sock.makefile()``) are not: their buffers may hold bytes already
read, so spawning one onto another hub raises ``TypeError``; pass the socket
and call ``makefile()`` inside the task.
"""

from __future__ import annotations

import errno
import io
import socket as _stdlib_socket
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from gevent.socket import socket as GeventSocket

from greenpool.errors import WrongHubError

__all__ = ["rebind"]

#: Moves a socket in place to a hub: ``greenpool.monkey.sockets.adopt``, which
#: that module's ``install()`` hands over with :func:`follow_in_place`; None
#: until then (this module does not import the monkey-patching package).
_adopt: Callable[[Any, Any], Any] | None = None


def follow_in_place(adopt: Callable[[Any, Any], Any]) -> None:
    """From now on sockets follow their user: :func:`rebind` moves them in place with ``adopt``."""
    global _adopt
    _adopt = adopt


class _DetachedSocket:
    """Stands in for the real socket inside a gevent socket that was rebound."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False  # gevent's close() then leaves the descriptor alone

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass

    def detach(self) -> int:
        return -1

    def __getattr__(self, name):
        raise WrongHubError(
            errno.EBADF,
            "this socket object was rebound to another hub; use the socket that "
            "greenpool.rebind() (or the task's argument) returned on that hub",
        )


_DETACHED = _DetachedSocket()


def _slot_names(cls) -> list[str]:
    names = []
    for klass in cls.__mro__:
        for name in getattr(klass, "__slots__", ()):
            if name not in ("__weakref__", "__dict__"):
                names.append(name)
    return names


def rebind(sock: GeventSocket) -> GeventSocket:
    """Return ``sock``'s connection as a socket bound to the calling thread's hub.

    Call it on the hub that will use the connection. If ``sock`` already
    belongs to this hub it is returned unchanged. A socket a greenlet on its
    old hub is still waiting on cannot be moved (``WrongHubError``). Once
    ``greenpool.monkey.patch_all()`` ran, the move is in place and ``sock``
    itself is returned.
    """
    if not isinstance(sock, GeventSocket):
        raise TypeError(
            f"rebind() takes a gevent socket, got {type(sock).__name__}; "
            "stdlib sockets are not bound to a hub and need no rebinding"
        )
    hub = gevent.get_hub()
    if sock.hub is hub:
        return sock
    if _adopt is not None:
        if sock._read_event is None:
            raise WrongHubError("cannot rebind a closed socket")
        return _adopt(sock, hub)
    old_read, old_write = sock._read_event, sock._write_event
    if old_read is None or sock._sock is _DETACHED:
        raise WrongHubError("cannot rebind a closed or already rebound socket")
    if old_read.active or old_write.active:
        raise WrongHubError(
            "cannot rebind a socket that a greenlet on its old hub is still waiting on; "
            "hand it over only when nothing on the old hub uses it"
        )
    if getattr(sock, "_io_refs", 0) > 0:
        # An open makefile() keeps a reference count on the old object: the new
        # one could then never really close the descriptor.
        raise WrongHubError(
            "cannot rebind a socket with open makefile() objects; close them first "
            "(their buffers may hold data already read) or move the connection before "
            "calling makefile()"
        )
    cls: Any = type(sock)
    new = cls.__new__(cls)
    for name in _slot_names(cls):
        try:
            setattr(new, name, getattr(sock, name))
        except AttributeError:
            pass
    if hasattr(sock, "__dict__"):
        new.__dict__.update(sock.__dict__)
    fileno = sock._sock.fileno()
    new.hub = hub
    new._read_event = hub.loop.io(fileno, 1)
    new._write_event = hub.loop.io(fileno, 2)
    if hasattr(new._sock, "_sslsock"):  # TLS: callbacks find the wrapper through it
        new._sock._sslsock = weakref.ref(new)
    # Detach the old object without touching its hub's loop from this thread.
    sock._sock = _DETACHED
    sock._read_event = sock._write_event = None
    sock._closed = True
    return new


def _file_socket(obj):
    raw = obj
    for attr in ("buffer", "raw"):
        raw = getattr(raw, attr, raw)
    if isinstance(raw, _stdlib_socket.SocketIO):
        return getattr(raw, "_sock", None)
    return None


def _needs(value, gevent_hub, depth=0) -> bool:
    if isinstance(value, GeventSocket):
        # Once sockets follow their waiters, each direction moves when the task
        # waits in it; moving both up front would refuse a socket whose other
        # direction a greenlet elsewhere is waiting in (a reader thread).
        return _adopt is None and value.hub is not gevent_hub
    if depth == 0 and type(value) is tuple:
        return any(_needs(item, gevent_hub, 1) for item in value)
    if isinstance(value, io.IOBase):
        inner = _file_socket(value)
        if (
            isinstance(inner, GeventSocket)
            and inner.hub is not gevent_hub
            and _adopt is None  # (installed, the file's socket follows its user)
        ):
            raise TypeError(
                "socket files are not moved between hubs (their buffers may hold "
                "data already read): pass the socket and call makefile() in the task"
            )
    return False


def needs_rebind(args: tuple, kwargs: dict, hub) -> bool:
    """True if any argument is a gevent socket bound to a hub other than ``hub``'s."""
    gevent_hub = hub.gevent_hub
    for value in args:
        if _needs(value, gevent_hub):
            return True
    if kwargs:
        for value in kwargs.values():
            if _needs(value, gevent_hub):
                return True
    return False


def _rebound(value, depth=0):
    if isinstance(value, GeventSocket):
        return rebind(value)
    if depth == 0 and type(value) is tuple:
        return tuple(_rebound(item, 1) for item in value)
    return value


class Rebound:
    """A task callable that rebinds its socket arguments on its hub, then runs."""

    __slots__ = ("fn", "__qualname__")

    def __init__(self, fn) -> None:
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))

    def __call__(self, *args, **kwargs):
        args = tuple(_rebound(a) for a in args)
        kwargs = {k: _rebound(v) for k, v in kwargs.items()}
        return self.fn(*args, **kwargs)

"""``greenpool.run(server)``: serve a gevent ``StreamServer`` / ``WSGIServer`` on every hub.

A gevent server is bound to the hub that made it (its loop, its stop event,
its handler pool), so one object cannot serve from several threads. Instead
each hub builds its own copy of the given server, on that hub, from the
original's configuration (handle or application, SSL arguments, logs,
environ, handler class, spawn policy) and serves it:

* a server made from a listening socket shares that socket: every hub
  accepts from its own duplicate of the descriptor;
* a server made from an address gets listening sockets bound by greenpool
  at the call (so a busy address fails at once): one ``SO_REUSEPORT`` socket
  per hub, as :func:`greenpool.serve` does by default.

Connections are spawned on each hub's own ``gevent.pool.Pool`` (of the
original's size, unbounded by default), so that on SIGINT/SIGTERM every
hub's server stops gracefully: it stops accepting, waits up to the server's
``stop_timeout`` (gevent's default: 1 s) for its connections, then kills
them, and ``run`` returns None.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from gevent.baseserver import BaseServer
from gevent.greenlet import Greenlet
from gevent.pool import Pool as GeventPool
from gevent.server import StreamServer

from greenpool.hub import current_hub
from greenpool.server import DEFAULT_SPREAD, _bind_listeners, _StdSocket, resolve_address

__all__ = ["is_gevent_server", "run_gevent_server"]


def is_gevent_server(obj: object) -> bool:
    """True for gevent server objects (what ``greenpool.run`` serves instead of calling)."""
    return isinstance(obj, BaseServer)


def run_gevent_server(
    server: StreamServer, size: int | None = None, **pool_options: Any
) -> None:
    """Serve ``server`` on every hub of a new pool until SIGINT/SIGTERM; then return None.

    ``size`` and ``pool_options`` are :class:`greenpool.Pool`'s. The given
    object itself is never started; each hub serves a copy made on it.
    """
    from greenpool.api import run

    if not isinstance(server, StreamServer):
        raise TypeError(
            f"run(server) serves gevent StreamServer and WSGIServer objects, "
            f"not {type(server).__name__}"
        )
    if server.started:
        raise ValueError("run(server) needs a server that has not been started")
    hubs = size if size is not None else (os.cpu_count() or 1)
    listeners = _listeners_for(server, hubs)
    try:
        run(_serve_on_hub, server, listeners, size=size, each_hub=True, **pool_options)
    finally:
        for sock in listeners:
            sock.close()
    return None


def _listeners_for(server: StreamServer, hubs: int) -> list:
    """Listening sockets, not bound to any hub: the server's own, or new ones."""
    sock = getattr(server, "socket", None)
    if sock is not None:
        shared = _StdSocket(fileno=os.dup(sock.fileno()))
        shared.setblocking(False)
        return [shared]
    family, sockaddr = resolve_address(server.address)
    spread = "reuseport" if DEFAULT_SPREAD == "reuseport" else "shared"
    return _bind_listeners(family, sockaddr, server.backlog, spread, hubs)


def _serve_on_hub(template: StreamServer, listeners: list) -> None:
    raw = listeners[current_hub().index % len(listeners)]  # type: ignore[union-attr]
    listener = raw.dup()  # this hub's own descriptor, closed by its server
    listener.setblocking(False)
    clone = _clone(template, listener)
    clone.serve_forever()


def _clone(template: StreamServer, listener) -> StreamServer:
    """A copy of ``template`` made on the calling hub and serving ``listener``.

    ``copy.copy`` keeps the configuration (and a subclass's own attributes);
    ``BaseServer.__init__`` then redoes everything bound to a hub: the loop,
    the stop event, the accept watcher, the handler pool.
    """
    clone = copy.copy(template)
    clone.__dict__.pop("socket", None)
    environ = template.__dict__.get("environ")
    if isinstance(environ, dict):  # WSGIServer fills in SERVER_NAME/PORT per copy
        clone.environ = dict(environ)
    BaseServer.__init__(clone, listener, handle=template.__dict__.get("handle"),
                        spawn=_per_hub_spawn(template))
    return clone


def _per_hub_spawn(template: StreamServer):
    """The spawn argument for a hub's copy: a fresh pool where the original had one."""
    pool = template.pool
    if isinstance(pool, GeventPool):
        return GeventPool(pool.size)
    if pool is not None:
        return pool  # e.g. a greenpool.Pool: it dispatches across its own hubs
    spawn = getattr(template, "_spawn", None)  # gevent keeps the spawn callable here
    if spawn is None:
        return None  # handle inline, in the accept loop
    if spawn == Greenlet.spawn:
        return GeventPool()  # so stop() can wait for, then kill, the handlers
    return spawn

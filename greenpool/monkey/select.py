"""``select.poll`` for N hubs (part of ``greenpool.monkey``).

gevent's patched ``poll`` object has two costs on a pool hub:

* It binds to the loop of the hub that *made* it, and starts its watchers on
  that loop at every ``poll()``. A poll object made in one thread (the main
  thread at import, a thread on another hub) and used from another would
  start watchers on a loop that another thread runs: unsafe in libev (it
  crashed). Here every ``poll()`` waits on the calling thread's own hub,
  looked up at the call and never stored on the object, so threads on
  several hubs may even share one poll object.
* ``poll(0)``, the "is anything ready right now?" question that connection
  pools ask before every reuse (urllib3's ``is_connection_dropped``, so every
  ``requests`` call on a pooled connection), makes an I/O watcher per
  descriptor and runs one loop iteration. Here it asks the kernel with the
  original ``poll`` (one syscall, no loop) and then yields
  with ``gevent.sleep(0)``, as gevent's own ``select()`` does at timeout 0,
  so a loop that polls without blocking still lets the hub's other
  greenlets run. A new poll object, ``register`` and ``poll(0)``: 2.3 us
  instead of 10.9 us (``benchmarks/sync.py``).

Results are the stdlib's ``[(fd, events)]``, ``POLLNVAL`` for a closed
descriptor. ``poll(0)`` reports what the kernel does (``POLLHUP`` too, as the
stdlib); a waiting ``poll()`` reports what gevent's does (``POLLIN``,
``POLLOUT``, ``POLLNVAL``).
"""

from __future__ import annotations

import select as _select_module
from errno import EBADF
from select import POLLIN, POLLOUT

from gevent import select as _gevent_select
from gevent import sleep as _sleep
from gevent._hub_local import get_hub_noargs as _get_hub
from gevent.monkey import get_original

__all__ = ["poll", "install", "installed"]

_original_poll = get_original("select", "poll")
_installed = False


class poll(_gevent_select.poll):  # noqa: N801 - the stdlib's name
    """gevent's ``select.poll`` that waits on the caller's hub and answers ``poll(0)`` at once."""

    def poll(self, timeout=None):
        if timeout is not None and timeout == 0:
            native = _original_poll()
            for fd, flags in self.fds.items():  # gevent keeps libev's READ 1 / WRITE 2
                native.register(fd, (POLLIN if flags & 1 else 0) | (POLLOUT if flags & 2 else 0))
            ready = native.poll(0)
            _sleep(0)  # a scheduling point, as gevent's select() keeps one at timeout 0
            return ready
        return super().poll(timeout)

    def _get_started_watchers(self, poll_result):
        """gevent's, on the calling thread's loop: never the maker's, never stored.

        A poll object shared by threads on several hubs would otherwise start
        one thread's watchers on another thread's loop.
        """
        loop = _get_hub().loop
        watchers = []
        try:
            for fd, flags in self.fds.items():
                try:
                    watcher = loop.io(fd, flags)
                except OSError as ex:
                    if ex.errno != EBADF:
                        raise
                    poll_result.add_error_before_io(fd)
                    continue
                watchers.append(watcher)
                watcher.priority = loop.MAXPRI
                watcher.start(poll_result.add_event, fd, pass_events=True)
        except BaseException:
            for watcher in watchers:
                watcher.stop()
                watcher.close()
            raise
        return watchers


def installed() -> bool:
    """True once :func:`install` ran."""
    return _installed


def install() -> None:
    """Idempotent: ``select.poll`` (already gevent's) becomes :class:`poll`."""
    global _installed
    if _installed:
        return
    from gevent import monkey

    if not monkey.is_module_patched("select"):
        return
    _select_module.poll = poll  # type: ignore[misc]
    _installed = True

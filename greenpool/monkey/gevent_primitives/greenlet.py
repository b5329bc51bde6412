"""``gevent.Greenlet`` across hubs: ``join``, ``get``, ``(un)link`` and ``kill`` from any hub.

A greenlet joined, got, linked or killed from another hub asks its own hub
(through the pool hub's mailbox) to register the link; the result is
delivered back the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent.greenlet as _gevent_greenlet
from gevent._hub_local import get_hub_if_exists
from greenlet import GreenletExit

from greenpool._compiled import gevent_speedups
from greenpool._native import get_ident
from greenpool._waiter import Entry
from greenpool.errors import WrongHubError
from greenpool.monkey.gevent_primitives._parking import _post_for, _post_here, _timeout_error

# gevent's classes, kept before install() replaces the names.
_GGreenlet: Any = _gevent_greenlet.Greenlet


class Greenlet(_GGreenlet):
    """``gevent.Greenlet`` whose ``join``/``get``/``(raw)link``/``unlink``/``kill`` work anywhere.

    On the greenlet's own hub these are gevent's. From another hub (or a
    plain thread) the link is registered by the greenlet's own hub, through
    its pool hub's mailbox, and the wake-up or callback comes back to the
    caller's hub the same way. A greenlet of a hub that has no such mailbox
    (a native thread running its own gevent hub) raises WrongHubError there.
    """

    @classmethod
    def spawn(cls, *args, **kwargs):
        """Create and start a greenlet (``gevent.spawn``); TypeError without a function."""
        if cls is Greenlet and not args and "run" not in kwargs:
            raise TypeError("")
        g = cls(*args, **kwargs)
        g.start()
        return g

    @classmethod
    def spawn_later(cls, seconds, *args, **kwargs):
        """Create a greenlet started ``seconds`` later (``gevent.spawn_later``)."""
        if cls is Greenlet and not args and "run" not in kwargs:
            raise TypeError("")
        g = cls(*args, **kwargs)
        g.start_later(seconds)
        return g

    def _gp_owner_post(self) -> Callable[..., Any] | None:
        """None on the greenlet's own hub; else how to run a call there."""
        hub = self.parent
        if hub is None or getattr(hub, "thread_ident", None) == get_ident():
            return None
        post = _post_for(hub)
        if post is None:
            raise WrongHubError(
                f"{self!r} belongs to the gevent hub of another native thread that "
                "greenpool does not run: join, get, link or kill it from that thread"
            )
        return post

    # rawlink/join/get: gevent's on the greenlet's own hub (the test below, in C with
    # greenpool's extension: see the end of the module), the _gp_*_elsewhere methods else.

    def rawlink(self, callback) -> None:
        """Call ``callback(self)`` once the greenlet ends, in the registering greenlet's hub."""
        hub = self.parent
        if hub is None or hub is get_hub_if_exists():  # its own hub's thread: gevent's
            return _GGreenlet.rawlink(self, callback)
        return self._gp_rawlink_elsewhere(callback)

    def join(self, timeout=None) -> None:
        """Wait until the greenlet ends (or ``timeout``), from any hub."""
        hub = self.parent
        if hub is None or hub is get_hub_if_exists():
            return _GGreenlet.join(self, timeout)
        return self._gp_join_elsewhere(timeout)

    def get(self, block=True, timeout=None):
        """Return the result or raise the exception, from any hub (or ``gevent.Timeout``)."""
        hub = self.parent
        if hub is None or hub is get_hub_if_exists():
            return _GGreenlet.get(self, block, timeout)
        return self._gp_get_elsewhere(block, timeout)

    def unlink(self, callback) -> None:
        """Remove a link added by ``link``/``rawlink``, from any hub: not called after this."""
        hub = self.parent
        if hub is None or hub is get_hub_if_exists():
            return _GGreenlet.unlink(self, callback)
        return self._gp_unlink_elsewhere(callback)

    def _gp_rawlink_elsewhere(self, callback) -> None:
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.rawlink(self, callback)
        if not callable(callback):
            raise TypeError(f"Expected callable: {callback!r}")
        back = _post_here()
        relay = callback
        if back is not None:
            relay = _Relay(callback, back)
            self.__dict__.setdefault("_gp_relays", []).append(relay)
        post(_GGreenlet.rawlink, self, relay)

    def _gp_unlink_elsewhere(self, callback) -> None:
        """The owner's hub removes the link, and this waits for it (so it is synchronous,
        as gevent's). A relay that already fired, its call on its way to this hub, is
        cancelled here: as on one hub, a link unlinked before its call is not called."""
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.unlink(self, callback)
        relays = self.__dict__.get("_gp_relays", ())
        for relay in list(relays):
            if relay.callback == callback and not relay.cancelled:
                relay.cancelled = True
                relays.remove(relay)
                break
        entry = Entry()
        post(_unlink_then_wake, self, callback, entry.waiter)
        entry.waiter.wait()

    def _gp_join_elsewhere(self, timeout=None) -> None:
        if self.dead or self.ready():
            return
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.join(self, timeout)
        self._gp_wait_elsewhere(post, timeout)

    def _gp_get_elsewhere(self, block=True, timeout=None):
        if self.ready():
            return _GGreenlet.get(self, block=False)
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.get(self, block, timeout)
        if not block:
            raise _timeout_error()
        if not self._gp_wait_elsewhere(post, timeout):
            raise _timeout_error(timeout)
        return _GGreenlet.get(self, block=False)

    def _gp_wait_elsewhere(self, post, timeout) -> bool:
        entry = Entry()
        wake = _Wake(entry.waiter)
        post(_GGreenlet.rawlink, self, wake)
        woken = False
        try:
            woken = entry.waiter.wait(timeout)
        finally:
            if not woken:  # timed out or interrupted: the link goes, as gevent's join unlinks
                post(_GGreenlet.unlink, self, wake)
        return woken or self.ready()

    def kill(self, exception=GreenletExit, block=True, timeout=None) -> None:
        """Raise ``exception`` in the greenlet (in its own hub); wait for its end if ``block``."""
        post = self._gp_owner_post()
        if post is None:
            return _GGreenlet.kill(self, exception, block, timeout)
        post(_GGreenlet.kill, self, exception, False)
        if block:
            self.join(timeout)


def _unlink_then_wake(greenlet, callback, waiter) -> None:
    """In the greenlet's own hub: gevent's unlink, then wake the hub that asked."""
    try:
        _GGreenlet.unlink(greenlet, callback)
    finally:
        waiter.wake()


class _Relay:
    """A link registered from another hub: called in the owner's hub, run in the linker's
    (unless cancelled by an unlink there meanwhile)."""

    __slots__ = ("callback", "post", "cancelled")

    def __init__(self, callback, post) -> None:
        self.callback = callback
        self.post = post
        self.cancelled = False

    def __call__(self, source) -> None:
        self.post(self._deliver, source)

    def _deliver(self, source) -> None:
        if not self.cancelled:
            self.callback(source)

    def __eq__(self, other) -> bool:
        return other is self or other == self.callback

    __hash__ = None  # type: ignore[assignment]


class _Wake:
    """A link that wakes one cross-hub waiter."""

    __slots__ = ("waiter",)

    def __init__(self, waiter) -> None:
        self.waiter = waiter

    def __call__(self, _source) -> None:
        self.waiter.wake()


if gevent_speedups is not None:  # rawlink/join/get with the own-hub test, and spawn, in C
    Greenlet.rawlink, Greenlet.join, Greenlet.get, Greenlet.spawn = (  # type: ignore[method-assign]
        gevent_speedups.greenlet_methods(
            Greenlet, get_hub_if_exists,
            _GGreenlet.rawlink, Greenlet._gp_rawlink_elsewhere,
            _GGreenlet.join, Greenlet._gp_join_elsewhere,
            _GGreenlet.get, Greenlet._gp_get_elsewhere,
        ))

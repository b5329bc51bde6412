"""App threads: how many requests a server lets into a thread-style app at once.

An app written for ``gunicorn -k gthread --threads 16`` never sees more than 16
requests at once, and sizes what it holds per thread for that: one Django
database connection per thread (kept across requests with ``CONN_MAX_AGE``), a
``ThreadedConnectionPool`` of 16 or 64, PostgreSQL's ``max_connections``.
Served with a greenlet per connection it would see every connection's request
at once (256 clients: 256 threads' worth of connections, over the database's
limit), and an idle keep-alive connection would keep its greenlet's
connection open between requests.

:class:`AppThreads` restores the thread pool's shape without its cost: each hub
keeps its share of ``count`` (``count / hubs``, at least one) long-lived
greenlets, its *app threads*, each running one request at a time, as a gthread worker thread does. A
request's whole exchange (the app call, its response, the result's
``close()``) runs on an app thread, so what the app keeps per thread
(``threading.local``, contextvars) lives there, reused by the next request, and
a connection waiting for its next request holds none of it. A request that
finds every app thread of its hub busy waits for one, in order, up to
``wait_timeout`` seconds; then it gets :class:`AppThreadsBusy` (a server
answers 503). The connection greenlet hands its request over with one
greenlet switch each way: no loop callback, no cross-thread lock (app threads
belong to one hub).

WebSocket handshakes never take an app thread: the server runs them on their
connection's own greenlet, as ``gunicorn -k gevent`` does (other upgrade
requests are bounded like the rest). A WebSocket held open for hours would
otherwise keep a slot, and ``count`` of them would starve every HTTP
request; and a greenlet of its own per connection is what a WebSocket
handler's thread-locals were under an app thread anyway (one per
connection, ended with it). They have a bound of their own
(:meth:`AppThreads.admit_handshake`): as many handshakes per hub as app
threads may be in the app *before taking their connection*; one that takes
it leaves the bound. So handshake headers sent to a route that is not a
WebSocket (its app answers an HTTP response) cannot run that app's code
without limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from gevent import Greenlet, get_hub
from gevent.lock import Semaphore
from greenlet import getcurrent

from greenpool import _patchstate

__all__ = ["APP_THREADS_ENV", "AUTO", "DEFAULT_APP_THREADS", "DEFAULT_WAIT_TIMEOUT",
           "WAIT_TIMEOUT_ENV", "AppThreads", "AppThreadsBusy", "app_threads_for",
           "check_app_threads", "check_wait_timeout", "parse_app_threads", "parse_wait_timeout",
           "settings_from_env"]

#: App threads per process by default, where a server gives a thread-style
#: (monkey-patched) app some: 4x gthread's usual 16, within PostgreSQL's
#: default of 100 connections for one process with one connection per thread.
DEFAULT_APP_THREADS = 64
#: Seconds a request waits for a free app thread before its 503.
DEFAULT_WAIT_TIMEOUT = 30.0


#: Environment variables a server reads when its command line does not say
#: (the gunicorn worker has no command-line options of its own).
APP_THREADS_ENV = "GREENPOOL_APP_THREADS"
WAIT_TIMEOUT_ENV = "GREENPOOL_APP_WAIT_TIMEOUT"


class AppThreadsBusy(RuntimeError):
    """No app thread of the hub was free within the wait timeout (the server answers 503)."""


def check_app_threads(count: Any, what: str = "app_threads") -> int | None:
    """``count`` if it is a positive int or None (no app threads), else a clear error."""
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{what} must be an int (requests in the app at once) or None, "
                        f"got {type(count).__name__}")
    if count < 1:
        raise ValueError(f"{what} must be >= 1 (or None: no limit, a greenlet per "
                         f"connection calls the app), got {count}")
    return count


def check_wait_timeout(seconds: Any, what: str = "app_wait_timeout") -> float | None:
    """``seconds`` as a float if it is > 0 or None (wait for ever), else a clear error."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be seconds (a number) or None, "
                        f"got {type(seconds).__name__}")
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(f"{what} must be > 0 seconds and finite (or None: wait for ever), "
                         f"got {seconds}")
    return float(seconds)


def parse_app_threads(text: str) -> int | None:
    """``"64"`` -> 64; ``"0"`` or ``"none"`` -> None (no limit); else ValueError."""
    word = text.strip().lower()
    if word in ("0", "none"):
        return None
    try:
        count = int(word)
    except ValueError:
        count = -1
    if count < 1:
        raise ValueError(f"expected a number of app threads >= 1, or 0 or none for no limit, "
                         f"got {text!r}")
    return count


def parse_wait_timeout(text: str) -> float | None:
    """``"30"`` -> 30.0; ``"0"`` or ``"none"`` -> None (wait for ever); else ValueError."""
    word = text.strip().lower()
    if word in ("0", "none"):
        return None
    try:
        seconds = float(word)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < math.inf:
        raise ValueError(f"expected seconds > 0, or 0 or none for no limit, got {text!r}")
    return seconds


def settings_from_env(environ: Mapping[str, str] = os.environ,
                      ) -> tuple[int | str | None, float | None]:
    """``(app_threads, wait_timeout)`` from :data:`APP_THREADS_ENV` and
    :data:`WAIT_TIMEOUT_ENV`: ``"auto"`` and :data:`DEFAULT_WAIT_TIMEOUT` where unset
    or empty; a bad value is a ValueError that names its variable."""
    count: int | str | None = AUTO
    text = environ.get(APP_THREADS_ENV, "").strip()
    if text:
        try:
            count = parse_app_threads(text)
        except ValueError as exc:
            raise ValueError(f"{APP_THREADS_ENV}={text!r}: {exc}") from None
    wait: float | None = DEFAULT_WAIT_TIMEOUT
    text = environ.get(WAIT_TIMEOUT_ENV, "").strip()
    if text:
        try:
            wait = parse_wait_timeout(text)
        except ValueError as exc:
            raise ValueError(f"{WAIT_TIMEOUT_ENV}={text!r}: {exc}") from None
    return count, wait


class _AppThread:
    """One long-lived greenlet running requests one at a time; idle between them.

    The caller's request goes in ``job``, its outcome comes back in
    ``outcome`` (never as switch arguments, which an idle thread's stack would
    keep alive until its next request).
    """

    __slots__ = ("greenlet", "job", "caller", "outcome")

    def __init__(self) -> None:
        self.job: tuple | None = None
        self.caller: Any = None
        self.outcome: tuple | None = None
        self.greenlet = Greenlet(self._run)  # its parent: this thread's hub

    def _run(self) -> None:
        while True:
            fn, args = self.job  # type: ignore[misc]
            self.job = None
            try:
                self.outcome = (True, fn(*args))
            except BaseException as exc:  # handed to the caller, raised there
                self.outcome = (False, exc)
            fn = args = None
            caller, self.caller = self.caller, None
            # Back to the connection; idle until the next request switches in.
            # A GreenletExit arriving here (a cancelling shutdown's stray hunt)
            # ends this app thread.
            caller.switch()


class _HubThreads:
    """One hub's app threads: a semaphore of ``size`` and the idle ones, newest first;
    and the semaphore of handshakes in the app before they take their connection."""

    __slots__ = ("slots", "idle", "size", "handshakes")

    def __init__(self, size: int) -> None:
        self.size = size
        self.slots = Semaphore(size)
        self.idle: list[_AppThread] = []
        self.handshakes = Semaphore(size)

    def acquire(self, slots: Semaphore, what: str, wait_timeout: float | None,
                total: int) -> None:
        if not slots.acquire(timeout=wait_timeout):
            raise AppThreadsBusy(
                f"no {what} was free within {wait_timeout:g} s ({self.size} on this hub, "
                f"{total} in all): raise --app-threads (GREENPOOL_APP_THREADS, app_threads=) if "
                "the app's resources allow more requests at once, or --app-wait-timeout "
                "(GREENPOOL_APP_WAIT_TIMEOUT, app_wait_timeout=)"
            )

    def take(self, wait_timeout: float | None, total: int) -> _AppThread:
        self.acquire(self.slots, "app thread", wait_timeout, total)
        idle = self.idle
        while idle:
            thread = idle.pop()  # the most recent: its per-thread resources are the warmest
            if not thread.greenlet.dead:
                return thread
        return _AppThread()

    def give(self, thread: _AppThread) -> None:
        if not thread.greenlet.dead:
            self.idle.append(thread)
        self.slots.release()


class AppThreads:
    """Up to ``count`` requests in the app at once per process, on long-lived app threads.

    ``count`` is split over the hubs, as evenly as it divides (64 on 3 hubs:
    22, 21, 21), at least one each; a connection stays on its hub, so its
    request waits for one of that hub's app threads. ``wait_timeout``:
    seconds a request waits for one before :meth:`run` raises
    :class:`AppThreadsBusy` (None: no limit).
    """

    def __init__(self, count: int = DEFAULT_APP_THREADS,
                 wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> None:
        checked = check_app_threads(count)
        if checked is None:
            raise TypeError("AppThreads needs a count; pass app_threads=None to a server "
                            "for no app threads")
        self.count = checked
        self.wait_timeout = check_wait_timeout(wait_timeout)
        self._hubs: dict[Any, _HubThreads] = {}  # gevent hub -> its app threads

    def _of_this_hub(self) -> _HubThreads:
        hub = get_hub()
        threads = self._hubs.get(hub)
        if threads is None:  # made on its own hub: the semaphore belongs to that hub
            pool_hub = getattr(hub, "greenpool_hub", None)
            hubs, index = (pool_hub.pool.size, pool_hub.index) if pool_hub is not None else (1, 0)
            share = self.count // hubs + (index < self.count % hubs)
            threads = self._hubs[hub] = _HubThreads(max(1, share))
        return threads

    def admit_handshake(self) -> Callable[[], Any]:
        """Count a WebSocket handshake on this hub until the returned release is called.

        The handshake runs on its connection's greenlet; the server calls the
        release once, when the app takes the connection or returns, whichever
        is first. :class:`AppThreadsBusy` when as many handshakes as this hub
        has app threads are in the app, not taken, for ``wait_timeout`` seconds.
        """
        threads = self._of_this_hub()
        threads.acquire(threads.handshakes, "handshake slot", self.wait_timeout, self.count)
        return threads.handshakes.release

    def run(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` on a free app thread of this hub; this greenlet waits for it.

        The app thread runs it to the end; if this greenlet is interrupted
        meanwhile (a kill, a ``gevent.Timeout``), the interruption is raised
        in the app thread too, where the request's code unwinds, before it is
        re-raised here.
        """
        threads = self._of_this_hub()
        thread = threads.take(self.wait_timeout, self.count)
        try:
            thread.job = (fn, args)
            thread.caller = getcurrent()
            try:
                thread.greenlet.switch()
            except BaseException as exc:  # interrupted while the app thread runs our request
                if thread.caller is not None and not thread.greenlet.dead:
                    thread.greenlet.throw(exc)  # back here once it has unwound
                raise
            outcome = thread.outcome
        finally:
            thread.outcome = None
            threads.give(thread)
        ok, value = outcome  # type: ignore[misc]
        if ok:
            return value
        try:
            raise value
        finally:
            del value, outcome


#: ``app_threads`` default: :data:`~greenpool.http.app_threads.DEFAULT_APP_THREADS`
#: once ``greenpool.monkey.patch_all()`` has run (a thread-style app), else none.
AUTO = "auto"


def app_threads_for(app_threads: int | str | None = AUTO,
                    wait_timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> AppThreads | None:
    """The :class:`AppThreads` a server runs its app on, checked at the call.

    ``app_threads``: requests in the app at once per process (an int), None
    for no limit (each connection's greenlet calls the app), or ``"auto"``:
    :data:`~greenpool.http.app_threads.DEFAULT_APP_THREADS` if
    ``greenpool.monkey.patch_all()`` has run, else None.
    """
    if app_threads == AUTO and isinstance(app_threads, str):
        app_threads = DEFAULT_APP_THREADS if _patchstate.is_patched() else None
    elif isinstance(app_threads, str):
        raise ValueError(f"app_threads must be an int, None or {AUTO!r}, got {app_threads!r}")
    count = check_app_threads(app_threads)
    wait_timeout = check_wait_timeout(wait_timeout)
    return None if count is None else AppThreads(count, wait_timeout)

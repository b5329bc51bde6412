"""``gevent.event`` across hubs: ``Event`` and ``AsyncResult``, waited on and linked anywhere."""

from __future__ import annotations

from typing import Any

import gevent.event as _gevent_event
from gevent._tblib import dump_traceback, load_traceback
from gevent._util import _NONE as _GEVENT_NONE
from gevent.timeout import Timeout

from greenpool._compiled import gevent_speedups
from greenpool.monkey.gevent_primitives._parking import _Linkable, _timeout_error

# gevent's classes, kept before install() replaces the names.
_GEvent: Any = _gevent_event.Event
_GAsyncResult: Any = _gevent_event.AsyncResult

_NONE = object()


class Event(_Linkable, _GEvent):
    """``gevent.event.Event`` that greenlets on any hubs, and plain threads, may wait on.

    ``set()`` wakes every waiter wherever it is; ``wait()`` returns True if it
    was woken by ``set()`` (even if cleared since), False on timeout, as gevent's.
    """

    __slots__ = ("_gp_flag", "_gp_waiters", "_gp_links")

    def __init__(self) -> None:
        self._gp_flag = False
        self._gp_waiters = None
        self._gp_links = None

    def __str__(self) -> str:
        return (f"<{type(self).__module__}.{type(self).__name__} at 0x{id(self):x} "
                f"{'set' if self._gp_flag else 'clear'} _links[{self.linkcount()}]>")

    def is_set(self) -> bool:
        return self._gp_flag

    isSet = is_set
    ready = is_set

    def set(self) -> None:
        """Set the flag; wake every waiter and run the links."""
        self._gp_flag = True
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()

    def clear(self) -> None:
        self._gp_flag = False

    def wait(self, timeout=None) -> bool:
        """Wait until the flag is set; True if it was, False if ``timeout`` expired first."""
        if self._gp_flag:
            waiters = self._gp_waiters
            if waiters is not None and waiters.pending:
                waiters.yield_to_woken()
            return True
        return self._gp_wait(timeout)

    def _reset_internal_locks(self) -> None:
        pass

    def _at_fork_reinit(self) -> None:
        self._gp_waiters = None
        self._gp_links = None


if gevent_speedups is not None:  # the same set()/wait() in C: one park per WebSocket message
    Event.set, Event.wait = gevent_speedups.event_methods(Event)  # type: ignore[method-assign]


class AsyncResult(_Linkable, _GAsyncResult):
    """``gevent.event.AsyncResult`` that greenlets on any hubs, and plain threads, may wait on."""

    __slots__ = ("_gp_value", "_gp_exc_info", "_gp_waiters", "_gp_links", "_gp_imap_index")

    def __init__(self) -> None:
        self._gp_value = _NONE
        self._gp_exc_info: tuple = ()
        self._gp_waiters = None
        self._gp_links = None
        self._gp_imap_index = -1

    def __str__(self) -> str:
        result = f"<{type(self).__name__} at 0x{id(self):x} "
        if self._gp_value is not _NONE:
            result += f"value={self.value!r} "
        elif self._gp_exc_info:
            result += f"exception={self.exception!r} "
        else:
            result += "unset "
        return result + f"_links[{self.linkcount()}]>"

    __repr__ = __str__

    @property
    def _imap_task_index(self) -> int:  # gevent's imap bookkeeping
        return self._gp_imap_index

    @_imap_task_index.setter
    def _imap_task_index(self, value: int) -> None:
        self._gp_imap_index = value

    @property
    def value(self):
        return self._gp_value if self._gp_value is not _NONE else None

    @property
    def _value(self):
        return self._gp_value if self._gp_value is not _NONE else _GEVENT_NONE

    @property
    def _exc_info(self) -> tuple:
        return self._gp_exc_info

    @property
    def exc_info(self) -> tuple:
        exc_info = self._gp_exc_info
        if exc_info:
            return (exc_info[0], exc_info[1], load_traceback(exc_info[2]))
        return ()

    @property
    def exception(self):
        return self._gp_exc_info[1] if self._gp_exc_info else None

    def ready(self) -> bool:
        return self._gp_value is not _NONE or bool(self._gp_exc_info)

    def successful(self) -> bool:
        return self._gp_value is not _NONE

    def done(self) -> bool:
        return self.ready()

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def set(self, value=None) -> None:
        """Store ``value``; wake every waiter and run the links."""
        self._gp_value = value
        if self._gp_waiters is not None or self._gp_links is not None:
            self._gp_notify()

    def set_exception(self, exception, exc_info=None) -> None:
        """Store ``exception`` (raised by ``get()``); wake every waiter and run the links."""
        if exc_info:
            self._gp_exc_info = (exc_info[0], exc_info[1], dump_traceback(exc_info[2]))
        else:
            self._gp_exc_info = (type(exception), exception, dump_traceback(None))
        self._gp_notify()

    def _raise_exception(self):
        exc_type, exc, tb = self.exc_info
        if exc is None:
            exc = exc_type()
        raise exc.with_traceback(tb)

    def get(self, block=True, timeout=None):
        """Return the value or raise the exception; wait for it, or raise ``gevent.Timeout``."""
        if self._gp_value is not _NONE:
            return self._gp_value
        if self._gp_exc_info:
            return self._raise_exception()
        if not block:
            raise _timeout_error()
        if not self._gp_wait(timeout):
            raise timeout if isinstance(timeout, Timeout) else _timeout_error(timeout)
        return self.get(block=False)

    def get_nowait(self):
        return self.get(block=False)

    def wait(self, timeout=None):
        """Wait until ready; the value (None for an exception or a timeout)."""
        self._gp_wait(timeout)
        return self.value

    def result(self, timeout=None):
        return self.get(timeout=timeout)

    def __call__(self, source) -> None:
        if source.successful():
            self.set(source.value)
        else:
            self.set_exception(source.exception, getattr(source, "exc_info", None))

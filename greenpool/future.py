"""greenpool's Future: a ``concurrent.futures.Future`` that knows how to wait.

It keeps the stdlib's state machine and its private fields (``_condition``,
``_state``, ``_waiters``) so ``concurrent.futures.wait`` and ``as_completed``
accept it (from plain threads; inside a pool greenlet use the cooperative
:func:`greenpool.wait` and :func:`greenpool.as_completed`), but swaps the
threading.Condition for a native lock plus a list of :mod:`greenpool._waiter`
wake-ups. That buys two things the stdlib Future
cannot give: ``result()`` inside a pool greenlet parks only that greenlet while
its hub keeps serving, and it stays correct after ``gevent.monkey.patch_all()``
(the stdlib Future would then wait on gevent locks). It is also several times
cheaper to create and complete, which is most of a tiny task's cost.

A Future made by a pool is also the task itself: it holds the callable until a
hub runs it, and cancelling a running one kills its greenlet.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import _base
from contextvars import Context
from typing import TYPE_CHECKING, Any

from greenlet import GreenletExit, getcurrent

from greenpool._hublocal import current_hub
from greenpool._native import allocate_lock
from greenpool._waiter import make_waiter
from greenpool.errors import CancelledError, TimeoutError

if TYPE_CHECKING:
    from greenpool.hub import Hub

log = logging.getLogger("greenpool")

PENDING = _base.PENDING
RUNNING = _base.RUNNING
CANCELLED = _base.CANCELLED
CANCELLED_AND_NOTIFIED = _base.CANCELLED_AND_NOTIFIED
FINISHED = _base.FINISHED
_CANCELLED_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED)
_DONE_STATES = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)


class _UnretrievedException:
    """Logs a task's exception once if nobody ever looked at it (asyncio's habit).

    Attached to a future only when it fails, so successful tasks pay nothing.
    """

    __slots__ = ("fn", "exc")

    def __init__(self, fn: Any, exc: BaseException | None) -> None:
        self.fn = fn  # described only if logged: repr() is user code, it may fail
        self.exc = exc

    def __del__(self) -> None:
        exc = self.exc
        if exc is not None:
            log.error(
                "exception in task %s was never retrieved",
                _describe(self.fn),
                exc_info=(type(exc), exc, exc.__traceback__),
            )


def _describe(fn) -> str:
    if fn is None:
        return "(unknown)"
    try:
        return getattr(fn, "__qualname__", None) or repr(fn)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the exception
        return f"<{type(fn).__name__} object with a failing repr>"


class Future(_base.Future):
    """The result of a task spawned on a greenpool :class:`~greenpool.Pool`.

    Waiting (``result``, ``exception``) is cooperative inside a pool greenlet
    and native in a plain thread. ``cancel()`` also works on a running task:
    its greenlet gets ``GreenletExit`` on its own hub and the future is
    cancelled at once; ``Pool.join()`` waits for the greenlet's cleanup.
    """

    def __init__(self) -> None:
        # Deliberately not calling super().__init__(): it builds a
        # threading.Condition (patched under monkey patching, and slow).
        self._condition = allocate_lock()  # a native lock where the stdlib has a Condition
        self._state: str = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        # Duck-typed waiters (concurrent.futures' and greenpool.wait's collectors).
        self._waiters: list[Any] = []
        self._done_callbacks: list[Callable[[Future], object]] = []
        self._wakers: list[Any] | None = None
        self._unretrieved: _UnretrievedException | None = None
        # Task side, filled in by the pool; released once the task ends.
        self._fn: Callable[..., Any] | None = None
        self._args: tuple[Any, ...] | None = ()
        self._kwargs: dict[str, Any] | None = None
        self._context: Context | None = None
        self._hub: Hub | None = None
        self._greenlet: Any = None

    if TYPE_CHECKING:  # the stdlib's, typed for callbacks that take a greenpool Future

        def add_done_callback(self, fn: Callable[[Future], object]) -> None: ...

    # -- introspection -------------------------------------------------

    def _invoke_callbacks(self) -> None:
        for callback in self._done_callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("exception calling callback for %r", self)
            except BaseException:
                # On a hub (the task's own completion) there is nobody to hand
                # SystemExit or KeyboardInterrupt to, and letting it out would
                # end the hub's runner mid-bookkeeping: log it and go on.
                if current_hub() is None:
                    raise
                log.exception("callback for %r raised on a hub; ignored", self)

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    @property
    def hub(self) -> Hub | None:
        """The :class:`~greenpool.Hub` that runs (or ran) this task, or None."""
        return self._hub

    # -- waiting -------------------------------------------------------

    def _wait(self, timeout: float | None) -> None:
        """Block until done, the way the calling context blocks; TimeoutError if not."""
        if self._greenlet is not None and self._greenlet is getcurrent():
            raise RuntimeError(
                "a task cannot wait for its own future (it would wait forever)"
            )
        with self._condition:
            if self._state in _DONE_STATES:
                return
            waiter = make_waiter()
            if self._wakers is None:
                self._wakers = [waiter]
            else:
                self._wakers.append(waiter)
        if waiter.wait(timeout):
            return
        with self._condition:
            if self._wakers is not None and waiter in self._wakers:
                self._wakers.remove(waiter)
            if self._state not in _DONE_STATES:
                raise TimeoutError()

    def result(self, timeout: float | None = None) -> Any:
        """Return the task's result, waiting up to ``timeout`` seconds.

        Raises the task's exception, ``CancelledError`` or ``TimeoutError``.
        Inside a pool greenlet only the calling greenlet waits.
        """
        if self._state != FINISHED:
            self._wait(timeout)
            if self._state in _CANCELLED_STATES:
                raise CancelledError()
        exc = self._exception
        if exc is None:
            return self._result
        self._mark_retrieved()
        try:
            raise exc
        finally:
            exc = self = None  # type: ignore[assignment]  # break the traceback's cycle

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the task's exception (None on success), waiting like :meth:`result`."""
        if self._state != FINISHED:
            self._wait(timeout)
            if self._state in _CANCELLED_STATES:
                raise CancelledError()
        self._mark_retrieved()
        return self._exception

    def _mark_retrieved(self) -> None:
        unretrieved, self._unretrieved = self._unretrieved, None
        if unretrieved is not None:
            unretrieved.exc = None

    # -- completion ----------------------------------------------------

    def _complete(self, state, result, exception):
        """Move to a final state and wake everyone.

        Returns the state it left (truthy), or None if it was already final.
        """
        with self._condition:
            previous = self._state
            if previous in _DONE_STATES:
                return None
            self._result = result
            self._exception = exception
            if exception is not None and not isinstance(exception, GreenletExit):
                # Before anyone can see the state change and retrieve it.
                self._unretrieved = _UnretrievedException(self._fn, exception)
            self._state = state
            wakers, self._wakers = self._wakers, None
            for waiter in self._waiters:
                if state == FINISHED:
                    if exception is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                else:
                    waiter.add_cancelled(self)
        if wakers:
            for waker in wakers:
                waker.wake()
        if self._done_callbacks:
            self._invoke_callbacks()
        return previous

    def set_result(self, result: Any) -> None:
        """Finish with ``result`` (for executors and tests; tasks do it themselves)."""
        if not self._complete(FINISHED, result, None):
            raise _base.InvalidStateError(f"{self!r} is already done")

    def set_exception(self, exception: BaseException | None) -> None:
        """Finish with ``exception``; logged once if nobody ever retrieves it."""
        if not self._complete(FINISHED, None, exception):
            raise _base.InvalidStateError(f"{self!r} is already done")

    def set_running_or_notify_cancel(self) -> bool:
        """PENDING -> RUNNING; False if the future was cancelled first."""
        with self._condition:
            if self._state in _CANCELLED_STATES:
                return False
            if self._state != PENDING:
                raise RuntimeError(f"Future in unexpected state: {self._state}")
            self._state = RUNNING
            return True

    def cancel(self) -> bool:
        """Cancel the task: a queued one never runs, a running one is killed.

        Returns False only if the task already finished. The future is
        cancelled when this returns; a running task's greenlet receives
        ``GreenletExit`` on its hub right after (``Pool.join()`` waits for it).
        """
        previous = self._complete(CANCELLED_AND_NOTIFIED, None, None)
        if previous is None:
            return self._state in _CANCELLED_STATES
        if previous == RUNNING and self._hub is not None:
            self._hub._kill(self)
        elif previous == PENDING:
            # It will never run: let go of its arguments now (a connection's
            # socket closes here, not whenever the hub skips the task).
            self._args = self._kwargs = self._context = None
        return True


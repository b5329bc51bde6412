"""One native OS thread running one gevent hub, fed through a mailbox.

Everything that crosses into a hub from another thread goes through two
``collections.deque`` mailboxes (tasks and control calls) and one libev
``async_`` watcher, the wake-up channel gevent documents as safe to signal from
any thread. Nothing else about the hub is touched from outside its thread.

Tasks run in *runner* greenlets. Starting a new greenlet costs about 8 us on
CPython 3.11+ (its frame stack is mmapped), ten times the cost of a tiny task,
so a runner that finishes a task takes the next one from the mailbox without a
switch. A runner is reused only when the finished task never yielded to the hub
(while it waited, anything could have kept hold of its greenlet) and left no
trace of it (no new reference, weak reference or attribute on the greenlet);
each task runs in its own ``contextvars`` context. So to user code every task
is its own greenlet, and the tiny tasks that dominate dispatch cost pay no
greenlet start.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from weakref import getweakrefcount

import gevent
from greenlet import GreenletExit, getcurrent
from greenlet import error as greenlet_error
from greenlet import greenlet as RawGreenlet

from greenpool._hublocal import current_hub
from greenpool._native import allocate_lock, get_ident, start_new_thread
from greenpool._waiter import Signal
from greenpool.errors import WrongHubError
from greenpool.future import FINISHED

if TYPE_CHECKING:
    from greenpool.pool import Pool

log = logging.getLogger("greenpool")

_getrefcount = sys.getrefcount
_switch = RawGreenlet.switch

#: Idle runner greenlets a hub keeps for reuse; more are let die.
MAX_IDLE_RUNNERS = 256

#: Seconds a cancelling shutdown lets killed stray greenlets clean up.
STRAY_GRACE = 2.0


class Hub:
    """A native thread with its own gevent hub and event loop.

    Public, read-only attributes: ``index`` (position in the pool), ``name``,
    ``pool``, ``thread_ident`` / ``native_id`` (of the native thread),
    ``gevent_hub`` and ``loop`` (valid inside the hub's thread only).
    """

    def __init__(self, pool: Pool, index: int, name: str) -> None:
        self.pool = pool
        self.index = index
        self.name = name
        self.thread_ident: int | None = None
        self.native_id: int | None = None
        self.gevent_hub: Any = None  # a gevent.hub.Hub once started (gevent is untyped)
        self.loop: Any = None
        self.tasks_done = 0
        self._mailbox: deque = deque()
        self._control: deque = deque()
        self._wake_pending = False
        self._wakeup: Any = None
        self._wakeup_lock = allocate_lock()
        self._budget = 0
        self._yields = 0
        self._nrunning = 0
        self._running: set = set()
        self._idle_runners: list = []
        self._accepting = True
        self._retired = False
        self._strays_ended = False
        self._started = Signal()
        self._stopped = Signal()
        self._start_error: BaseException | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"<greenpool.Hub {self.name!r} {state} live={self.live}>"

    # -- what other threads may read ---------------------------------------

    @property
    def live(self) -> int:
        """Tasks on this hub that are queued or running (children included)."""
        return len(self._mailbox) + self._nrunning

    @property
    def queued(self) -> int:
        """Tasks waiting in this hub's mailbox for a runner."""
        return len(self._mailbox)

    @property
    def running(self) -> int:
        """Tasks started on this hub and not yet finished."""
        return self._nrunning

    def is_alive(self) -> bool:
        return self._started.is_set() and not self._stopped.is_set()

    # -- lifecycle -------------------------------------------------------

    def start(
        self,
        on_start: Callable[[Hub], Any] | None = None,
        on_stop: Callable[[Hub], Any] | None = None,
    ) -> None:
        """Start the thread and wait until its hub is serving (or raise its error)."""
        start_new_thread(self._thread_main, (on_start, on_stop))
        self._started.wait()
        if self._start_error is not None:
            self._stopped.wait()
            raise self._start_error

    def wait_stopped(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)

    def _thread_main(self, on_start, on_stop) -> None:
        from _thread import get_native_id

        self.thread_ident = get_ident()
        self.native_id = get_native_id()
        hub = None
        try:
            hub = gevent.get_hub()
            hub.greenpool_hub = self
            self.gevent_hub = hub
            self.loop = hub.loop
            self._wakeup = hub.loop.async_()
            self._wakeup.start(self._drain)
            if on_start is not None:
                on_start(self)
        except BaseException as exc:  # noqa: BLE001 - reported to Pool()
            self._start_error = exc
            self._close_wakeup()
            self._started.set()
            self._destroy(hub)
            return
        self._started.set()
        try:
            self._run_loop(hub)
        finally:
            if on_stop is not None:
                try:
                    on_stop(self)
                except BaseException:  # noqa: BLE001
                    log.exception("on_stop(%r) failed", self)
            self._destroy(hub)

    def _run_loop(self, hub) -> None:
        """Run the loop until it has nothing left to do.

        Our wake-up watcher keeps it alive until the pool finishes this hub; a
        SystemExit/KeyboardInterrupt that gevent throws out of a stray greenlet
        on this hub is logged and the loop resumed, so it never kills the hub.
        """
        while True:
            try:
                if hub.join():
                    return
            except BaseException:  # noqa: BLE001
                log.exception("error escaped to hub %s; the hub keeps running", self.name)

    def _destroy(self, hub) -> None:
        self._close_wakeup()
        # A later native thread may get this ident: it must not pass for the
        # hub's own thread (whose loop is gone) in call_soon_threadsafe/_wake.
        self.thread_ident = None
        if hub is not None:
            try:
                hub.destroy(destroy_loop=True)
            except Exception:  # noqa: BLE001
                log.exception("destroying hub %s failed", self.name)
        self.gevent_hub = None
        self.loop = None
        self._stopped.set()

    def _close_wakeup(self) -> None:
        with self._wakeup_lock:
            watcher, self._wakeup = self._wakeup, None
            if watcher is not None:
                watcher.stop()
                watcher.close()

    # -- talking to the hub from anywhere --------------------------------

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            if get_ident() == self.thread_ident:
                self.loop.run_callback(self._drain)
            else:
                with self._wakeup_lock:
                    if self._wakeup is not None:
                        self._wakeup.send()

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in this hub's greenlet soon; callable from any thread.

        Once the hub's thread has ended the call is dropped: nothing is left
        to run it (a waiter on that hub is gone with it).
        """
        if get_ident() == self.thread_ident:
            self.loop.run_callback(fn, *args)
        else:
            self._control.append((fn, args))
            self._wake()

    def _submit(self, task) -> None:
        self.pool._spawned += 1  # before the append: see Pool._idle
        self._mailbox.append(task)
        if not self._wake_pending:
            self._wake()

    def _kill(self, task) -> None:
        self.call_soon_threadsafe(self._kill_now, task)

    # -- inside the hub thread -----------------------------------------

    def _drain(self) -> None:
        """Async-watcher callback: run control calls, then hand tasks to runners."""
        self._wake_pending = False
        control = self._control
        while control:
            fn, args = control.popleft()
            try:
                fn(*args)
            except BaseException:  # noqa: BLE001
                log.exception("control call %r on hub %s failed", fn, self.name)
        mailbox = self._mailbox
        if not mailbox:
            return
        # Only what is queued now; later arrivals wait one loop iteration so
        # a steady stream of spawns cannot starve this hub's I/O.
        self._budget = len(mailbox)
        idle = self._idle_runners
        while self._budget > 0 and mailbox:
            runner = idle.pop() if idle else RawGreenlet(self._run_tasks, self.gevent_hub)
            runner.switch()
            # Back here means the runner parked, or its task yielded to the
            # hub: a task that yielded could have been seen by anyone, so its
            # runner is not reused (see _run_tasks).
            self._yields += 1
        self._budget = 0
        if mailbox and not self._wake_pending:
            self._wake_pending = True
            self.loop.run_callback(self._drain)

    def _run_tasks(self) -> None:
        """A runner greenlet's body: run queued tasks until none is left, then park."""
        me = getcurrent()
        mailbox = self._mailbox
        running = self._running
        idle = self._idle_runners
        hub = self.gevent_hub
        pool = self.pool
        while True:
            while self._budget > 0 and mailbox:
                self._budget -= 1
                self._nrunning += 1
                # Into _running before it leaves the mailbox, so that a fork()
                # at any bytecode finds it in one of them (Pool._break_after_fork).
                task = mailbox[0]
                running.add(task)
                mailbox.popleft()
                if pool._space_waiters:
                    pool._room_made()
                refs = _getrefcount(me)
                yields = self._yields
                if task.set_running_or_notify_cancel():
                    task._greenlet = me
                    try:
                        if task._kwargs:
                            result = task._context.run(task._fn, *task._args, **task._kwargs)
                        else:
                            result = task._context.run(task._fn, *task._args)
                    except BaseException as exc:  # noqa: BLE001 - it belongs to the future
                        task._complete(FINISHED, None, _explain(exc))
                    else:
                        task._complete(FINISHED, result, None)
                    task._greenlet = None
                    task._args = task._kwargs = task._context = None
                running.discard(task)
                task = result = None  # drop them now, not when the next task comes
                self._nrunning -= 1
                self.tasks_done += 1
                if not mailbox and not self._nrunning:
                    self._became_idle()
                elif pool._idle_waiters and self._nrunning == 1 and not mailbox:
                    # A join() from inside the pool counts its own task: it
                    # may be waiting for exactly this (see Pool.join).
                    pool._hub_idle(self)
                if (
                    self._yields != yields
                    or _getrefcount(me) > refs
                    or getweakrefcount(me)
                    or me.__dict__
                ):
                    # The task yielded (anything may hold its greenlet now) or
                    # kept a reference, weak reference or attribute: retire it.
                    return
            if len(idle) >= MAX_IDLE_RUNNERS:
                return
            idle.append(me)
            _switch(hub)

    def _kill_now(self, task) -> None:
        runner = task._greenlet
        if runner is not None and task in self._running and runner is not getcurrent():
            runner.throw(GreenletExit)

    def _became_idle(self) -> None:
        pool = self.pool
        if pool._idle_waiters or pool._draining:
            pool._hub_idle(self)
        if not self._accepting:
            # Scheduled, not called: this may run in a runner, and closing
            # throws into idle runners, which must happen from the hub greenlet.
            self.loop.run_callback(self._close_if_done)

    def _cancel_all(self) -> None:
        """Control call: cancel every queued and running task on this hub."""
        while self._mailbox:
            self._mailbox[0].cancel()  # cancelled before it leaves: see _run_tasks
            self._mailbox.popleft()
        for task in list(self._running):
            task.cancel()
        if self.pool._space_waiters:  # the queue emptied: spawners waiting for room go on
            self.pool._room_made()
        if not self._mailbox and not self._nrunning:
            self._became_idle()
        if self._retired:
            self._end_strays()

    def _finish(self) -> None:
        """Control call: accept no more tasks; stop once the current ones end."""
        self._accepting = False
        self._close_if_done()

    def _close_if_done(self) -> None:
        """Retire the hub once its last task ended: its loop may now run dry.

        The wake-up watcher is unref'd, not closed, so control calls (a late
        cancelling shutdown) still reach a loop kept alive by stray greenlets.
        """
        if self._mailbox or self._nrunning or self._retired:
            return
        self._retired = True
        if self._wakeup is not None:
            self._wakeup.ref = False
        idle, self._idle_runners = self._idle_runners, []
        for runner in idle:
            runner.throw(GreenletExit)
        if self.pool._cancelling or self.pool._abandon_strays:
            self._end_strays()

    def _abandon_if_retired(self) -> None:
        """Control call: ``shutdown(strays="abandon")`` after the hub had retired."""
        if self._retired:
            self._end_strays()

    def _end_strays(self) -> None:
        """Stop the loop despite greenlets greenpool did not start: kill or abandon them.

        ``gevent.spawn``'d greenlets and patched "threads" (a legacy server's
        handler waiting on an idle client) would keep the loop alive forever.
        A cancelling shutdown kills them: each gets ``GreenletExit``, as a
        cancelled task does, and if the loop still has not gone idle after
        ``STRAY_GRACE`` seconds it is broken out of, the way daemon threads end.
        ``shutdown(strays="abandon")`` stops the loop at once instead and leaves
        them suspended, never run again (daemon threads at exit). Found through
        ``gc``: this runs once per hub.

        The heap walk asks each object's ``type()``, never ``isinstance``:
        ``isinstance`` reads ``__class__``, which a lazy proxy (Django's
        ``settings``, ``SimpleLazyObject``) answers by running user code, here
        inside the hub's loop, where that code may not block.
        """
        if self._strays_ended:
            return
        self._strays_ended = True
        if self.pool._abandon_strays:
            self.loop.break_()
            return
        hub = self.gevent_hub
        for g in gc.get_objects():
            kind = type(g)
            if issubclass(kind, RawGreenlet) and g.parent is hub and g:
                if issubclass(kind, gevent.Greenlet):
                    g.kill(block=False)
                else:
                    self.loop.run_callback(g.throw, GreenletExit)
        timer = self.loop.timer(STRAY_GRACE, ref=False)
        timer.start(self.loop.break_)


def _explain(exc: BaseException) -> BaseException:
    """Turn greenlet's bare wrong-thread error into one that names the fix."""
    if isinstance(exc, greenlet_error) and "different thread" in str(exc):
        better = WrongHubError(
            f"{exc}: an object bound to another hub (a gevent socket, server, Greenlet "
            "or gevent primitive) was used on this one. Create it on the hub that uses "
            "it, pass sockets as task arguments (they are rebound), or call "
            "greenpool.rebind(sock) on this hub."
        )
        better.__cause__ = exc
        return better
    return exc


__all__ = ["Hub", "current_hub"]

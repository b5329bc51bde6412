"""Child processes started on any hub: ``subprocess``, ``os.fork`` and ``os.waitpid``.

gevent's patched ``os.fork`` (and so ``subprocess.Popen``, ``multiprocessing``)
watches its children with libev child watchers, and libev has those only on
the default loop: the main thread's. After ``greenpool.monkey.patch_all()``
the app's threads and request handlers run on pool hubs, where
``subprocess.run()`` raised ``TypeError: child watchers are only available on
the default loop``, and raised it *after* forking, so the child ran on,
never reaped.

:func:`install` teaches gevent's ``os`` module to watch a child started on
any other loop through a pidfd (Linux 5.3+): an I/O watcher on the starting
hub's own loop, readable once the child has exited, whose callback reaps it
with ``waitpid(pid, WNOHANG)``. Everything above stays gevent's (``Popen``'s
result, ``os.waitpid`` of a watched child). The main thread keeps gevent's
own child watchers. A blocking ``os.waitpid`` of any watched child waits
cooperatively from any hub or thread, for the child's own loop to reap it
(a child of the main thread: once the main thread's loop runs, as always
under gevent).

``Popen`` on a pool hub also skips gevent's ``install_sigchld()``: libev's
process-wide SIGCHLD handler reaps *every* child whenever the main loop runs.

Limits: ``os.waitpid(-1, 0)`` on a pool hub still needs a child watcher (it
raises gevent's ``TypeError``). Once the main thread itself has started a
child through gevent, that handler is installed; a child of a pool hub that
it reaps first gets exit status 0, as the stdlib's ``subprocess`` reports a
child it could not wait for.
"""

from __future__ import annotations

import os
import sys
import time
import weakref

from gevent._hub_local import get_hub_if_exists
from greenlet import getcurrent

from greenpool._native import allocate_lock
from greenpool._waiter import Signal

__all__ = ["install"]

_installed = False
_native_close = os.close  # until install() takes the one gevent's patching replaced
_gevent_watch_child = None
_gevent_waitpid = None
_gevent_execute_child = None
_gevent_on_child = None

#: pid -> Signal set once gevent has recorded that child's exit (see waitpid).
_recorded: dict[int, Signal] = {}
_recorded_lock = allocate_lock()


class _NoSigchldLoop:
    """A non-default loop, as ``Popen._execute_child`` sees it: ``install_sigchld`` does nothing.

    That call installs libev's SIGCHLD handler for the whole process; it then
    reaps *every* child (``waitpid(-1)``) whenever the main thread's loop runs,
    and a pidfd-watched child's exit status would be lost.
    """

    __slots__ = ("loop",)

    def __init__(self, loop) -> None:
        self.loop = loop

    def install_sigchld(self) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self.loop, name)


def _execute_child(self, *args, **kwargs):
    """gevent's ``Popen._execute_child``, told a non-default loop has no SIGCHLD to install."""
    loop = self._loop
    if getattr(loop, "default", True) or not hasattr(os, "pidfd_open"):
        return _gevent_execute_child(self, *args, **kwargs)
    self._loop = _NoSigchldLoop(loop)
    try:
        return _gevent_execute_child(self, *args, **kwargs)
    finally:
        self._loop = loop


class _PidfdChild:
    """A libev-child-watcher look-alike for one child, on any loop, through a pidfd.

    gevent's ``_on_child`` and ``Popen._on_child`` use ``pid``, ``rpid``,
    ``rstatus``, ``stop()`` and ``close()``; ``done`` lets ``waitpid`` wait
    for the reaping from any context.
    """

    __slots__ = ("pid", "rpid", "rstatus", "loop", "done", "_fd", "_io")

    def __init__(self, loop, pid: int, ref: bool) -> None:
        self.pid = pid
        self.rpid = 0
        self.rstatus = 0
        self.loop = loop
        self.done = Signal()
        self._fd = os.pidfd_open(pid)
        self._io = loop.io(self._fd, 1)
        self._io.ref = ref

    def start(self, callback, *args) -> None:
        self._io.start(self._exited, callback, args)

    def _exited(self, callback, args) -> None:
        try:
            pid, status = _gevent_waitpid_raw(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else (libev's SIGCHLD handler on the main loop):
            # the status is gone; the stdlib's subprocess reports 0 then too.
            pid, status = self.pid, 0
        if pid == 0:
            return  # not reapable yet: the watcher stays started
        self.rpid, self.rstatus = pid, status
        try:
            callback(*args)  # gevent's _on_child: records, calls Popen back, stop(), close()
        finally:
            self.close()
            self.done.set()

    def stop(self) -> None:
        if self._fd >= 0:
            self._io.stop()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._io.stop()
            self._io.close()
            # The unpatched close: gevent's may wait on the loop, and this runs
            # in a loop callback. The watcher is stopped, so libev forgets the fd.
            _native_close(fd)


class _PerGreenlet:
    """A data descriptor whose value is kept per greenlet (the one running)."""

    def __init__(self) -> None:
        self.values: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        return self.values.get(getcurrent())

    def __set__(self, obj, value) -> None:
        self.values[getcurrent()] = value


def _per_greenlet_fork_hooks() -> None:
    """Make gevent's ``os.fork()`` hooks remember the forking greenlet's state per greenlet.

    gevent notes the forking thread in one shared object before a fork and
    asserts, in the child, that it is still the current thread. Two hubs
    forking at once overwrote each other's note (the GIL passes between the
    hook and the fork), and the child printed an AssertionError and kept a
    broken ``threading`` state. Its hooks were registered as bound methods,
    so the instance's class is swapped for one that keeps the notes per
    greenlet (the forking one is the child's only one).
    """
    from gevent import threading as gevent_threading

    hooks = getattr(gevent_threading, "_fork_hooks", None)
    if hooks is None or type(hooks).__name__ != "_ForkHooks":
        return  # a gevent without them, or done already
    names = ("_before_fork_current_thread", "_before_fork_active", "_before_fork_ident")
    hooks.__class__ = type(
        "_PerGreenletForkHooks", (type(hooks),), {name: _PerGreenlet() for name in names}
    )


def _gevent_waitpid_raw(pid: int, options: int):
    from gevent import os as gevent_os

    return gevent_os._waitpid(pid, options)  # the unpatched os.waitpid


def _watch_child(pid, callback=None, loop=None, ref=False):
    """gevent's ``_watch_child``, with a pidfd watcher off the default loop."""
    from gevent import os as gevent_os
    from gevent.hub import get_hub

    loop = loop or get_hub().loop
    if isinstance(loop, _NoSigchldLoop):
        loop = loop.loop
    if loop.default or not hasattr(os, "pidfd_open"):
        return _gevent_watch_child(pid, callback, loop, ref)
    watcher = _PidfdChild(loop, pid, ref)
    gevent_os._watched_children[pid] = watcher
    watcher.start(gevent_os._on_child, watcher, callback)


def _on_child(watcher, callback):
    """gevent's ``_on_child`` (records the exit status), then wakes ``waitpid`` callers."""
    try:
        _gevent_on_child(watcher, callback)
    finally:
        with _recorded_lock:
            recorded = _recorded.pop(watcher.pid, None)
        if recorded is not None:
            recorded.set()


def _reap_children(timeout=60):
    """gevent's ``_reap_children`` (forget exits nobody waited for), safe between threads.

    gevent's iterates ``_watched_children`` in Python; with children started on
    several hubs another thread adds one meanwhile, and the hub printed
    "dictionary changed size during iteration" from a child's exit callback.
    """
    from gevent import os as gevent_os

    watched = gevent_os._watched_children
    oldest_allowed = time.time() - timeout
    for pid, value in list(watched.items()):  # one C call: no other thread runs inside
        if isinstance(value, tuple) and value[2] < oldest_allowed:
            if watched.get(pid) is value:
                watched.pop(pid, None)


def waitpid(pid, options):
    """gevent's cooperative ``os.waitpid``, from any hub or thread.

    gevent waits for a watched child by starting one more child watcher on
    the watcher's loop and parking on the *calling* hub: from another thread
    than that loop's (a ``ProcessPoolExecutor``'s manager thread joining
    workers the main thread forked) that touched the main loop from the
    wrong thread, and its callback failed with "Can only use Waiter.switch
    method from the Hub greenlet". Here such a caller waits, from wherever it
    is, until the watcher's own loop has recorded the exit, and then gets it
    from gevent's record.
    """
    from gevent import os as gevent_os

    watcher = gevent_os._watched_children.get(pid)
    if watcher is not None and not isinstance(watcher, tuple) and not options & os.WNOHANG:
        if isinstance(watcher, _PidfdChild):
            watcher.done.wait()  # then gevent's _on_child has recorded its status
        else:
            hub = get_hub_if_exists()
            if hub is None or hub.loop is not watcher.loop:
                _wait_recorded(gevent_os._watched_children, pid)
    return _gevent_waitpid(pid, options)


def _wait_recorded(watched: dict, pid: int) -> None:
    """Wait until gevent's ``_on_child`` has recorded ``pid``'s exit (on its own loop)."""
    with _recorded_lock:
        recorded = _recorded.get(pid)
        if recorded is None:
            recorded = _recorded[pid] = Signal()
    if not isinstance(watched.get(pid), tuple):  # registered first: no lost wake-up
        recorded.wait()


def install() -> None:
    """Idempotent: watch children of non-default loops with pidfds (needs gevent's ``patch_os``)."""
    global _installed, _gevent_watch_child, _gevent_waitpid, _gevent_execute_child
    global _gevent_on_child
    if _installed or not sys.platform.startswith("linux"):
        return
    global _native_close
    from gevent import monkey
    from gevent import os as gevent_os

    _native_close = monkey.get_original("os", "close")
    if not monkey.is_module_patched("os") or not hasattr(gevent_os, "_watch_child"):
        return
    _gevent_watch_child = gevent_os._watch_child
    _gevent_on_child = gevent_os._on_child
    gevent_os._on_child = _on_child
    gevent_os._reap_children = _reap_children
    _gevent_waitpid = gevent_os.waitpid
    gevent_os._watch_child = _watch_child
    gevent_os.waitpid = waitpid
    if os.waitpid is _gevent_waitpid:
        os.waitpid = waitpid
    from gevent import subprocess as gevent_subprocess

    _gevent_execute_child = gevent_subprocess.Popen._execute_child
    gevent_subprocess.Popen._execute_child = _execute_child
    _per_greenlet_fork_hooks()
    _installed = True

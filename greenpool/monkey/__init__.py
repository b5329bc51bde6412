"""``greenpool.monkey.patch_all()``: gevent's patching, made safe for N hubs.

gevent's ``patch_all()`` assumes one hub: its locks, events and queues wake
waiters through one loop, its sockets belong to the hub that made them, and
its "threads" are greenlets on the creating hub. A thread-style app run on
several greenpool hubs shares all of those between hubs. This module does
everything ``gevent.monkey.patch_all(**kwargs)`` does, then puts greenpool's
cross-hub versions in their place:

* :mod:`greenpool.monkey.sync`: ``threading``/``_thread``/``queue`` primitives
  that work between greenlets on any hubs, the main thread and native threads
  (the ``queue`` classes: :mod:`greenpool.monkey.queue`);
* :mod:`greenpool.monkey.gevent_primitives`: gevent's own ``gevent.queue``,
  ``gevent.event``, ``gevent.lock`` classes, ``gevent.pool`` and
  ``Greenlet.join``/``get``/``link`` work across hubs (libraries with a gevent
  driver, such as python-engineio, use them directly);
* :mod:`greenpool.monkey.sockets`: gevent sockets move to the hub of the
  greenlet that uses them;
* :mod:`greenpool.monkey.threads`: ``threading.Thread`` started outside the
  pool runs on a hub the dispatcher picks;
* :mod:`greenpool.monkey.child`: ``subprocess``, ``os.fork`` and ``os.waitpid``
  work on any hub, not only on the main thread's loop;
* :mod:`greenpool.monkey.select`: ``select.poll`` waits on the caller's hub, and
  ``poll(0)`` (a connection pool's check before each reuse) skips the loop;
* :mod:`greenpool.monkey.psycopg2` and :mod:`greenpool.monkey.mysqldb`: the C
  drivers' blocking calls run on a thread of each connection's own
  (:mod:`greenpool.monkey.dbapi`), so a query does not hold its hub
  (``psycopg2=`` chooses: offload, green, or blocking; ``mysqldb=``: offload
  or blocking), and an exhausted psycopg2 ``ThreadedConnectionPool`` waits
  for a connection instead of raising.

:mod:`greenpool.monkey.guard` refuses gevent patching that comes after
greenpool started hub threads (``import greenpool`` imports this package, so
the guard is always on).

Usage: call :func:`patch_all` first thing in the main module, or run
``python -m greenpool.monkey script.py [args]``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gevent import monkey as gevent_monkey

from greenpool import _patchstate
from greenpool.monkey import child, gevent_primitives, guard, select, sockets, sync, threads
from greenpool.monkey import mysqldb as mysqldb_patch
from greenpool.monkey import psycopg2 as psycopg2_patch

if TYPE_CHECKING:
    from greenpool.monkey.__main__ import main

__all__ = ["patch_all", "patch_psycopg2", "is_patched", "main"]


def is_patched() -> bool:
    """True once :func:`patch_all` has completed in this process."""
    return _patchstate.is_patched()


_PSYCOPG2_MODES = {"offload": "offload", "green": "green", True: "green",
                   "blocking": "blocking", False: "blocking"}


#: Chooses ``patch_all``'s psycopg2 mode when the call does not (the gunicorn worker, --patch).
PSYCOPG2_ENV = "GREENPOOL_PSYCOPG2"

_MYSQLDB_MODES = {"offload": "offload", True: "offload", "green": "green",
                  "blocking": "blocking", False: "blocking"}
#: Chooses ``patch_all``'s mysqlclient mode when the call does not.
MYSQLDB_ENV = "GREENPOOL_MYSQLDB"


def _mode(param: str, value, env: str, modes: dict, choices: str) -> str:
    """The mode ``value`` names (None: read from ``env``, default offload), or a ValueError."""
    if value is None:
        setting = os.environ.get(env, "").strip().lower() or "offload"
        if setting not in modes:  # the names (a string is never True/False)
            names = ["offload (the default)"] + [
                name for name in modes if isinstance(name, str) and name != "offload"]
            raise ValueError(f"{env}={os.environ[env]!r}: use "
                             f"{', '.join(names[:-1])} or {names[-1]}")
        value = setting
    try:
        return modes[value]
    except (KeyError, TypeError):
        raise ValueError(f"patch_all({param}={value!r}): use {choices}") from None


def patch_all(*, psycopg2: bool | str | None = None, mysqldb: bool | str | None = None,
              db_pool_timeout: float | None = None, **kwargs) -> None:
    """Patch like ``gevent.monkey.patch_all(**kwargs)``, then install the cross-hub pieces.

    ``psycopg2`` says what psycopg2's blocking calls do (:mod:`greenpool.monkey.psycopg2`):
    ``"offload"`` (the default: they run on a native thread of each
    connection's own while the hub keeps serving; a no-op without psycopg2
    installed), ``"green"``
    or ``True`` (:func:`patch_psycopg2`'s wait callback; COPY is refused) or
    ``"blocking"`` or ``False`` (each call blocks its hub, as psycopg2 does).
    Not given, it is read from the ``GREENPOOL_PSYCOPG2`` environment variable
    (default ``offload``), so servers that patch for you can be told too.
    ``mysqldb`` does the same for mysqlclient (:mod:`greenpool.monkey.mysqldb`):
    ``"offload"`` (the default, or ``True``), ``"green"`` (queries wait on
    the hub, no helper threads: cheaper, but a result the server still
    streams is read in place) or ``"blocking"`` (or ``False``), read from
    ``GREENPOOL_MYSQLDB`` when not given. ``db_pool_timeout``: seconds an
    exhausted psycopg2 ``ThreadedConnectionPool`` makes a caller wait for a
    connection before its ``PoolError`` (not given: ``GREENPOOL_DB_POOL_TIMEOUT``,
    default 30).
    Calling it again is harmless (a mode once installed stays). Called after
    greenpool started hub threads, it raises :class:`greenpool.PatchingError`
    (nothing is patched), even when gevent's own patching had already been
    done: the cross-hub pieces would come too late for the locks and sockets
    those hubs already hold.
    """
    mode = _mode("psycopg2", psycopg2, PSYCOPG2_ENV, _PSYCOPG2_MODES,
                 "'offload' (the default), 'green' (or True: psycopg2's wait callback) or "
                 "'blocking' (or False: leave psycopg2 alone)")
    mysqldb_mode = _mode("mysqldb", mysqldb, MYSQLDB_ENV, _MYSQLDB_MODES,
                         "'offload' (the default, or True), 'green' (queries wait on the hub) "
                         "or 'blocking' (or False: leave mysqlclient alone)")
    # Checked first: a bad value leaves nothing patched.
    pool_timeout = psycopg2_patch.pool_timeout(db_pool_timeout)
    if not _patchstate.patched:
        guard.refuse_if_hubs_run("greenpool.monkey.patch_all()")
        if kwargs.get("thread", True):
            sync.prepare()
    # Again: gevent's no-op for what is patched, its PatchingError for anything new.
    gevent_monkey.patch_all(**kwargs)

    if kwargs.get("thread", True):
        sync.install()
    gevent_primitives.install()
    if kwargs.get("socket", True):
        sockets.install()
    if kwargs.get("thread", True):
        threads.install()
    if kwargs.get("os", True):
        child.install()
    if kwargs.get("select", True):
        select.install()
    if mode == "green":
        patch_psycopg2()
    elif mode == "offload":
        psycopg2_patch.install_offload()
    if mode != "blocking":
        psycopg2_patch.install_pool_wait(pool_timeout)
    if mysqldb_mode == "offload":
        mysqldb_patch.install_offload()
    elif mysqldb_mode == "green":
        mysqldb_patch.install_green()
    _patchstate.patched = True


def patch_psycopg2() -> None:
    """Make psycopg2 queries wait cooperatively on the calling hub (psycogreen's callback).

    Every greenlet's query then waits on its own hub, so one hub overlaps as
    many queries as it has greenlets, with no helper threads. Not done by
    :func:`patch_all` unless asked (``psycopg2="green"`` or ``True``): in this
    mode psycopg2 refuses COPY (``copy_from``/``copy_to``/``copy_expert``) and
    large objects. (By default :func:`patch_all` offloads psycopg2's blocking
    calls to a thread of each connection's own instead, which keeps COPY working.)
    """
    psycopg2_patch.install()


def __getattr__(name: str):
    # main() lives in __main__.py, which `python -m greenpool.monkey` runs as a
    # fresh module once this package is imported: importing it here as well
    # would load it twice (runpy warns about exactly that), so only on use.
    if name == "main":
        from greenpool.monkey.__main__ import main

        return main
    raise AttributeError(f"module 'greenpool.monkey' has no attribute {name!r}")

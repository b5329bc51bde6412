"""``greenpool.monkey.patch_all()``: gevent's patching, made safe for N hubs.

gevent's ``patch_all()`` assumes one hub: its locks, events and queues wake
waiters through one loop, its sockets belong to the hub that made them, and
its "threads" are greenlets on the creating hub. A thread-style app run on
several greenpool hubs shares all of those between hubs. This module does
everything ``gevent.monkey.patch_all(**kwargs)`` does, then puts greenpool's
cross-hub versions in their place:

* ``greenpool._patch_sync``: ``threading``/``_thread``/``queue`` primitives
  that work between greenlets on any hubs, the main thread and native threads;
* ``greenpool._socket_follow``: gevent sockets move to the hub of the greenlet
  that uses them;
* ``greenpool._patch_threads``: ``threading.Thread`` started outside the pool
  runs on a hub the dispatcher picks;
* ``greenpool._patch_child``: ``subprocess``, ``os.fork`` and ``os.waitpid``
  work on any hub, not only on the main thread's loop;
* ``greenpool._patch_select``: ``select.poll`` waits on the caller's hub, and
  ``poll(0)`` (a connection pool's check before each reuse) skips the loop;
* ``greenpool._patch_psycopg2``: psycopg2's blocking calls run on a thread of
  each connection's own, so a query does not hold its hub (``psycopg2=``
  chooses: offload, green, or blocking).

Usage: call :func:`patch_all` first thing in the main module, or run
``python -m greenpool.monkey script.py [args]``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["patch_all", "patch_psycopg2", "is_patched", "main"]

_patched = False


def is_patched() -> bool:
    """True once :func:`patch_all` has completed in this process."""
    return _patched


_PSYCOPG2_MODES = {"offload": "offload", "green": "green", True: "green",
                   "blocking": "blocking", False: "blocking"}


#: Chooses ``patch_all``'s psycopg2 mode when the call does not (the gunicorn worker, --patch).
PSYCOPG2_ENV = "GREENPOOL_PSYCOPG2"


def patch_all(*, psycopg2: bool | str | None = None, **kwargs) -> None:
    """Patch like ``gevent.monkey.patch_all(**kwargs)``, then install the cross-hub pieces.

    ``psycopg2`` says what psycopg2's blocking calls do (``greenpool._patch_psycopg2``):
    ``"offload"`` (the default: they run on a native thread of each
    connection's own while the hub keeps serving; a no-op without psycopg2
    installed), ``"green"``
    or ``True`` (:func:`patch_psycopg2`'s wait callback; COPY is refused) or
    ``"blocking"`` or ``False`` (each call blocks its hub, as psycopg2 does).
    Not given, it is read from the ``GREENPOOL_PSYCOPG2`` environment variable
    (default ``offload``), so servers that patch for you can be told too.
    Calling it again is harmless (a mode once installed stays). Called after
    greenpool started hub threads, it raises :class:`greenpool.PatchingError`
    (nothing is patched), even when gevent's own patching had already been
    done: the cross-hub pieces would come too late for the locks and sockets
    those hubs already hold.
    """
    global _patched
    if psycopg2 is None:
        setting = os.environ.get(PSYCOPG2_ENV, "").strip().lower() or "offload"
        if setting not in _PSYCOPG2_MODES:  # the three names (a string is never True/False)
            raise ValueError(
                f"{PSYCOPG2_ENV}={os.environ[PSYCOPG2_ENV]!r}: use offload (the default), green "
                "(psycopg2's wait callback) or blocking (leave psycopg2 alone)"
            )
        psycopg2 = setting
    try:
        mode = _PSYCOPG2_MODES[psycopg2]
    except (KeyError, TypeError):
        raise ValueError(
            f"patch_all(psycopg2={psycopg2!r}): use 'offload' (the default), 'green' (or True: "
            "psycopg2's wait callback) or 'blocking' (or False: leave psycopg2 alone)"
        ) from None
    from gevent import monkey

    if not _patched:
        from greenpool.patching import refuse_if_hubs_run

        refuse_if_hubs_run("greenpool.monkey.patch_all()")
    from greenpool import _patch_child, _patch_select, _patch_sync, _patch_threads, _socket_follow

    if kwargs.get("thread", True) and not _patched:
        _patch_sync.prepare()
    # Again: gevent's no-op for what is patched, its PatchingError for anything new.
    monkey.patch_all(**kwargs)

    if kwargs.get("thread", True):
        _patch_sync.install()
    if kwargs.get("socket", True):
        _socket_follow.install()
    if kwargs.get("thread", True):
        _patch_threads.install()
    if kwargs.get("os", True):
        _patch_child.install()
    if kwargs.get("select", True):
        _patch_select.install()
    if mode == "green":
        patch_psycopg2()
    elif mode == "offload":
        from greenpool import _patch_psycopg2

        _patch_psycopg2.install_offload()
    _patched = True


def patch_psycopg2() -> None:
    """Make psycopg2 queries wait cooperatively on the calling hub (psycogreen's callback).

    Every greenlet's query then waits on its own hub, so one hub overlaps as
    many queries as it has greenlets, with no helper threads. Not done by
    :func:`patch_all` unless asked (``psycopg2="green"`` or ``True``): in this
    mode psycopg2 refuses COPY (``copy_from``/``copy_to``/``copy_expert``) and
    large objects. (By default :func:`patch_all` offloads psycopg2's blocking
    calls to a thread of each connection's own instead, which keeps COPY working.)
    """
    from greenpool import _patch_psycopg2

    _patch_psycopg2.install()


_USAGE = """usage: python -m greenpool.monkey [--module] SCRIPT_OR_MODULE [ARGS...]

Run a script (or, with --module, a module as with python -m) after
greenpool.monkey.patch_all(), as `python -m gevent.monkey` does with gevent's
patching."""


def main(argv: list[str] | None = None) -> None:
    """``python -m greenpool.monkey [--module] script.py [args]``."""
    import runpy

    argv = list(sys.argv[1:] if argv is None else argv)
    as_module = False
    if argv and argv[0] == "--module":
        as_module = True
        del argv[0]
    if not argv or argv[0] in ("-h", "--help"):
        print(_USAGE)
        if not argv:
            sys.exit(2)
        return
    if argv[0].startswith("-"):
        sys.exit(f"{_USAGE}\n\nunknown option {argv[0]!r}")
    # Patch through the importable module, not this __main__ copy of it, so
    # greenpool.monkey.is_patched() (and a second patch_all()) see one state.
    from greenpool import monkey

    monkey.patch_all()
    sys.argv[:] = argv
    if as_module:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()

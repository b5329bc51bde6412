"""psycopg2 queries that wait on the hub instead of blocking its thread (opt-in).

psycopg2 is a C driver: without help, every query blocks the hub's whole
thread (other hubs keep serving: that is what N hubs are for, but one hub
then runs one query at a time). psycopg2's wait-callback protocol lets a
coroutine library take over the waits; this is psycogreen's callback, which
waits with ``gevent.socket.wait_read``/``wait_write`` on the *calling* hub's
loop, so a connection handed from hub to hub (a ``ThreadedConnectionPool``)
keeps working: the descriptor is watched wherever it is used.

Opt-in, because psycopg2 refuses some calls in this mode (``copy_from``,
``copy_to``, ``copy_expert`` raise ``ProgrammingError``, as do large objects):
an app that uses them would break if patching turned it on by itself.
"""

from __future__ import annotations

__all__ = ["install", "wait_callback"]


def wait_callback(conn, timeout=None) -> None:
    """psycopg2 wait callback: poll the connection, waiting cooperatively on this hub."""
    from gevent.socket import wait_read, wait_write
    from psycopg2 import OperationalError, extensions

    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state == extensions.POLL_READ:
            wait_read(conn.fileno(), timeout=timeout)
        elif state == extensions.POLL_WRITE:
            wait_write(conn.fileno(), timeout=timeout)
        else:
            raise OperationalError(f"bad state from poll: {state}")


def install() -> None:
    """Register :func:`wait_callback` with psycopg2 (ImportError if it is not installed)."""
    try:
        from psycopg2 import extensions
    except ImportError as exc:
        raise ImportError(
            "greenpool.monkey.patch_psycopg2() needs psycopg2 (pip install psycopg2-binary); "
            "leave psycopg2=False in patch_all() when the app does not use it"
        ) from exc
    extensions.set_wait_callback(wait_callback)

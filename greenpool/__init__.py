"""greenpool: a pool of native threads, each running its own gevent hub.

Blocking-style, I/O-heavy code runs as greenlets; a greenlet stays on the hub
that started it, so its sockets never cross threads. See the README.
"""

from typing import Any

from greenpool.api import blocking, current_hub, current_pool, default_pool, run, spawn
from greenpool.errors import (
    BrokenPool,
    CancelledError,
    PatchingError,
    PoolFull,
    TimeoutError,
    WrongHubError,
)
from greenpool.future import Future
from greenpool.hub import Hub
from greenpool.monitor import HubStats
from greenpool.pool import Pool
from greenpool.rebind import rebind
from greenpool.sync import BoundedSemaphore, Condition, Event, Lock, Queue, RLock, Semaphore
from greenpool.waiting import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    as_completed,
    wait,
)

# isort: split
# Last, on top of the core (it imports the pool, never the other way): the
# patching guard, on with every `import greenpool` (gevent patching after hubs
# started raises PatchingError; a Pool warns when gevent alone patched).
from greenpool import monkey as monkey
from greenpool._version import __version__ as __version__


def __getattr__(name: str) -> Any:
    # The servers import gevent.ssl and so the stdlib ssl module; imported
    # eagerly, they would make a patch_all() that follows `import greenpool`
    # warn that ssl was imported before patching.
    if name == "serve":
        from greenpool.server import serve

        return serve
    raise AttributeError(f"module 'greenpool' has no attribute {name!r}")


__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BoundedSemaphore",
    "BrokenPool",
    "CancelledError",
    "Condition",
    "Event",
    "Future",
    "Hub",
    "HubStats",
    "Lock",
    "PatchingError",
    "Pool",
    "PoolFull",
    "Queue",
    "RLock",
    "Semaphore",
    "TimeoutError",
    "WrongHubError",
    "as_completed",
    "blocking",
    "current_hub",
    "current_pool",
    "default_pool",
    "rebind",
    "run",
    "serve",
    "spawn",
    "wait",
]

"""greenpool: a pool of native threads, each running its own gevent hub.

Blocking-style, I/O-heavy code runs as greenlets; a greenlet stays on the hub
that started it, so its sockets never cross threads. See the README.
"""

from greenpool.api import blocking, current_hub, current_pool, default_pool, run, spawn
from greenpool.errors import BrokenPool, CancelledError, PoolFull, TimeoutError, WrongHubError
from greenpool.future import Future
from greenpool.hub import Hub
from greenpool.patching import PatchingError
from greenpool.pool import Pool
from greenpool.rebind import rebind
from greenpool.server import serve
from greenpool.sync import BoundedSemaphore, Condition, Event, Lock, Queue, RLock, Semaphore

__version__ = "0.1.0"

__all__ = [
    "BoundedSemaphore",
    "BrokenPool",
    "CancelledError",
    "Condition",
    "Event",
    "Future",
    "Hub",
    "Lock",
    "PatchingError",
    "Pool",
    "PoolFull",
    "Queue",
    "RLock",
    "Semaphore",
    "TimeoutError",
    "WrongHubError",
    "blocking",
    "current_hub",
    "current_pool",
    "default_pool",
    "rebind",
    "run",
    "serve",
    "spawn",
]

"""greenpool's optional C extensions, or None each.

None where one was not built (no C compiler at install time) or when
``GREENPOOL_PURE_PYTHON=1`` asks for the pure-Python twins (as gevent's
``PURE_PYTHON``); every user of them has one, and the tests run both.

* ``speedups`` (``greenpool/_speedups.c``): the stdlib queue's put/get
  (:mod:`greenpool.monkey.queue`) and a socket's same-hub wait and recv
  (:mod:`greenpool.monkey.sockets`);
* ``gevent_speedups`` (``greenpool/_speedups_gevent.c``): the put/get of
  gevent's queues made cross-hub (:mod:`greenpool.monkey.gevent_primitives.queue`);
* ``waiter_speedups`` (``greenpool/_speedups_waiter.c``): the ``Entry`` and
  ``PoolHubWaiter`` every park makes (:mod:`greenpool._waiter`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _load(name: str) -> ModuleType | None:
    if os.environ.get("GREENPOOL_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(f"greenpool.{name}")
    except ImportError:  # built without a C compiler
        return None


speedups: ModuleType | None = _load("_speedups")
gevent_speedups: ModuleType | None = _load("_speedups_gevent")
waiter_speedups: ModuleType | None = _load("_speedups_waiter")

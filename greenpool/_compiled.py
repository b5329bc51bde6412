"""greenpool's optional C extension (``greenpool/_speedups.c``), or None.

None where it was not built (no C compiler at install time) or when
``GREENPOOL_PURE_PYTHON=1`` asks for the pure-Python twins (as gevent's
``PURE_PYTHON``); every user of it has one, and the tests run both.
"""

from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None = None
if not os.environ.get("GREENPOOL_PURE_PYTHON"):
    try:
        from greenpool import _speedups as speedups
    except ImportError:  # built without a C compiler
        speedups = None

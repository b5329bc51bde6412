"""greenpool's optional C extension (``greenpool/_speedups.c``), or None.

None where it was not built (no C compiler at install time) or when
``GREENPOOL_PURE_PYTHON=1`` asks for the pure-Python twins (as gevent's
``PURE_PYTHON``); every user of it has one, and the tests run both.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("GREENPOOL_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module("greenpool._speedups")
    except ImportError:  # built without a C compiler
        return None


speedups: ModuleType | None = _load()

"""``python -m greenpool.monkey [--module] script.py [args]``: run an app after patching.

:func:`main` is also importable as ``greenpool.monkey.main``.
"""

from __future__ import annotations

import os
import runpy
import sys

# The importable package's patch_all (this module only runs the app), so that
# greenpool.monkey.is_patched() and a second patch_all() see one state.
from greenpool.monkey import patch_all

__all__ = ["main"]

_USAGE = """usage: python -m greenpool.monkey [--module] SCRIPT_OR_MODULE [ARGS...]

Run a script (or, with --module, a module as with python -m) after
greenpool.monkey.patch_all(), as `python -m gevent.monkey` does with gevent's
patching."""


def main(argv: list[str] | None = None) -> None:
    """``python -m greenpool.monkey [--module] script.py [args]``."""
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
    patch_all()
    sys.argv[:] = argv
    if as_module:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()

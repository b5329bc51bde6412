"""Whether ``greenpool.monkey.patch_all()`` has completed in this process.

A leaf (it imports nothing of greenpool), so that the core modules can ask
without importing :mod:`greenpool.monkey`: :func:`greenpool.monkey.patch_all`
sets :data:`patched`, and :mod:`greenpool.sync` and the patching guard read it.
"""

from __future__ import annotations

__all__ = ["is_patched", "patched"]

#: Set by ``greenpool.monkey.patch_all()`` once it has completed; never reset.
patched = False


def is_patched() -> bool:
    """True once :func:`greenpool.monkey.patch_all` has completed in this process."""
    return patched

"""Which greenpool hub runs the calling thread: the one question every layer asks.

A leaf module (gevent only), so that :mod:`greenpool.future` can ask it without
importing :mod:`greenpool.hub`, which imports the future: the dependency runs
one way, hub -> future. :mod:`greenpool.hub` re-exports :func:`current_hub`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gevent._hub_local import get_hub_if_exists

if TYPE_CHECKING:
    from greenpool.hub import Hub

__all__ = ["current_hub"]


def current_hub() -> Hub | None:
    """The greenpool :class:`~greenpool.Hub` whose thread is calling, or None outside any pool."""
    gevent_hub = get_hub_if_exists()
    if gevent_hub is None:
        return None
    return getattr(gevent_hub, "greenpool_hub", None)

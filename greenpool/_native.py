"""The real (never monkey-patched) threading primitives greenpool is built on.

After ``gevent.monkey.patch_all()`` the names in ``threading`` and ``_thread``
make greenlets and gevent locks. Hub threads must be native OS threads and a
plain thread must block natively, so everything here comes from
``gevent.monkey.get_original``, which returns the unpatched functions whether or
not patching has happened (the same approach gevent's own threadpool takes).
"""

from __future__ import annotations

from gevent.monkey import get_original

allocate_lock, start_new_thread, get_ident, RLock = get_original(
    "_thread", ["allocate_lock", "start_new_thread", "get_ident", "RLock"]
)

"""Mixed profile: short requests plus a fraction that make a blocking, unpatched call.

Nine in ten requests are ``GET /``; one in ten is ``GET /block?ms=5``, which
stalls the hub serving it for 5 ms (an unpatched ``time.sleep``). With one hub
every request waits behind the stalls; with more hubs the other hubs keep
serving, so compare the ``GET /`` percentiles between ``--hubs 1`` and
``--hubs 2``. ``LOADTEST_BLOCK_MS`` and ``LOADTEST_BLOCK_WEIGHT`` change the
stall and its share (weight against 9 fast requests).
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant, task

BLOCK_MS = int(os.environ.get("LOADTEST_BLOCK_MS", "5"))
BLOCK_WEIGHT = int(os.environ.get("LOADTEST_BLOCK_WEIGHT", "1"))


class MixedUser(FastHttpUser):
    """Mostly fast requests, some that block their hub."""

    wait_time = constant(0)
    connection_timeout = 5.0
    network_timeout = 5.0

    @task(9)
    def fast(self) -> None:
        self.client.get("/")

    @task(BLOCK_WEIGHT)
    def blocking(self) -> None:
        self.client.get(f"/block?ms={BLOCK_MS}", name=f"/block ({BLOCK_MS} ms)")

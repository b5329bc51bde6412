"""Legacy profile: keep-alive ``GET /?item=N`` against examples/legacy_flask_app.py.

Each request makes the app call its upstream through a shared
``requests.Session``, run a 5 ms PostgreSQL query from a shared
``ThreadedConnectionPool``, read a lock-guarded cache and queue an item to a
background thread. A response counts as failed unless it is a 200 whose JSON
echoes the item and reports the query's row.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, constant, task

ITEMS = 64


class LegacyUser(FastHttpUser):
    """Back-to-back requests for one of ITEMS items on one keep-alive connection per user."""

    wait_time = constant(0)
    connection_timeout = 5.0
    network_timeout = 15.0

    @task
    def item(self) -> None:
        item = str(random.randrange(ITEMS))
        with self.client.get(f"/?item={item}", name="/?item=N", catch_response=True) as response:
            if response.status_code != 200:
                return  # already a failure
            try:
                answer = response.json()
            except ValueError:
                response.failure("the answer is not JSON")
                return
            if answer.get("item") != item or answer.get("db") is not True:
                response.failure(f"wrong answer for item {item}: {answer}")

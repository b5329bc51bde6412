"""HTTP profile: keep-alive ``GET /`` against the harness's WSGI app, no think time."""

from __future__ import annotations

from locust import FastHttpUser, constant, task


class HelloUser(FastHttpUser):
    """Back-to-back ``GET /`` on one keep-alive connection per user."""

    wait_time = constant(0)
    connection_timeout = 5.0
    network_timeout = 5.0

    @task
    def hello(self) -> None:
        self.client.get("/")

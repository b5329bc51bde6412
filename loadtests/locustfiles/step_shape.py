"""A stepped load shape for finding the knee of the throughput curve.

Adds users in ``LOADTEST_STEPS`` equal steps (default 5) up to ``--users``,
each step held for an equal share of ``--run-time``, then stops. Load it next
to a profile: ``-f loadtests/locustfiles/http_user.py,loadtests/locustfiles/step_shape.py``.
The runner's ``--shape`` does that and prints requests/s per step from
locust's ``_stats_history.csv``; the step where requests/s stops growing while
latency climbs is the knee.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape

DEFAULT_RUN_TIME = 60


class StepShape(LoadTestShape):
    """users = max_users * step / steps, stepping every run_time / steps seconds."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.steps = max(1, int(os.environ.get("LOADTEST_STEPS", "5")))

    def _options(self) -> tuple[int, float, float]:
        options = self.runner.environment.parsed_options if self.runner else None
        max_users = (options.num_users if options else None) or self.steps
        rate = (options.spawn_rate if options else None) or max_users
        run_time = (options.run_time if options else None) or DEFAULT_RUN_TIME
        return max_users, float(rate), float(run_time)

    def tick(self) -> tuple[int, float] | None:
        max_users, rate, run_time = self._options()
        elapsed = self.get_run_time()
        if elapsed >= run_time:
            return None
        step = min(self.steps, math.floor(elapsed / (run_time / self.steps)) + 1)
        return max(1, math.ceil(max_users * step / self.steps)), rate

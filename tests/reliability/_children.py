"""Reaping forked children in the fork tests' subprocess scripts (no test imports here)."""

from __future__ import annotations

import os
import time


def wait_child(pid: int, timeout: float, interval: float = 0.002) -> int | str:
    """The exit code of child ``pid``; after ``timeout`` s it is killed and reported "hung"."""
    deadline = time.monotonic() + timeout
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(interval)

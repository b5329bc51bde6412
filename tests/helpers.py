"""Test helpers shared by several test modules."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_python(code: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for monkey patching, fork, signals)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )

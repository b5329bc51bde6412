"""CPython's own lock and queue tests, after greenpool.monkey.patch_all(), helpers on 4 hubs.

The vendored ``_lock_tests.py``/``_queue_tests.py`` are the specification of
``threading``'s and ``queue``'s primitives (see NOTICE.md); each run is a child
process, since patching cannot be undone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("run_stdlib_tests.py")


def run(*args: str, env: dict | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
    )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["hubs", "mixed"])
def test_cpython_lock_and_queue_tests_pass_with_helpers_on_other_hubs(mode):
    proc = run(mode)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert f"RESULT mode={mode} run=" in output and "failures=0 errors=0" in output, output[-3000:]


@pytest.mark.timeout(120)
def test_the_suite_catches_gevents_event_waited_on_several_hubs():
    """Negative control: the same EventTests fail with gevent's one-hub Event."""
    proc = run("hubs", "EventTests", env={"GREENPOOL_STDLIB_CONTROL": "gevent"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "InvalidThreadUseError" in output, output[-3000:]


@pytest.mark.timeout(120)
def test_gevents_event_after_greenpool_patch_all_passes_the_same_event_tests():
    """gevent.event.Event, made cross-hub by patch_all, passes where gevent's own fails."""
    proc = run("hubs", "EventTests", env={"GREENPOOL_STDLIB_CONTROL": "gevent-patched"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "failures=0 errors=0" in output, output[-3000:]

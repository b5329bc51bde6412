"""Test helpers shared by several test modules."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

import greenpool

#: How long a fixture waits for a pool's hubs to stop after its test. Bounded
#: because pytest-timeout stops timing a test once it has failed: an unbounded
#: shutdown(wait=True) in the teardown of a failed test could hang the run.
TEARDOWN_SECONDS = 30.0


def shut_down(p: greenpool.Pool) -> None:
    """Cancel what is left on ``p`` and wait (bounded) for its hubs to stop."""
    p.shutdown(wait=False, cancel_futures=True)
    stuck = [hub.name for hub in p.hubs if not hub.wait_stopped(TEARDOWN_SECONDS)]
    assert not stuck, f"hubs {stuck} still running {TEARDOWN_SECONDS:g}s after the test"


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "the condition",
    interval: float = 0.005,
) -> object:
    """Poll a condition other threads make true; fail naming ``what`` after ``timeout`` s.

    For states a test cannot be told about (a counter on a hub, a kernel
    queue): bounded, so never a timing guess. Returns the truthy value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def raw_request(address, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


#: Source for child processes that ``patch_all()``: ``native(fn, *args)`` runs
#: ``fn`` in a plain native thread and returns a ``greenpool.Future`` for its result.
NATIVE_THREAD_SOURCE = """
from gevent.monkey import get_original as _get_original
native_start = _get_original("_thread", "start_new_thread")

def native(fn, *args):
    done = greenpool.Future()
    def run():
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
    native_start(run, ())
    return done
"""


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


def run_python_ok(code: str, timeout: float = 60) -> str:
    """Run ``code`` as :func:`run_python` does; its stripped stdout, or fail with its output."""
    proc = run_python(code, timeout=timeout)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout.strip()


def make_certificate(directory) -> tuple[str, str]:
    """A self-signed EC certificate for localhost/127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command line tool to make a test certificate")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def need_service(name: str, port: int) -> None:
    """Skip (fail under CI=true) unless ``name`` accepts connections on 127.0.0.1:``port``.

    A user's laptop may not run PostgreSQL, MariaDB or Redis; CI does, and there
    a skipped proof is no proof.
    """
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        message = f"{name} is not reachable on 127.0.0.1:{port} ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true requires it")
        pytest.skip(f"{message}: start it to run this test")

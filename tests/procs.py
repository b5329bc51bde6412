"""A server started as a real subprocess, for the CLI and gunicorn tests.

Output (stdout and stderr merged) is read by a thread into a list, so tests
wait for a log line with a deadline instead of sleeping, and the process is
always killed at the end even if an assertion failed.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time


class ServerProcess:
    """``cmd`` running in ``cwd``; use as a context manager (kills it on exit)."""

    def __init__(self, cmd: list[str], cwd=None, env: dict | None = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """Wait until a line matches ``pattern``; fail with the output so far."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {pattern!r} within {timeout}s "
                        f"(exit code {self.proc.poll()}); output:\n{''.join(self.lines)}"
                    )
                self._changed.wait(min(left, 0.5))

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to end; return its exit code."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s; output:\n{self.output}")
        self._reader.join(timeout)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        self.proc.stdout.close()


def python_cmd(*args: str) -> list[str]:
    """``python args...`` with the interpreter running the tests."""
    return [sys.executable, *args]


def get(address: tuple[str, int], path: str = "/", timeout: float = 10.0):
    """One HTTP GET on a new connection; returns (status, body bytes)."""
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until_answers(port: int, path: str, timeout: float = 30.0) -> None:
    """A server listens before its worker has loaded the app: wait for a first 200 on ``path``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if get(("127.0.0.1", port), path, timeout=10)[0] == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer on port {port} within {timeout} s")
        time.sleep(0.1)


__all__ = ["ServerProcess", "get", "python_cmd", "wait_until_answers"]


def check_graceful_sigterm(server: ServerProcess, address: tuple[str, int]) -> bytes:
    """SIGTERM with one request in flight and one idle keep-alive connection open.

    The app's ``/stream`` must answer ``first\\nsecond\\n`` in two writes. The
    in-flight response must complete, and the idle connection must not hold
    the stop for the graceful timeout: the process exits 0 within 10 s.
    Returns the idle connection's one answer.
    """
    idle = http.client.HTTPConnection(*address, timeout=10)
    idle.request("GET", "/")
    idle_answer = idle.getresponse().read()
    assert idle_answer
    busy = http.client.HTTPConnection(*address, timeout=10)
    busy.request("GET", "/stream")
    response = busy.getresponse()  # headers are out: the request is in flight
    server.proc.send_signal(signal.SIGTERM)
    assert response.read() == b"first\nsecond\n"
    assert server.wait_exit(timeout=10) == 0
    idle.close()
    busy.close()
    return idle_answer

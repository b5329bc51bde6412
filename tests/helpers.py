"""Test helpers shared by several test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest


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

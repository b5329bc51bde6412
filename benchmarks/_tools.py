"""What the benchmark scripts share: progress lines and finding (or installing) wrk.

Imported as ``_tools`` by scripts run as ``python benchmarks/X.py`` (their folder
is then first on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import subprocess


def log(message: str) -> None:
    print(message, flush=True)


def ensure_wrk() -> str | None:
    """wrk's path; installs it with apt-get when running as root, else None."""
    path = shutil.which("wrk")
    if path or os.geteuid() != 0 or not shutil.which("apt-get"):
        return path
    log("wrk not found; installing it: apt-get install -y wrk")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
    return shutil.which("wrk")

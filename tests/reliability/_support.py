"""Helpers shared by the reliability tests: sizes, the ledger, process figures.

Every reliability test runs at two sizes from one body: ``fast`` (unmarked,
part of ``make test``) and ``full`` (``@pytest.mark.slow``, run by
``make stress``). Each records one :class:`Row` in the session ledger, which
``conftest.py`` prints as a table at the end of the run.
"""

from __future__ import annotations

import gc
import os
import resource
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import wait_until  # noqa: F401 - the reliability tests import it from here

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: The repository root: the working directory of helper processes that import ``tests``.
REPO_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Row:
    """One line of the reliability table: what was tried, how much, what was lost."""

    check: str
    variant: str
    order: tuple  # (test file, line, variant): the table lists rows in source order
    amount: str
    lost: int
    figure: str


#: Rows recorded during this session (printed sorted by ``Row.order``).
LEDGER: list[Row] = []


def sized(fast, full, *, fast_timeout: float = 30, full_timeout: float = 300):
    """Parametrize a test body by size: ``fast`` unmarked, ``full`` slow.

    Each variant gets its own explicit timeout, so even the full-size run
    stops by itself.
    """
    return pytest.mark.parametrize(
        "size",
        [
            pytest.param(fast, id="fast", marks=pytest.mark.timeout(fast_timeout)),
            pytest.param(
                full,
                id="full",
                marks=(pytest.mark.slow, pytest.mark.timeout(full_timeout)),
            ),
        ],
    )


def rss_bytes() -> int:
    """Resident set size of this process now (from /proc/self/statm)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def open_fds() -> frozenset[tuple[int, str]]:
    """The descriptors this process holds open now, as (number, target) pairs.

    Garbage is collected first, so sockets an earlier test dropped are closed
    before the snapshot rather than in the middle of the one being measured.
    The descriptor ``listdir`` itself opens on /proc/self/fd is left out.
    """
    gc.collect()
    fd_dir = "/proc/self/fd"
    listing = set()
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
        listing.add((int(name), target))
    return frozenset(listing)


def leaked_fds(before: frozenset[tuple[int, str]], after: frozenset[tuple[int, str]]) -> list:
    """Descriptors open in ``after`` that were not open in ``before``.

    A leak is a descriptor the code under test opened and never closed; one that
    something else closed meanwhile (a collected socket of an earlier test) is not,
    so this compares sets instead of counts.
    """
    return sorted(after - before)


def raise_fd_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to at least ``needed``; skip if the hard one is lower.

    Returns the previous soft limit, for :func:`restore_fd_limit`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        hard = needed  # allowed with CAP_SYS_RESOURCE (e.g. as root), else skipped below
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError):
        pytest.skip(
            f"needs {needed} open files, but RLIMIT_NOFILE's hard limit is "
            f"{resource.getrlimit(resource.RLIMIT_NOFILE)[1]} (raise it with `ulimit -Hn`)"
        )
    return soft


def restore_fd_limit(soft: int) -> None:
    """Put RLIMIT_NOFILE's soft limit back (the hard one is left as it is)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` (0..1) quantile of ``samples``, nearest-rank."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"

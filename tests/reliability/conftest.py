"""The reliability ledger: a ``record`` fixture and a table printed after the run."""

from __future__ import annotations

import pytest

from tests.reliability._support import LEDGER, Row

_COLUMNS = ("check", "variant", "amount", "lost", "figure")


@pytest.fixture
def record(request):
    """``record(check, amount, lost, figure)`` adds this test's row to the table.

    Record before asserting ``lost == 0``, so a failing run still shows what
    was lost.
    """
    variant = "full" if request.node.get_closest_marker("slow") else "fast"
    path, line, _ = request.node.location

    def add(check: str, amount: str, lost: int, figure: str) -> None:
        LEDGER.append(Row(check, variant, (path, line, variant), amount, lost, figure))

    return add


def format_table(rows: list[Row]) -> list[str]:
    """The ledger as a Markdown table (it goes into the README as it is)."""
    cells = [_COLUMNS] + [
        (r.check, r.variant, r.amount, str(r.lost), r.figure) for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]

    def line(row) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(cells[0]), rule] + [line(row) for row in cells[1:]]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not LEDGER:
        return
    terminalreporter.write_sep("=", "reliability: what was tried and what was lost")
    for text in format_table(sorted(LEDGER, key=lambda row: row.order)):
        terminalreporter.write_line(text)

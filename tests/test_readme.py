"""The README is a landing page that stays true: its tour runs, its links lead somewhere.

Its Python blocks run in a fresh interpreter (tests/docblocks.py, as the docs'
blocks do) and print what they say; it starts with the two commands, stays
short, and its relative links (into docs/) point at files that exist.
"""

from __future__ import annotations

import re

import pytest

from tests.docblocks import ROOT, check_block, python_blocks, run_block

README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
BLOCKS = python_blocks(README)

# What each tour block must print, by a line that identifies it.
EXPECTED = {
    'pool.broadcast(print, "once per hub")': ["once per hub", "[1, 2]"],
    "def handler(n):": ["[0, 2, 4, 6]"],
    "def echo(sock, addr):": ["b'hello'"],
}


def test_readme_has_a_runnable_tour():
    assert len(BLOCKS) >= 3
    for key in EXPECTED:
        assert any(key in block.code for block in BLOCKS), f"no README block contains {key!r}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block, tmp_path):
    for key, expected in EXPECTED.items():
        if key in block.code:
            block.expect.extend(expected)
    check_block(block, tmp_path)


@pytest.mark.timeout(60)
def test_readme_tour_broadcast_reaches_every_hub(tmp_path):
    block = next(b for b in BLOCKS if "once per hub" in b.code)
    result = run_block(block, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("once per hub") == 4


def test_readme_starts_with_the_two_commands():
    lines = [line.strip() for line in TEXT.splitlines() if line.strip()]
    assert lines[0] == "# greenpool"
    assert lines[1].startswith("make demo") and lines[2].startswith("make test"), lines[:3]


def test_readme_is_a_landing_page():
    assert len(TEXT) <= 12_000, f"README.md is {len(TEXT)} characters; move detail into docs/"


def test_readme_links_resolve_and_cover_the_docs():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEXT)
    local = [link for link in links if "://" not in link]
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")}
    pages.discard("docs/index.md")
    missing = sorted(pages - set(local))
    assert not missing, f"docs pages the README does not link: {missing}"

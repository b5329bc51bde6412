"""The code blocks of the README and docs/*.md, for the tests that run them.

Conventions in the Markdown (see docs/index.md, "Conventions"):

* every fenced ``python`` block runs as a script, in a fresh interpreter, and must
  exit 0 within the timeout;
* ``<!-- test: skip REASON -->`` on a line of its own just above the fence
  marks a block that must not run (a server that runs until Ctrl-C, a fragment,
  a file for another tool); it is still compiled, so its syntax cannot rot;
* ``<!-- test: expect TEXT -->`` just above the fence (one or more) says the
  block's standard output must contain TEXT.

Blocks inside admonitions (indented) count too; other languages (``text``,
``shell``...) are never run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)(?P<attrs>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*test:\s*(?P<what>skip|expect)\b\s*(?P<arg>.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None = None  # the reason, when marked skip
    expect: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every fenced ``python`` block of ``path``, with its test markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match or not match.group("lang"):
            i += 1
            continue
        indent, lang = match.group("indent"), match.group("lang")
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path}:{start + 1}: code block never closed")
        i += 1
        if lang != "python":
            continue
        block = Block(path, start + 1, textwrap.dedent("\n".join(body)) + "\n")
        j = start - 1
        while j >= 0 and (marker := _MARKER.match(lines[j])):
            if marker.group("what") == "skip":
                block.skip = marker.group("arg") or "marked skip"
            else:
                block.expect.append(marker.group("arg"))
            j -= 1
        if indent and not all(not line.strip() or line.startswith(indent) for line in body):
            raise ValueError(f"{path}:{start + 1}: block body is indented less than its fence")
        blocks.append(block)
    return blocks


def run_block(block: Block, cwd: Path, timeout: float = 50) -> subprocess.CompletedProcess:
    """Run ``block`` as a script in a fresh interpreter; the result, for the caller to judge."""
    script = cwd / "block.py"
    script.write_text(block.code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def check_block(block: Block, cwd: Path, timeout: float = 50) -> None:
    """Assert that ``block`` runs cleanly and prints what its markers expect."""
    result = run_block(block, cwd, timeout)
    assert result.returncode == 0, (
        f"{block.id}: the block exited {result.returncode}\n--- stdout\n{result.stdout}"
        f"\n--- stderr\n{result.stderr}"
    )
    for text in block.expect:
        assert text in result.stdout, (
            f"{block.id}: expected {text!r} in its output\n--- stdout\n{result.stdout}"
        )

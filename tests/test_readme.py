"""The README's tour is runnable: its first two Python blocks run and print what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("index", [0, 1])
def test_readme_tour_block_runs(index, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        capture_output=True, text=True, timeout=50, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    if index == 0:
        assert result.stdout.count("once per hub") == 4
    else:
        assert "[0, 2, 4, 6]" in result.stdout

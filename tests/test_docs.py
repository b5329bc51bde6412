"""The docs cannot rot: their code runs, their reference covers the API, their build is strict.

* Every ``python`` block of the tutorial, the how-to guides and the other prose pages
  runs in a fresh interpreter (tests/docblocks.py has the conventions); blocks marked
  ``<!-- test: skip ... -->`` are compiled only.
* Every name in ``greenpool.__all__`` has a ``::: ...`` directive in docs/reference/,
  and every directive names something that exists.
* The CLI reference is rendered from the parser, and the gunicorn settings table names
  every setting the worker reads.
* With the ``docs`` extra installed (``make docs``), the strict build passes, and a
  broken reference or link fails it with a message naming the page.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docblocks import ROOT, check_block, python_blocks

DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
PROSE = sorted(p for p in DOCS.rglob("*.md") if REFERENCE not in p.parents)
BLOCKS = [block for page in PROSE for block in python_blocks(page)]
RUNNABLE = [b for b in BLOCKS if b.skip is None]
DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.M)


def _directives() -> list[str]:
    pages = sorted(REFERENCE.glob("*.md"))
    return [target for page in pages for target in DIRECTIVE.findall(page.read_text())]


def test_the_guides_have_code_that_runs():
    tutorial = [b for b in RUNNABLE if "tutorial" in b.path.parts]
    guides = [b for b in RUNNABLE if "how-to" in b.path.parts]
    assert len(tutorial) >= 8 and len(guides) >= 8, (len(tutorial), len(guides))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_docs_code_block_runs(block, tmp_path):
    check_block(block, tmp_path)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_docs_code_block_compiles(block):
    compile(block.code, block.id, "exec")


def test_every_public_name_is_in_the_reference():
    import greenpool

    documented = {target.rsplit(".", 1)[-1] for target in _directives()}
    missing = sorted(set(greenpool.__all__) - documented)
    assert not missing, f"in greenpool.__all__ but no ::: directive in docs/reference: {missing}"


def test_every_reference_directive_names_something_real():
    for target in _directives():
        parts = target.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"::: {target}: {attr!r} does not exist"
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(f"::: {target}: no such module")


def test_modules_the_issue_names_are_in_the_reference():
    targets = set(_directives())
    for module in ("greenpool.monkey", "greenpool.wsgi", "greenpool.gunicorn"):
        assert any(t == module or t.startswith(module + ".") for t in targets), module


def _load_hooks():
    spec = importlib.util.spec_from_file_location("greenpool_docs_hooks", DOCS / "hooks.py")
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (make docs installs the docs extra)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_rendered_from_the_parser():
    from greenpool.__main__ import build_parser

    assert "<!-- greenpool:cli -->" in (REFERENCE / "cli.md").read_text()
    rendered = _load_hooks().render_cli()
    parser = build_parser()
    wsgi = next(a for a in parser._actions if a.choices and "wsgi" in a.choices).choices["wsgi"]
    for action in wsgi._actions:
        if action.dest == "help":
            continue
        for option in action.option_strings:
            assert f"`{option}`" in rendered, option
        if action.help:
            assert " ".join(action.help.split())[:40] in rendered, action.help


def test_gunicorn_settings_table_covers_what_the_worker_reads():
    page = (REFERENCE / "gunicorn.md").read_text()
    table = set(re.findall(r"^\| `(\w+)`", page, re.M))
    source = (ROOT / "greenpool" / "gunicorn.py").read_text()
    read = set(re.findall(r"\bcfg\.(\w+)", source))
    assert read <= table, f"gunicorn settings the worker reads but docs/reference/gunicorn.md " \
                          f"does not list: {sorted(read - table)}"
    config = pytest.importorskip("gunicorn.config")
    known = {cls.name for cls in config.KNOWN_SETTINGS} | {"is_ssl"}
    assert table <= known, f"not gunicorn settings: {sorted(table - known)}"


# -- the build itself (needs the docs extra) --------------------------------------------


def _mkdocs() -> list[str]:
    if any(importlib.util.find_spec(m) is None for m in ("mkdocs", "mkdocstrings")):
        pytest.skip("the docs extra is not installed (make docs installs it)")
    return [sys.executable, "-m", "mkdocs"]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_mkdocs(), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True, text=True, timeout=120, cwd=config.parent,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.mark.timeout(150)
def test_docs_build_strictly(tmp_path):
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    assert (site / "reference" / "api" / "index.html").is_file()
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "--graceful-timeout" in cli
    assert (site / "assets" / "benchmarks" / "servers.png").is_file()


@pytest.mark.timeout(150)
def test_broken_reference_fails_the_build_naming_the_page(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copytree(DOCS, copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "benchmarks").symlink_to(ROOT / "benchmarks")
    (copy / "greenpool").symlink_to(ROOT / "greenpool")
    broken = copy / "docs" / "how-to" / "shutdown.md"
    broken.write_text(broken.read_text() + "\n\nSee [nowhere](no-such-page.md).\n")
    result = _build(copy / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "how-to/shutdown.md" in output and "no-such-page.md" in output, output

    broken.write_text(broken.read_text().replace("[nowhere](no-such-page.md)", "nothing"))
    api = copy / "docs" / "reference" / "api.md"
    api.write_text(api.read_text() + "\n::: greenpool.NoSuchName\n")
    result = _build(copy / "mkdocs.yml", tmp_path / "site2")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "greenpool.NoSuchName" in output and "reference/api.md" in output, output


# -- what the docs say about HTTP is what the parser does ------------------------------

HTTP_PAGE = REFERENCE / "http.md"
_STRICT_ROW = re.compile(
    r"^\| (?P<what>[^|]+?) \| (?P<examples>`b\".*\"`) \| (?P<status>\d{3}) \|$", re.M
)


def _strict_rows() -> list[tuple[str, bytes, int]]:
    text = HTTP_PAGE.read_text()
    section = text.split("## Strict HTTP/1.1", 1)[1].split("\n### ", 1)[0]
    rows = []
    for match in _STRICT_ROW.finditer(section):
        for literal in re.findall(r"`(b\".*?\")`", match["examples"]):
            rows.append((match["what"], ast.literal_eval(literal), int(match["status"])))
    return rows


STRICT_ROWS = _strict_rows()


def test_the_strict_http_table_has_its_rows():
    assert len(STRICT_ROWS) >= 30, len(STRICT_ROWS)
    statuses = {status for _, _, status in STRICT_ROWS}
    assert statuses == {400, 501, 505}, statuses


@pytest.mark.parametrize("what, raw, status", STRICT_ROWS,
                         ids=[f"{status}-{i}" for i, (_, _, status) in enumerate(STRICT_ROWS)])
def test_the_strict_http_table_is_what_the_parser_does(what, raw, status):
    from greenpool.http.parser import Limits, RequestParser

    parser = RequestParser(Limits())
    parser.feed(raw + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parser.error is not None, f"docs/reference/http.md: {what}: {raw!r} was accepted"
    assert parser.error.status == status, (what, raw, parser.error.reason)
    # Nothing behind the refused request is parsed.
    assert all(req.target != b"/smuggled" for req in parser.ready), (what, raw)


# -- docstrings render as they read ----------------------------------------------------

_FIELD = re.compile(r"^:(param|parameter|arg|key|keyword|type|raises?|except|exception|returns?"
                    r"|rtype|var|ivar|cvar|vartype|yields?)\b")


def _docstrings():
    for path in sorted((ROOT / "greenpool").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    name = getattr(node, "name", "<module>")
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)} {name}", doc


def test_docstring_fields_come_last():
    # The reference reads Sphinx-style fields; a paragraph after a ``:param`` field is
    # rendered as part of that parameter's description.
    bad = []
    for where, doc in _docstrings():
        lines = doc.splitlines()
        in_fields = False
        for previous, line in zip([""] + lines, lines, strict=False):
            if _FIELD.match(line):
                in_fields = True
            elif in_fields and line.strip() and not line[0].isspace() and not previous.strip():
                bad.append(f"{where}: {line[:60]!r} after the fields")
                break
    assert not bad, "move the prose above the :param/:raises fields:\n" + "\n".join(bad)


def test_docstrings_have_no_rst_literal_blocks():
    # Docstrings render as Markdown: ``::`` shows as is, and an indented block after it
    # is code only when a blank line precedes it. End the sentence with ':' instead.
    bad = [where for where, doc in _docstrings() if re.search(r"::[ \t]*$", doc, re.M)]
    assert not bad, bad

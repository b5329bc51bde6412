"""MkDocs hooks for greenpool's docs (listed under ``hooks:`` in mkdocs.yml).

* The CLI reference is generated: a page holding the marker ``<!-- greenpool:cli -->``
  gets the options table and the ``--help`` text of every command, rendered from
  ``greenpool.__main__.build_parser()``, so the page cannot drift from the parser.
* Figures live where the benchmarks write them (``benchmarks/results/*.png``); pages
  link them as ``../benchmarks/results/NAME.png`` (a path that also works on GitHub)
  and the build copies them into the site and rewrites the links.
* Docstrings use Sphinx roles (``:class:`Pool```); mkdocstrings shows them verbatim,
  so the role prefix is dropped from the rendered HTML.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "benchmarks" / "results"
FIGURES_URI = "assets/benchmarks"
CLI_MARKER = "<!-- greenpool:cli -->"
CLI_PAGE = "reference/cli.md"
HELP_WIDTH = "100"

_FIGURE_LINK = re.compile(r"\]\(((?:\.\./)+)benchmarks/results/([\w.-]+\.png)\)")
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):(<code>)~?")


def on_files(files, config):
    """Add the benchmark plots to the site under ``assets/benchmarks/``."""
    for png in sorted(FIGURES.glob("*.png")):
        files.append(File.generated(config, f"{FIGURES_URI}/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files):
    src = page.file.src_uri

    def figure(match: re.Match) -> str:
        name = match.group(2)
        if not (FIGURES / name).is_file():
            raise PluginError(f"{src}: figure benchmarks/results/{name} does not exist")
        target = posixpath.relpath(f"{FIGURES_URI}/{name}", posixpath.dirname(src) or ".")
        return f"]({target})"

    markdown = _FIGURE_LINK.sub(figure, markdown)
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, render_cli())
    elif src == CLI_PAGE:
        raise PluginError(f"{src}: the marker {CLI_MARKER} is missing; the CLI reference "
                          "would be empty")
    return markdown


def on_page_content(html, page, config, files):
    return _ROLE.sub(r"\1", html)


# -- the CLI reference ----------------------------------------------------------


def render_cli() -> str:
    """Markdown for every command of ``greenpool.__main__.build_parser()``."""
    from greenpool.__main__ import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps to the terminal: keep builds identical
    try:
        parser = build_parser()
        out = [_render_parser(parser, parser.prog, level=2)]
        for name, sub in _subcommands(parser).items():
            out.append(_render_parser(sub, f"{parser.prog} {name}", level=2))
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n\n".join(out)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _render_parser(parser: argparse.ArgumentParser, title: str, level: int) -> str:
    lines = [f"{'#' * level} `{title}`", ""]
    if parser.description:
        lines += [_escape(parser.description), ""]
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(f"`{s}`" for s in action.option_strings)
            if action.nargs != 0:
                name += f" `{formatter._format_args(action, _metavar(action))}`"
        else:
            name = f"`{_metavar(action)}`"
        help_text = formatter._expand_help(action) if action.help else ""
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            help_text += " Choices: " + ", ".join(f"`{c}`" for c in action.choices) + "."
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or not action.option_strings \
            else f"`{_default_text(default)}`"
        rows.append(f"| {name} | {_escape(help_text)} | {shown} |")
    if rows:
        lines += ["| argument | what it does | default |", "|---|---|---|", *rows, ""]
    commands = _subcommands(parser)
    if commands:
        lines += ["| command | what it does |", "|---|---|"]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    lines.append(f"| `{choice.dest}` | {_escape(choice.help or '')} |")
        lines.append("")
    lines += [
        f'??? note "`{title} --help`"',
        "",
        "    ```text",
        *("    " + line if line else "" for line in parser.format_help().rstrip().split("\n")),
        "    ```",
    ]
    return "\n".join(lines)


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.option_strings:
        return action.dest.upper()
    return action.dest


def _default_text(value) -> str:
    if isinstance(value, tuple) and len(value) == 2:  # a parsed HOST:PORT
        return f"{value[0]}:{value[1]}"
    return str(value)


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")

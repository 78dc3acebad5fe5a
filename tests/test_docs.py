"""The documentation's examples are run, so the docs cannot drift from the code.

- Every ```python block of the pages in :data:`RUNNABLE_PAGES` runs, block after
  block in one namespace per page, in a fresh temporary directory with no
  ``APIKEYS_*``/``CLERK_*`` variables set, and then once more in the same directory. Tracebacks point at the Markdown line.
- Every ``apikeys ...`` command shown in ``docs/cli.md`` parses with the real
  argument parser.
- Relative links between these pages point at files that exist.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

import apikeys
from apikeys._cli import build_parser

DOCS = Path(__file__).resolve().parent.parent / "docs"
RUNNABLE_PAGES = [
    "index.md",
    "quickstart.md",
    "configuration.md",
    "limits.md",
    "key-format.md",
    "backends/sqlalchemy.md",
    "deploying.md",
    "moving-backends.md",
    "first-key.md",
]
OWN_PAGES = [*RUNNABLE_PAGES, "cli.md"]

_FENCE_RE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
_LINK_RE = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def code_blocks(page: Path, *languages: str) -> list[tuple[int, str]]:
    """Return ``(first line number, code)`` of each fenced block in ``languages``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE_RE.finditer(text):
        if match.group("lang") in languages:
            first_line = text.count("\n", 0, match.start("body")) + 1
            blocks.append((first_line, match.group("body")))
    return blocks


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary working directory and an environment without apikeys settings."""
    monkeypatch.chdir(tmp_path)
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("APIKEYS_", "CLERK_")):
            del os.environ[name]
    apikeys.configure()
    try:
        yield tmp_path
    finally:
        apikeys.configure()  # closes a default manager the page may have built
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.sqlalchemy
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_python_examples_run(page: str, sandbox: Path) -> None:
    """Each page runs as written, and again in the same folder: a reader who runs an
    example twice (its database file still there) sees it work the second time too."""
    path = DOCS / page
    blocks = code_blocks(path, "python")
    assert blocks, f"{page} has no python examples"
    for _run in range(2):
        namespace: dict[str, object] = {"__name__": "__main__"}  # as `python page.py` runs it
        for first_line, code in blocks:
            # Padding with newlines makes traceback line numbers those of the .md file.
            source = "\n" * (first_line - 1) + code
            exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - our own docs
        apikeys.configure()  # as a new process would: no default manager left over


def _shell_commands(line: str) -> Iterator[list[str]]:
    """Split a shell line into its simple commands (at pipes, ``;``, ``&&``, redirections)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if set(token) <= set("|&;<>()"):
            yield command
            command = []
        else:
            command.append(token)
    yield command


def _cli_commands() -> list[tuple[int, list[str]]]:
    commands = []
    for language in ("sh", "console"):
        for first_line, code in code_blocks(DOCS / "cli.md", language):
            for offset, line in enumerate(code.splitlines()):
                if language == "console":
                    if not line.startswith("$ "):
                        continue  # output, not a command
                    line = line[2:]
                for words in _shell_commands(line):
                    if words[:1] == ["apikeys"]:
                        commands.append((first_line + offset, words[1:]))
    return commands


def test_cli_page_shows_commands() -> None:
    shown = {words[0] for _, words in _cli_commands() if words and not words[0].startswith("-")}
    assert shown >= {"create", "list", "show", "revoke", "delete", "rotate", "verify", "demo"}


@pytest.mark.parametrize(("line", "argv"), _cli_commands(), ids=lambda value: str(value))
def test_cli_page_commands_parse(line: int, argv: list[str]) -> None:
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_request:
        if exit_request.code != 0:  # --help and --version exit 0
            pytest.fail(f"docs/cli.md:{line}: apikeys {shlex.join(argv)} does not parse")


@pytest.mark.parametrize("page", OWN_PAGES)
def test_relative_links_resolve(page: str) -> None:
    path = DOCS / page
    text = path.read_text(encoding="utf-8")
    for match in _LINK_RE.finditer(text):
        target = match.group("target")
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{page} links to missing {target}"


def test_configuration_page_documents_every_setting() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table_rows = [line for line in text.splitlines() if line.startswith("| `")]
    documented = {row.split("`")[1] for row in table_rows}
    assert set(apikeys.Settings.model_fields) <= documented, "add the new setting to the table"
    for name in apikeys.Settings.model_fields:
        row = next(row for row in table_rows if row.startswith(f"| `{name}` |"))
        if not name.startswith("clerk_"):
            assert f"`APIKEYS_{name.upper()}`" in row, f"{name}: wrong environment variable"


def test_error_tree_in_the_overview_matches_the_classes() -> None:
    (_, tree), *_ = code_blocks(DOCS / "index.md", "text")
    entries = re.findall(r"(\w+Error) \(([\d/]+)\)", tree)
    documented = {name for name, _ in entries}
    raised = {name for name in apikeys.__all__ if name.endswith("Error")}
    assert documented == raised
    for name, statuses in entries:
        error_class = getattr(apikeys, name)
        assert str(error_class.status_code) in statuses.split("/"), name

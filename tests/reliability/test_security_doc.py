"""``docs/security.md``: its Python blocks run, in order, in one namespace."""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import apikeys

PAGE = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_FENCE_RE = re.compile(r"^```python[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)

pytestmark = pytest.mark.sqlalchemy


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh directory, no apikeys settings in the environment, loggers restored after."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("APIKEYS_", "CLERK_")):
            monkeypatch.delenv(name)
    events_logger = logging.getLogger("apikeys.events")
    level = events_logger.level
    try:
        yield tmp_path
    finally:
        events_logger.setLevel(level)
        apikeys.configure()


def test_the_security_page_runs(sandbox: Path) -> None:
    text = PAGE.read_text(encoding="utf-8")
    blocks = [
        (text.count("\n", 0, match.start("body")) + 1, match.group("body"))
        for match in _FENCE_RE.finditer(text)
    ]
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "security_doc"}
    for first_line, code in blocks:
        # Padding keeps tracebacks pointing at the Markdown line.
        exec(compile("\n" * (first_line - 1) + code, str(PAGE), "exec"), namespace)  # noqa: S102
    for value in namespace.values():
        close = getattr(value, "close", None)
        if (
            callable(close)
            and not inspect.iscoroutinefunction(close)
            and not isinstance(value, type)
        ):
            close()


def test_the_page_links_to_pages_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", PAGE.read_text(encoding="utf-8")):
        assert (PAGE.parent / target).exists(), target


_TEST_REFERENCE_RE = re.compile(
    r"`(?P<file>(?:benchmarks/)?tests/[\w/]+\.py)?(?P<names>(?:::\w+)+)`"
)


def _cited_tests() -> list[tuple[str, str]]:
    """``(file, test name)`` for each test the threat table cites; ``::name`` alone means the last file."""
    text = PAGE.read_text(encoding="utf-8")
    table = text[text.index("**Protected**") : text.index("**Not protected")]
    cited, file = [], None
    for reference in _TEST_REFERENCE_RE.finditer(table):
        file = reference["file"] or file
        assert file, f"{reference[0]} names no file"
        cited.append((file, reference["names"].rsplit("::", 1)[-1]))
    return cited


def test_every_test_the_threat_model_cites_exists() -> None:
    cited = _cited_tests()
    assert len(cited) >= 20, "the threat table cites its tests"
    repository = PAGE.parents[1]
    missing = [
        f"{file}::{name}"
        for file, name in cited
        if not re.search(
            rf"^\s*(?:async )?def {name}\(", (repository / file).read_text(encoding="utf-8"), re.M
        )
    ]
    assert missing == []

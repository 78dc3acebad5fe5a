"""``docs/security.md``: its Python blocks run, in order, in one namespace."""

from __future__ import annotations

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
        if isinstance(value, apikeys.KeyManager) and callable(close):
            close()


def test_the_page_links_to_pages_that_exist() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", PAGE.read_text(encoding="utf-8")):
        assert (PAGE.parent / target).exists(), target

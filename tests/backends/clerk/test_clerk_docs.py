"""The Clerk page's examples run, and its claims about defaults match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from apikeys.backends.clerk import ClerkKeyManager
from tests.test_docs import DOCS, code_blocks

pytestmark = pytest.mark.clerk

PAGE = DOCS / "backends" / "clerk.md"


def test_python_examples_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("CLERK_SECRET_KEY", "CLERK_API_URL", "CLERK_API_VERSION", "APIKEYS_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    blocks = code_blocks(PAGE, "python")
    assert len(blocks) >= 2
    namespace: dict[str, object] = {"__name__": "docs.backends.clerk"}
    for first_line, code in blocks:
        source = "\n" * (first_line - 1) + code
        exec(compile(source, str(PAGE), "exec"), namespace)  # noqa: S102 - our own docs


def test_documented_defaults_are_the_real_ones() -> None:
    text = PAGE.read_text(encoding="utf-8")
    manager = ClerkKeyManager("sk_test_defaults")
    defaults = {
        "timeout": manager.timeout.read,
        "max_retries": manager.max_retries,
        "retry_backoff": manager.retry_backoff,
        "max_retry_wait": manager.max_retry_wait,
        "cache_ttl": manager.cache.ttl,
    }
    manager.close()
    for name in ("timeout", "max_retries", "retry_backoff", "max_retry_wait", "cache_ttl"):
        # The constructor example on the page spells out every default.
        assert f"{name}={defaults[name]:g}" in text, name


def test_relative_links_resolve() -> None:
    from tests.test_docs import _LINK_RE

    for match in _LINK_RE.finditer(PAGE.read_text(encoding="utf-8")):
        target = match.group("target")
        if "://" not in target:
            assert (PAGE.parent / target).exists(), f"clerk.md links to missing {target}"

"""Fixtures of the Clerk backend tests: the fake, managers of both flavours, the spec."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from apikeys.testing import FakeClerk
from tests.backends.clerk.openapi import SPEC_PATH, load_spec
from tests.backends.clerk.twins import Twin

PRISM_SCRIPT = Path(__file__).resolve().parent / "prism.sh"
PRISM_START_SECONDS = 90


@pytest.fixture
def fake() -> FakeClerk:
    """A fresh fake Clerk instance."""
    return FakeClerk()


@pytest.fixture
def user_id(fake: FakeClerk) -> str:
    """A Clerk-shaped user id unique to the test."""
    return fake.new_user_id()


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which twin a test runs against."""
    value: str = request.param
    return value


@pytest.fixture
def make_twin(fake: FakeClerk, flavour: str) -> Iterator[Callable[..., Twin]]:
    """Build managers of the current flavour wired to ``fake``; closed after the test."""
    loop = asyncio.new_event_loop() if flavour == "async" else None
    made: list[Twin] = []

    def make(**options: Any) -> Twin:
        options.setdefault("cache_ttl", 0)
        if flavour == "sync":
            twin = Twin(fake.key_manager(**options), None)
        else:
            twin = Twin(fake.async_key_manager(**options), loop)
        made.append(twin)
        return twin

    try:
        yield make
    finally:
        for twin in made:
            twin.close()
        if loop is not None:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


@pytest.fixture
def twin(make_twin: Callable[..., Twin]) -> Twin:
    """A manager of the current flavour with its cache off, so every call reaches the fake."""
    return make_twin()


@pytest.fixture(scope="session")
def clerk_spec() -> dict[str, Any]:
    """The spec (see :func:`load_spec`); hypothesis tests call ``load_spec()`` instead,
    so that a failing example's report does not print the whole spec."""
    return load_spec()


def _prism_unavailable(reason: str) -> NoReturn:
    if os.environ.get("APIKEYS_REQUIRE_PRISM") == "1":
        pytest.fail(f"Prism is required (APIKEYS_REQUIRE_PRISM=1) but {reason}")
    pytest.skip(
        f"Prism tests skipped: {reason}; run tests/backends/clerk/prism.sh (needs node and npm)"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def prism_url() -> Iterator[str]:
    """Base URL of a Stoplight Prism mock of Clerk's spec, started on 127.0.0.1 for the session.

    Prism serves the spec's paths without ``/v1``. Skips when node/npm are
    missing or Prism cannot be installed, unless ``APIKEYS_REQUIRE_PRISM=1``.
    """
    if not SPEC_PATH.is_file():
        pytest.fail(f"Clerk's OpenAPI spec is missing: expected it at {SPEC_PATH}")
    if shutil.which("node") is None or shutil.which("npm") is None:
        _prism_unavailable("node and npm are not installed")
    installed = subprocess.run(
        ["sh", str(PRISM_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    binary = installed.stdout.strip().splitlines()[-1] if installed.stdout.strip() else ""
    if installed.returncode != 0 or not Path(binary).is_file():
        _prism_unavailable(f"installing it failed: {installed.stderr.strip()[-500:]}")
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                binary,
                "mock",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--errors",
                str(SPEC_PATH),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its node children stop with it
        )
        try:
            _wait_for_prism(process, port, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def _wait_for_prism(process: subprocess.Popen[bytes], port: int, log: Any) -> None:
    deadline = time.monotonic() + PRISM_START_SECONDS
    while True:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-1000:]
            _prism_unavailable(f"it exited with {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                _prism_unavailable(f"it did not listen within {PRISM_START_SECONDS} s")
            time.sleep(0.25)

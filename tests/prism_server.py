"""Start Stoplight Prism, a mock of Clerk's API driven by its OpenAPI spec, on loopback.

Used by the ``prism_url`` fixture of the Clerk tests and by the Clerk flood
benchmark. It needs node and npm: ``tests/backends/clerk/prism.sh`` installs
Prism into ``tests/backends/clerk/.prism`` on first use.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.postgres_server import free_port

CLERK_TESTS = Path(__file__).resolve().parent / "backends" / "clerk"
PRISM_SCRIPT = CLERK_TESTS / "prism.sh"
SPEC_PATH = CLERK_TESTS / "spec" / "2026-05-12.yml"
START_SECONDS = 90


class PrismUnavailable(Exception):
    """Prism cannot run here; the message says why."""


def install() -> str:
    """Install Prism if needed; return its executable.

    Raises:
        PrismUnavailable: node or npm is missing, or the install failed.
    """
    if not SPEC_PATH.is_file():
        raise PrismUnavailable(f"Clerk's OpenAPI spec is missing: expected it at {SPEC_PATH}")
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise PrismUnavailable("node and npm are not installed")
    installed = subprocess.run(
        ["sh", str(PRISM_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    binary = installed.stdout.strip().splitlines()[-1] if installed.stdout.strip() else ""
    if installed.returncode != 0 or not Path(binary).is_file():
        raise PrismUnavailable(f"installing it failed: {installed.stderr.strip()[-500:]}")
    return binary


@contextmanager
def served() -> Iterator[str]:
    """Serve Clerk's spec with Prism on a free port of 127.0.0.1; yield its base URL
    (Prism serves the spec's paths without ``/v1``).

    Raises:
        PrismUnavailable: Prism cannot be installed, or did not start.
    """
    binary = install()
    port = free_port()
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
            _wait_for(process, port, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def _wait_for(process: subprocess.Popen[bytes], port: int, log: Any) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")[-1000:]
            raise PrismUnavailable(f"it exited with {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise PrismUnavailable(f"it did not listen within {START_SECONDS} s") from None
            time.sleep(0.25)  # polling a starting server, not waiting out a timer

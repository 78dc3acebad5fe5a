"""Run an example app in a real server process on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.postgres_server import free_port

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30.0


def uvicorn_command(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning"]  # fmt: skip


def waitress_command(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "waitress", f"--listen=127.0.0.1:{port}", app]


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_server(
    command_for: Callable[[str, int], list[str]], app: str, backend_url: str
) -> Iterator[str]:
    """Start ``app`` in a server process; yield its base URL; stop it afterwards.

    Args:
        command_for: :func:`uvicorn_command` or :func:`waitress_command`.
        app: ``module:attribute`` of the WSGI/ASGI app, importable from the repository root.
        backend_url: ``APIKEYS_BACKEND`` for the server process.
    """
    port = free_port()
    env = {**os.environ, "APIKEYS_BACKEND": backend_url, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        command_for(app, port),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _accepting(port):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.communicate()[0].decode(errors="replace")
                pytest.fail(f"{app} did not start on 127.0.0.1:{port}:\n{output}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()

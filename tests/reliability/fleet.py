"""Start a multi-worker server of a fleet app and talk to its workers: shared by the fleet tests.

:func:`serving` starts ``uvicorn --workers 4`` (FastAPI) or ``gunicorn -w 4``
(Flask, Django) on a loopback port with the apps of
:mod:`tests.reliability.fleet_apps`, configured by the environment alone;
every answer names the worker that gave it, so a test can tell which of them
accepted or refused a key.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.postgres_server import free_port
from tests.reliability.fleet_apps import SETTINGS_VARIABLE, WORKER_HEADER

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4
BOUND = 1.0
"""Seconds after the revoke returns by which every worker refuses the key (the target is a p99 of 0.1 s)."""
CACHE_TTL = 60.0
"""Longer than the whole test: only the revocation channel can explain a prompt refusal."""
STARTUP_SECONDS = 60.0
CONCURRENCY = 8
KEEP_ALIVE = 120
"""Seconds uvicorn keeps an idle connection open: longer than a test, so a connection stays with its worker."""
FRAMEWORKS = ["fastapi", "flask", "django"]
ANOTHER_CLIENT = "127.0.0.2"
"""A second client address on loopback, for what one client's limit must not do to others."""


def server_command(framework: str, port: int) -> list[str]:
    bind = f"127.0.0.1:{port}"
    if framework == "fastapi":
        return [sys.executable, "-m", "uvicorn", "--factory", "tests.reliability.fleet_apps:fastapi_app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(WORKERS),
                "--timeout-keep-alive", str(KEEP_ALIVE), "--log-level", "warning"]  # fmt: skip
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(WORKERS),
                "--log-level", "warning"]  # fmt: skip
    if framework == "flask":
        # --preload: the manager (and its background threads) is built before the fork.
        return [*gunicorn, "--preload", "tests.reliability.fleet_apps:flask_app()"]
    return [*gunicorn, "tests.reliability.fleet_django:application"]


@dataclass
class Answer:
    status: int
    worker: int
    at: float


def answer_of(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    key: str,
    body: Mapping[str, object] | None = None,
) -> Answer:
    """One request on ``connection``; the response is read whole, so the connection may serve another."""
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    content = json.dumps(body) if body is not None else None
    connection.request(method, path, body=content, headers=headers)
    response = connection.getresponse()
    response.read()
    return Answer(response.status, int(response.getheader(WORKER_HEADER) or 0), time.monotonic())


def get(port: int, path: str, key: str, *, client: str | None = None) -> Answer:
    """GET on a new connection (from ``client``'s address), so the server hands it to any of its workers."""
    source = (client, 0) if client is not None else None
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=source)
    try:
        return answer_of(connection, "GET", path, key)
    finally:
        connection.close()


def _answers(port: int) -> bool:
    try:
        return get(port, "/health", "").status == 200
    except OSError:
        return False


@contextmanager
def serving(
    framework: str, env: Mapping[str, str], log: Path, *, settings: Mapping[str, object] = {}
) -> Iterator[int]:
    """Run ``framework``'s fleet app on a free port until the block ends; yield the port.

    ``settings`` are the app's integration settings (``client_max_failures``, ...).
    """
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            server_command(framework, port),
            cwd=REPO,
            env={
                **os.environ,
                **env,
                SETTINGS_VARIABLE: json.dumps(dict(settings)),
                "PYTHONPATH": str(REPO),
            },
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{framework} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)  # polling a starting server
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def one_connection_per_worker(port: int) -> Iterator[dict[int, http.client.HTTPConnection]]:
    """A kept-alive connection to each worker (uvicorn), by worker process id.

    A request sent on one of them is served by that worker: a test decides
    which worker sees what, with no request in flight in parallel.
    """
    pinned: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + STARTUP_SECONDS  # the server answers before all its workers do
    try:
        while len(pinned) < WORKERS:
            if time.monotonic() > deadline:
                raise AssertionError(f"only workers {set(pinned)} took a connection")
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            worker = answer_of(connection, "GET", "/health", "").worker
            if worker in pinned:
                connection.close()
            else:
                pinned[worker] = connection
        yield pinned
    finally:
        for connection in pinned.values():
            connection.close()


@dataclass
class Propagation:
    """What the workers answered after the revoke returned."""

    revoked_at: float
    accepted: dict[int, float] = field(default_factory=dict)  # worker -> last acceptance
    refused: dict[int, int] = field(default_factory=dict)  # worker -> refusals seen

    @property
    def lag(self) -> float:
        """Seconds from the revoke's return to the last acceptance anywhere (0 if none)."""
        return max((at - self.revoked_at for at in self.accepted.values()), default=0.0)


def batch(port: int, key: str, *, client: str | None = None) -> list[Answer]:
    """Requests in parallel: with every worker busy, each one is handed some (a sync
    worker that is idle first would otherwise take one sequential request after another)."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(
            pool.map(lambda _: get(port, "/whoami", key, client=client), range(CONCURRENCY * 2))
        )


def warm_every_worker(
    port: int, key: str, *, workers: int = WORKERS, client: str | None = None
) -> set[int]:
    """Validate ``key`` until ``workers`` workers have it in their cache; return them."""
    seen: set[int] = set()
    for _ in range(500):
        for answer in batch(port, key, client=client):
            assert answer.status == 200, answer
            seen.add(answer.worker)
        if len(seen) == workers:
            return seen
    raise AssertionError(f"only workers {seen} answered")


def watch_the_revocation(
    port: int, key: str, revoked_at: float, *, workers: int = WORKERS, client: str | None = None
) -> Propagation:
    """Ask until ``workers`` workers have refused the key a few times, or the bound is well past."""
    seen = Propagation(revoked_at)
    while time.monotonic() - revoked_at < BOUND + 5:
        for answer in batch(port, key, client=client):
            if answer.status == 200:
                seen.accepted[answer.worker] = max(answer.at, seen.accepted.get(answer.worker, 0.0))
            else:
                assert answer.status == 403, answer  # refused as revoked: never a 500 or a 503
                seen.refused[answer.worker] = seen.refused.get(answer.worker, 0) + 1
        done = len(seen.refused) >= workers and min(seen.refused.values()) >= 3
        if done and time.monotonic() - revoked_at > BOUND:
            break
    return seen


def assert_every_worker_refused(seen: Propagation, within: float = BOUND) -> None:
    """Every worker refused the key, and none accepted it more than ``within`` seconds
    after the revoke returned (``0``: none accepted it at all)."""
    assert len(seen.refused) == WORKERS, seen
    assert seen.lag <= within, seen


__all__ = [
    "ANOTHER_CLIENT",
    "BOUND",
    "CACHE_TTL",
    "FRAMEWORKS",
    "STARTUP_SECONDS",
    "WORKERS",
    "Answer",
    "Propagation",
    "answer_of",
    "assert_every_worker_refused",
    "batch",
    "get",
    "one_connection_per_worker",
    "serving",
    "warm_every_worker",
    "watch_the_revocation",
]

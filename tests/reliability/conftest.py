"""Fixtures of the reliability suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import apikeys
from apikeys import KeyEvent
from tests import postgres_server
from tests.redis_server import RedisServer


class OwnPostgres:
    """A PostgreSQL server this test alone uses, so it may stop and start it."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = postgres_server.start(data_dir, port)
        self.running = True

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as in a database restart."""
        postgres_server.stop(self.data_dir)
        self.running = False

    def start(self) -> None:
        """Start the stopped server again, same data, same port."""
        pg_ctl = postgres_server.find_binary("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} -c fsync=off"
        command = [pg_ctl, "-D", str(self.data_dir / "db"), "-l", str(self.data_dir / "log")]
        subprocess.run(
            postgres_server._as_server_user([*command, "-o", options, "-w", "start"]),
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.running = True


@pytest.fixture(scope="module")
def _own_postgres_server() -> Iterator[OwnPostgres]:
    if postgres_server.find_binary("initdb") is None:
        reason = "no PostgreSQL server binaries (initdb, pg_ctl) to start a server of its own"
        if os.environ.get("APIKEYS_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="apikeys-pg-own-"))
    base.chmod(0o755)  # the server may run as the postgres user
    try:
        server = OwnPostgres(base / "pg", postgres_server.free_port())
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_postgres(_own_postgres_server: OwnPostgres) -> OwnPostgres:
    """A throwaway PostgreSQL server on 127.0.0.1 that tests may stop and start:
    never the shared session server. It is running when a test begins."""
    if not _own_postgres_server.running:
        _own_postgres_server.start()
    return _own_postgres_server


@pytest.fixture
def events() -> Iterator[list[KeyEvent]]:
    """Every event emitted while the test runs."""
    seen: list[KeyEvent] = []
    listener = apikeys.add_event_listener(seen.append)
    try:
        yield seen
    finally:
        apikeys.remove_event_listener(listener)


@pytest.fixture
def sqlite_and_redis(tmp_path: Path, redis: RedisServer) -> dict[str, str]:
    """The environment of a fleet on one SQLite file, with a real Redis between its workers."""
    return {"APIKEYS_BACKEND": f"sqlite:///{tmp_path / 'keys.db'}", "APIKEYS_REDIS_URL": redis.url}

"""Attacks and faults under real multi-worker servers: the fleet's guarantees hold through them.

Real servers with four workers (``uvicorn --workers 4``, ``gunicorn -w 4``,
see :mod:`tests.reliability.fleet`), a real Redis and a real PostgreSQL:

- a wrong-secret flood spread over the workers meets one fleet-wide limit
  with Redis, where without it each worker grants its own (and so do key
  creations per owner);
- Redis killed, or paused (SIGSTOP: nothing closes, nothing answers), mid-run:
  every worker sees the loss, accepts no key revoked after it, answers no
  500, limits each client on its own (as documented), and hears revocations
  again once Redis is back;
- the PostgreSQL ``LISTEN`` sessions ended by the server, or paused, while
  the database refuses new connections: the same, for PostgreSQL;
- a worker killed mid-run: the others and its replacement refuse revoked keys.
"""

from __future__ import annotations

import http.client
import os
import signal
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import apikeys
from tests import postgres_server
from tests.eventually import eventually
from tests.redis_server import RedisServer
from tests.reliability.fleet import (
    ANOTHER_CLIENT,
    BOUND,
    CACHE_TTL,
    WORKERS,
    answer_of,
    assert_every_worker_refused,
    batch,
    get,
    one_connection_per_worker,
    serving,
    warm_every_worker,
    watch_the_revocation,
)
from tests.reliability.helpers import wrong_secret_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.sqlalchemy]

pytest.importorskip("redis")

LIMIT = 5
"""``client_max_failures`` of the servers here; the allowance grows back over an hour, not during a test."""
CREATIONS = 3
"""``max_key_creations`` per owner, over an hour."""
LIMITS = {
    "client_max_failures": LIMIT,
    "client_failure_window": 3600,
    "max_key_creations": CREATIONS,
    "key_creation_window": 3600,
}
REFUSED = {403, 429}
FLOOD_AT_ONCE = 32
"""Wrong-secret requests sent together, far more than ``LIMIT``."""


def statuses_by_worker(
    pinned: dict[int, http.client.HTTPConnection],
    method: str,
    path: str,
    key: str,
    rounds: int,
    body: Mapping[str, object] | None = None,
) -> dict[int, list[int]]:
    """``rounds`` requests on each worker in turn, one at a time: what each answered, in order."""
    seen: dict[int, list[int]] = {worker: [] for worker in pinned}
    for _ in range(rounds):
        for worker, connection in pinned.items():
            answer = answer_of(connection, method, path, key, body)
            assert answer.worker == worker
            seen[worker].append(answer.status)
    return seen


def count(seen: dict[int, list[int]], status: int) -> int:
    return sum(statuses.count(status) for statuses in seen.values())


def flood(env: dict[str, str], log: Path) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Key creations, then a wrong-secret flood, spread evenly over the four workers of a
    uvicorn server; return what each worker answered to each."""
    admin = apikeys.create_key_manager(env["APIKEYS_BACKEND"])
    try:
        owner = admin.create_api_key("user_flood", "owner", scopes=["keys:manage"])
        with (
            serving("fastapi", env, log, settings=LIMITS) as port,
            one_connection_per_worker(port) as pinned,
        ):
            minted = {"name": "minted", "scopes": []}
            created = statuses_by_worker(
                pinned, "POST", "/api-keys", owner.secret, CREATIONS + 1, minted
            )
            wrong = wrong_secret_for(owner.secret)
            flooded = statuses_by_worker(pinned, "GET", "/whoami", wrong, LIMIT + 2)
            # The limit holds against the client: even its valid key is refused now.
            after = statuses_by_worker(pinned, "GET", "/whoami", owner.secret, 1)
            assert count(after, 429) == WORKERS, after
            # ... and against that client only.
            assert get(port, "/whoami", owner.secret, client=ANOTHER_CLIENT).status == 200
    finally:
        admin.close()
    return created, flooded


@pytest.mark.fastapi
def test_a_flood_spread_over_the_workers_meets_one_limit_with_redis(
    tmp_path: Path, redis: RedisServer
) -> None:
    """Without Redis each of N workers grants a client its own allowance (N x); with Redis
    the whole fleet grants one, and refuses the client on every worker past it."""
    alone, alone_flood = flood(
        {"APIKEYS_BACKEND": f"sqlite:///{tmp_path / 'alone.db'}"}, tmp_path / "alone.log"
    )
    shared, shared_flood = flood(
        {"APIKEYS_BACKEND": f"sqlite:///{tmp_path / 'shared.db'}", "APIKEYS_REDIS_URL": redis.url},
        tmp_path / "shared.log",
    )
    # Without Redis: each worker its own allowance, so N times the limit in all.
    assert alone == {worker: [201] * CREATIONS + [429] for worker in alone}
    assert alone_flood == {worker: [403] * LIMIT + [429] * 2 for worker in alone_flood}
    # With Redis: one allowance for the fleet; every worker refuses past it.
    assert count(shared, 201) == CREATIONS
    assert count(shared_flood, 403) == LIMIT
    for worker, statuses in [*shared.items(), *shared_flood.items()]:
        assert set(statuses) <= {201, 403, 429}, (worker, statuses)
        assert statuses[-1] == 429, (worker, statuses)


def log_lines(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text)


@pytest.mark.fastapi
@pytest.mark.xfail(
    reason="a client's failures are checked before the validation and counted after it, so"
    " requests in flight together all pass the check: 32 sent at once, 32 answered 403",
    strict=True,
)
def test_a_flood_sent_all_at_once_meets_one_limit_with_redis(
    tmp_path: Path, sqlite_and_redis: dict[str, str]
) -> None:
    """Many wrong secrets in flight together, as any client with enough connections can send."""
    admin = apikeys.create_key_manager(sqlite_and_redis["APIKEYS_BACKEND"])
    try:
        wrong = wrong_secret_for(admin.create_api_key("user_flood", "k", scopes=[]).secret)
        with (
            serving("fastapi", sqlite_and_redis, tmp_path / "server.log", settings=LIMITS) as port,
            ThreadPoolExecutor(FLOOD_AT_ONCE) as pool,
        ):
            answers = list(pool.map(lambda _: get(port, "/whoami", wrong), range(FLOOD_AT_ONCE)))
    finally:
        admin.close()
    assert {answer.status for answer in answers} <= REFUSED
    assert sum(answer.status == 403 for answer in answers) <= LIMIT


@pytest.mark.fastapi
@pytest.mark.parametrize("fault", ["killed", "paused"])
def test_redis_lost_mid_run_accepts_no_revoked_key(
    fault: str, tmp_path: Path, redis: RedisServer, sqlite_and_redis: dict[str, str]
) -> None:
    """Redis killed (its connections close) or paused (SIGSTOP: they stay open, unanswered,
    as behind a network partition): every worker sees the channel lost and stops trusting
    its cache, answers no 500, limits each client on its own (killed), and hears
    revocations again once Redis is back."""
    env = {**sqlite_and_redis, "APIKEYS_CACHE_TTL": str(CACHE_TTL)}
    log = tmp_path / "server.log"
    admin = apikeys.create_key_manager(env["APIKEYS_BACKEND"], redis_url=redis.url)
    # Another process of the deployment, whose announcements would be lost during the outage anyway.
    elsewhere = apikeys.create_key_manager(env["APIKEYS_BACKEND"])
    try:
        during, after, kept = (
            admin.create_api_key("user_fleet", name, scopes=[])
            for name in ("revoked during the outage", "revoked after it", "never revoked")
        )
        # Limits only against a dead Redis: against a hung one a limited request first waits
        # for Redis (up to its socket timeout), which would make this test crawl.
        limits = LIMITS if fault == "killed" else {}
        with (
            serving("fastapi", env, log, settings=limits) as port,
            one_connection_per_worker(port) as pinned,
        ):
            for new in (during, after, kept):
                warm_every_worker(port, new.secret)
            if fault == "killed":
                redis.kill()
            else:
                redis.pause()
            try:
                # Every worker sees the loss; each cache is off: a revocation now is heard by none.
                eventually(
                    lambda: log_lines(log, "lost the revocation channel on Redis") == WORKERS
                )
                elsewhere.revoke_api_key(during.id)
                revoked = watch_the_revocation(port, during.secret, time.monotonic())
                wrong = wrong_secret_for(kept.secret)
                if fault == "killed":
                    # Each worker counts alone, as without Redis: the limit is neither lifted
                    # nor turned into refusals of every client.
                    flooded = statuses_by_worker(pinned, "GET", "/whoami", wrong, LIMIT + 2)
                    assert flooded == {worker: [403] * LIMIT + [429] * 2 for worker in flooded}
                    limited = statuses_by_worker(pinned, "GET", "/whoami", kept.secret, 1)
                    assert limited == {worker: [429] for worker in pinned}
                else:
                    assert statuses_by_worker(pinned, "GET", "/whoami", wrong, 1) == {
                        worker: [403] for worker in pinned
                    }
                others = batch(port, kept.secret, client=ANOTHER_CLIENT)
                assert {answer.status for answer in others} == {200}
            finally:
                if fault == "killed":
                    redis.start()
                else:
                    redis.resume()
            eventually(lambda: log_lines(log, "revocations on Redis pub/sub again") == WORKERS)
            warm_every_worker(port, after.secret, client=ANOTHER_CLIENT)
            admin.revoke_api_key(after.id)
            resumed = watch_the_revocation(
                port, after.secret, time.monotonic(), client=ANOTHER_CLIENT
            )
    finally:
        elsewhere.close()
        admin.close()
    assert_every_worker_refused(revoked, within=0.0)
    assert_every_worker_refused(resumed)


@dataclass
class Database:
    """A database of its own on the shared PostgreSQL server, and a superuser's connection
    to that server which stays open while the database refuses new ones."""

    name: str
    url: str
    control: sa.Connection

    def allow_connections(self, allow: bool) -> None:
        self.control.execute(
            sa.text(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS {str(allow).lower()}")
        )

    def listening_sessions(self) -> list[int]:
        """Backend process ids of the sessions listening for revocations (a silent
        listener checks its connection with ``SELECT 1``: its last query)."""
        rows = self.control.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :name"
                " AND query IN ('LISTEN apikeys_revocations', 'SELECT 1')"
            ),
            {"name": self.name},
        )
        return [pid for (pid,) in rows]

    def terminate(self, pids: list[int]) -> int:
        """Have the server end these sessions, as a restart or an idle timeout would."""
        rows = self.control.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": pids}
        )
        return sum(1 for (ended,) in rows if ended)


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    name = f"fleet_faults_{os.getpid()}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with engine.connect() as control:
        control.execute(sa.text(f"CREATE DATABASE {name}"))
        try:
            yield Database(name, url, control)
        finally:
            control.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.django
@pytest.mark.parametrize("fault", ["terminated", "paused"])
def test_listen_sessions_lost_mid_run_accept_no_key_revoked_before_they_are_back(
    fault: str, tmp_path: Path, database: Database
) -> None:
    """The listeners' sessions ended by the server (``pg_terminate_backend``), or their server
    processes paused (SIGSTOP: nothing closes, nothing answers), while the database refuses new
    connections: no worker accepts a key revoked then, and revocations are heard again once
    the listeners are back."""
    env = {"APIKEYS_BACKEND": database.url, "APIKEYS_CACHE_TTL": str(CACHE_TTL)}
    log = tmp_path / "server.log"
    admin = apikeys.create_key_manager(database.url)
    try:
        during, after = (
            admin.create_api_key("user_fleet", label, scopes=[])
            for label in ("revoked while the listeners are away", "revoked after")
        )
        with serving("django", env, log) as port:
            for new in (during, after):
                warm_every_worker(port, new.secret)
            eventually(lambda: len(database.listening_sessions()) == WORKERS)
            # The listeners are cut off and cannot come back: each worker's cache is off.
            database.allow_connections(False)
            listeners = database.listening_sessions()
            paused: list[int] = []
            try:
                if fault == "terminated":
                    assert database.terminate(listeners) == WORKERS
                else:
                    try:
                        paused = postgres_server.pause(listeners)
                    except PermissionError as exc:
                        pytest.skip(str(exc))
                    assert len(paused) == WORKERS
                eventually(
                    lambda: log_lines(log, "lost the revocation channel on PostgreSQL") == WORKERS
                )
                admin.revoke_api_key(during.id)  # its NOTIFY reaches no one
                revoked = watch_the_revocation(port, during.secret, time.monotonic())
            finally:
                postgres_server.resume(paused)
                database.allow_connections(True)
            eventually(
                lambda: log_lines(log, "revocations on PostgreSQL LISTEN/NOTIFY again") == WORKERS
            )
            warm_every_worker(port, after.secret)
            admin.revoke_api_key(after.id)
            resumed = watch_the_revocation(port, after.secret, time.monotonic())
    finally:
        admin.close()
    assert_every_worker_refused(revoked, within=0.0)
    assert_every_worker_refused(resumed)


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended and been reaped (by its parent, gunicorn's master)."""
    return not Path(f"/proc/{pid}").exists()


@pytest.mark.flask
def test_a_worker_killed_mid_run_leaves_no_revoked_key_accepted(
    tmp_path: Path, sqlite_and_redis: dict[str, str]
) -> None:
    """SIGKILL the worker that has just revoked a key (gunicorn's master starts another):
    the other workers refuse it at once, and the new worker refuses every revoked key."""
    env = {**sqlite_and_redis, "APIKEYS_CACHE_TTL": str(CACHE_TTL)}
    admin = apikeys.create_key_manager(env["APIKEYS_BACKEND"], redis_url=env["APIKEYS_REDIS_URL"])
    try:
        before, revoker, kept = (
            admin.create_api_key("user_fleet", label, scopes=["keys:manage"])
            for label in ("revoked before the kill", "revokes itself, then its worker dies", "kept")
        )
        with serving("flask", env, tmp_path / "server.log") as port:
            first = set().union(
                *(warm_every_worker(port, new.secret) for new in (before, revoker, kept))
            )
            admin.revoke_api_key(before.id)
            assert_every_worker_refused(watch_the_revocation(port, before.secret, time.monotonic()))
            # The key revokes itself through one worker, which is killed as soon as it answers.
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            deleted = answer_of(connection, "DELETE", f"/api-keys/{revoker.id}", revoker.secret)
            os.kill(deleted.worker, signal.SIGKILL)
            connection.close()
            assert deleted.status == 200
            revoked = watch_the_revocation(port, revoker.secret, deleted.at, workers=WORKERS - 1)
            eventually(lambda: gone(deleted.worker))
            # Gunicorn's master starts a new worker: it serves valid keys, and no revoked one.
            serving_now: set[int] = set()

            def respawned() -> bool:
                answers = batch(port, kept.secret)
                assert {answer.status for answer in answers} == {200}
                serving_now.update(answer.worker for answer in answers)
                return bool(serving_now - first)

            eventually(respawned)
            (new_worker,) = serving_now - first
            afterwards = [
                watch_the_revocation(port, secret, time.monotonic())
                for secret in (before.secret, revoker.secret)
            ]
    finally:
        admin.close()
    # The three that lived on (and perhaps the new one, once started) refused it within the bound.
    assert deleted.worker not in revoked.refused and len(revoked.refused) >= WORKERS - 1, revoked
    assert revoked.lag <= BOUND, revoked
    for seen in afterwards:
        assert_every_worker_refused(seen, within=0.0)
        assert new_worker in seen.refused

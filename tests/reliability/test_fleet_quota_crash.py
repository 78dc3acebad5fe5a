"""Quotas are money: no crash in a fleet grants a credit twice.

Real servers with four workers (see :mod:`tests.reliability.fleet`) on
PostgreSQL or a SQLite file, with a real Redis counting rate limits. One key
with a quota and a rate limit is spent without a pause, by concurrent requests
spread over the workers, while the test kills or pauses Redis, or kills a
worker with SIGKILL (the master starts another). The database holds the
quota, so:

- the fleet accepts at most the quota, and no request is answered with a 500
  (nor a 503: on SQL, Redis never counts the quota);
- afterwards the database has charged what was accepted, more only for calls
  whose answer was lost (a request in flight to the killed worker may have
  been charged before the worker died), never less;
- while Redis is down, the quota is still spent, exactly (the database alone
  counts it) and rate limits count in each worker, as documented;
- once Redis, or the worker, is back, spending goes on from the database's
  count: the quota is not granted again from zero.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

import apikeys
from tests.eventually import WAIT, eventually
from tests.redis_server import RedisServer
from tests.reliability.fleet import (
    STARTUP_SECONDS,
    WORKERS,
    answer_of,
    batch,
    one_connection_per_worker,
    serving,
    warm_every_worker,
)
from tests.reliability.fleet_apps import SPEND_COST
from tests.reliability.metering import (
    LOST,
    SENDERS,
    Flow,
    Reply,
    quota_used,
    window_with_room,
)

pytest.importorskip("redis")

import redis as redis_client

from apikeys._redis import MAX_RETRY_REDIS_AFTER

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.sqlalchemy]

logger = logging.getLogger(__name__)
"""What each run counted (shown with ``--log-cli-level=INFO``)."""
CALLS = 240
"""Calls the quota has room for, at :data:`SPEND_COST` units each."""
LIMIT = 3
"""The rate limit checked while Redis is down, and once it is back."""
ROOM = 600.0
"""Seconds the rate limits' window has left when a test starts: far longer than the test."""
SPENT_QUOTA = (429, "quota_exceeded")
FLOWING = 60.0
"""Seconds a flow may take to reach a count on a loaded machine (it stops waiting as soon as it does)."""
KILLS = 4
"""Workers killed at most, one after another, until a request in flight is lost with one."""


def metered_key(admin: apikeys.KeyManager, window: int) -> apikeys.NewAPIKey:
    """A key with a quota of :data:`CALLS` calls and a rate limit so high that only the
    quota refuses: every call is charged in the database, then counted in Redis."""
    return admin.create_api_key(
        "user_fleet",
        "metered",
        rate_limit=apikeys.RateLimit(limit=10**9, window=window),
        quota=apikeys.Quota(limit=CALLS * SPEND_COST, period=timedelta(days=30)),
    )


def lost(reply: Reply) -> bool:
    return reply.status == LOST


def spent_quota(reply: Reply) -> bool:
    return (reply.status, reply.code) == SPENT_QUOTA


def assert_refused_for_the_quota(replies: list[Reply]) -> None:
    for reply in replies:
        if reply.status not in (200, LOST):
            assert spent_quota(reply), reply  # never a 500, nor a 503
            assert reply.retry_after is not None, reply


def statuses_by_worker(
    pinned: dict[int, http.client.HTTPConnection], secret: str, rounds: int
) -> dict[int, list[int]]:
    """``rounds`` requests on each worker in turn, one at a time: what each answered."""
    seen: dict[int, list[int]] = {worker: [] for worker in pinned}
    for _ in range(rounds):
        for worker, connection in pinned.items():
            seen[worker].append(answer_of(connection, "GET", "/whoami", secret).status)
    return seen


@pytest.mark.fastapi
@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["killed", "paused"])
def test_redis_lost_mid_run_grants_no_credit_twice(
    fault: str, tmp_path: Path, redis: RedisServer, postgres_url: str
) -> None:
    """Redis killed (its connections close), or paused (SIGSTOP: nothing closes, nothing
    answers, as behind a network partition) while the quota is spent."""
    window = window_with_room(ROOM, time.time())
    env = {"APIKEYS_BACKEND": postgres_url, "APIKEYS_REDIS_URL": redis.url}
    admin = apikeys.create_key_manager(postgres_url)
    counters = redis_client.Redis.from_url(redis.url)
    try:
        metered = metered_key(admin, window)
        during, after = (
            admin.create_api_key(
                "user_fleet", name, rate_limit=apikeys.RateLimit(limit=LIMIT, window=window)
            )
            for name in ("limited while Redis is down", "limited once it is back")
        )
        probe = admin.create_api_key(
            "user_fleet", "probe", rate_limit=apikeys.RateLimit(limit=10**9, window=window)
        )

        def counted_in_redis() -> int:
            names = counters.scan_iter(match=f"apikeys:rate:{probe.id}:*")
            return sum(int(counters.get(name) or 0) for name in names)

        with (
            serving("fastapi", env, tmp_path / "server.log") as port,
            one_connection_per_worker(port) as pinned,
            one_connection_per_worker(port) as flowing,
            Flow(port, "/spend", metered.secret, pinned=flowing) as flow,
        ):
            eventually(lambda: flow.accepted() >= CALLS // 4, timeout=FLOWING)
            if fault == "killed":
                redis.kill()
            else:
                redis.pause()
            before_the_loss = flow.accepted()
            try:
                # The quota is still spent, in the database alone.
                eventually(lambda: flow.accepted() >= before_the_loss + CALLS // 4, timeout=FLOWING)
                flow.pause()
                # A rate limit counts in each worker: each admits the whole limit.
                alone = statuses_by_worker(pinned, during.secret, LIMIT + 1)
            finally:
                if fault == "killed":
                    redis.start()  # empty: Redis never held the quota
                else:
                    redis.resume()
                restarted = time.monotonic()
            back: set[int] = set()

            def every_worker_counts_in_redis() -> bool:
                for worker, connection in pinned.items():
                    if worker not in back:
                        before = counted_in_redis()
                        assert answer_of(connection, "GET", "/whoami", probe.secret).status == 200
                        if counted_in_redis() == before + 1:
                            back.add(worker)
                return len(back) == WORKERS

            # Each worker tries Redis again after a wait that doubles with each failed try.
            eventually(every_worker_counts_in_redis, timeout=MAX_RETRY_REDIS_AFTER + WAIT)
            back_after = time.monotonic() - restarted
            shared = statuses_by_worker(pinned, after.secret, LIMIT)
            flow.resume()
            eventually(lambda: flow.count(spent_quota) >= 2 * SENDERS, timeout=FLOWING)
    finally:
        counters.close()
        admin.close()
    replies = flow.replies
    accepted = sum(reply.status == 200 for reply in replies)
    used = quota_used(postgres_url, metered.id)
    logger.info(
        "quota of %d calls over %d workers, Redis %s after %d: %d accepted, %d charged;"
        " every worker counting in Redis again %.1f s after it was back",
        CALLS, len(flow.workers()), fault, before_the_loss, accepted, used // SPEND_COST,
        back_after,
    )  # fmt: skip
    assert not [reply for reply in replies if reply.status == LOST]
    assert len(flow.workers()) == WORKERS
    assert_refused_for_the_quota(replies)
    # Exactly the quota, before, during and after the outage; charged exactly once each.
    assert accepted == CALLS
    assert used == accepted * SPEND_COST
    assert alone == {worker: [200] * LIMIT + [429] for worker in pinned}
    shared_accepted = sum(statuses.count(200) for statuses in shared.values())
    assert shared_accepted == LIMIT, shared  # one count for the fleet again


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended and been reaped (by its parent, gunicorn's master)."""
    return not Path(f"/proc/{pid}").exists()


def kill_a_worker(flow: Flow, accepted: int, port: int, probe: str, alive: set[int]) -> int:
    """Once ``accepted`` calls of ``flow`` were accepted, SIGKILL the worker of ``alive``
    that answered last; hold the flow until gunicorn's master has started another, which
    answers ``probe``'s key; return the killed worker (``alive`` is updated)."""
    eventually(lambda: flow.accepted() >= accepted, timeout=FLOWING)
    victim = flow.last_worker(among=alive)
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: gone(victim))
    flow.pause()
    alive.discard(victim)

    def respawned() -> bool:
        alive.update(answer.worker for answer in batch(port, probe))
        return len(alive) == WORKERS

    eventually(respawned, timeout=STARTUP_SECONDS)
    flow.resume()
    return victim


@pytest.mark.parametrize(
    ("framework", "store"),
    [
        pytest.param("flask", "postgres", marks=pytest.mark.flask, id="flask-postgres"),
        pytest.param("django", "sqlite", marks=pytest.mark.django, id="django-sqlite"),
    ],
)
def test_a_worker_killed_mid_run_grants_no_credit_twice(
    framework: str, store: str, tmp_path: Path, redis: RedisServer, request: pytest.FixtureRequest
) -> None:
    """SIGKILL a worker while the flow goes on, up to :data:`KILLS` times (one after another,
    each once its replacement serves), until a request in flight was lost with its worker.
    Each time the flow waits for the new worker, which then spends from the same quota."""
    if store == "postgres":
        database_url = str(request.getfixturevalue("postgres_url"))
    else:
        database_url = f"sqlite:///{tmp_path / 'keys.db'}"
    env = {"APIKEYS_BACKEND": database_url, "APIKEYS_REDIS_URL": redis.url}
    admin = apikeys.create_key_manager(database_url)
    victims: list[int] = []
    try:
        metered = metered_key(admin, window_with_room(ROOM, time.time()))
        kept = admin.create_api_key("user_fleet", "kept")
        with serving(framework, env, tmp_path / "server.log") as port:
            first = warm_every_worker(port, kept.secret)
            alive = set(first)
            # More requests at once than workers: each worker has one in hand most of the time.
            with Flow(port, "/spend", metered.secret, senders=4 * WORKERS) as flow:
                while len(victims) < KILLS and not flow.count(lost):
                    share = (len(victims) + 1) * CALLS // (KILLS + 2)
                    victims.append(kill_a_worker(flow, share, port, kept.secret, alive))
                eventually(lambda: flow.count(spent_quota) >= 2 * SENDERS, timeout=FLOWING)
    finally:
        admin.close()
    replies = flow.replies
    accepted = sum(reply.status == 200 for reply in replies)
    lost_answers = flow.count(lost)
    used = quota_used(database_url, metered.id)
    logger.info(
        "%s on %s, quota of %d calls over %d workers, %d killed: %d accepted, %d lost, %d charged",
        framework, store, CALLS, len(flow.workers()), len(victims), accepted, lost_answers, used // SPEND_COST,
    )  # fmt: skip
    assert_refused_for_the_quota(replies)
    assert used == CALLS * SPEND_COST  # spent to the end
    # Every accepted call was charged; a call charged but not accepted had its answer lost.
    assert accepted * SPEND_COST <= used <= (accepted + lost_answers) * SPEND_COST
    respawned = {reply.worker for reply in replies if reply.status == 200} - first
    assert respawned, "the workers started after a kill spend from the same quota"

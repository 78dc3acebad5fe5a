"""A key's rate limit and quota hold exactly across a fleet's workers, sharing Redis.

Real servers with four workers (``uvicorn --workers 4`` for FastAPI,
``gunicorn -w 4`` for Flask and Django, see :mod:`tests.reliability.fleet`),
one real Redis counting rate limits for all of them, and the keys in
PostgreSQL or in one SQLite file. One key is hammered with concurrent
requests over several workers (each on a new connection for gunicorn, on a
connection kept to each worker for uvicorn, whose workers take new
connections unevenly): the fleet accepts exactly the key's limit in its
window, never one more, and refuses every other call with 429 and
``Retry-After``; a quota is charged exactly once per accepted call, in the
database.

Rate-limit windows are aligned on the epoch: each test picks a window with
minutes left in it, so that the whole run is counted in one window, and checks
that every reply was.
"""

from __future__ import annotations

import http.client
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest

import apikeys
from apikeys import KeyManager
from tests.eventually import WAIT, eventually
from tests.redis_server import RedisServer
from tests.reliability.fleet import one_connection_per_worker, serving
from tests.reliability.fleet_apps import SPEND_COST
from tests.reliability.metering import (
    Flow,
    Reply,
    ask_every_worker,
    ask_many,
    quota_used,
    window_with_room,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.sqlalchemy]

pytest.importorskip("redis")

logger = logging.getLogger(__name__)
"""What each run counted (shown with ``--log-cli-level=INFO``)."""
ROOM = 300.0
"""Seconds a test's window has left when it starts: far longer than the test."""
LIMIT = 20
"""The rate limit hammered: calls per window."""
CALLS = 15
"""Calls the quota hammered has room for (at :data:`SPEND_COST` units each)."""
FLEETS = [
    pytest.param(
        ("fastapi", "postgres"),
        marks=[pytest.mark.fastapi, pytest.mark.postgres],
        id="fastapi-postgres",
    ),
    pytest.param(("flask", "sqlite"), marks=pytest.mark.flask, id="flask-sqlite"),
    pytest.param(
        ("django", "postgres"),
        marks=[pytest.mark.django, pytest.mark.postgres],
        id="django-postgres",
    ),
]


@dataclass
class Fleet:
    port: int
    database_url: str
    admin: KeyManager
    pinned: Mapping[int, http.client.HTTPConnection] | None
    """A kept-alive connection to each worker (uvicorn), else ``None`` (gunicorn)."""

    def hammer(self, path: str, key: str, times: int) -> list[Reply]:
        """``times`` requests of ``key``, several in flight at once, over every worker."""
        if self.pinned is None:
            return ask_many(self.port, path, key, times)
        return ask_every_worker(self.pinned, path, key, times // len(self.pinned))


@pytest.fixture(scope="module", params=FLEETS)
def fleet(
    request: pytest.FixtureRequest,
    shared_redis: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """One server for the module's tests, per framework and store; each test makes its own keys."""
    framework, store = request.param
    directory = tmp_path_factory.mktemp(f"fleet-{framework}")
    if store == "postgres":
        database_url = str(request.getfixturevalue("postgres_url"))
    else:
        database_url = f"sqlite:///{directory / 'keys.db'}"
    env = {"APIKEYS_BACKEND": database_url, "APIKEYS_REDIS_URL": shared_redis.url}
    admin = apikeys.create_key_manager(database_url)  # makes the tables before the workers start
    try:
        with serving(framework, env, directory / "server.log") as port:
            if framework != "fastapi":
                yield Fleet(port, database_url, admin, None)
                return
            with one_connection_per_worker(port) as pinned:
                yield Fleet(port, database_url, admin, pinned)
    finally:
        admin.close()


def refused_for_the_others(replies: list[Reply], limit: int) -> bool:
    """Whether a worker refused the key having accepted fewer than ``limit`` calls itself:
    only a count shared with the other workers explains it (a worker counting alone
    refuses only once it has accepted the whole limit). Which workers accept is a race:
    a worker with the key cached may take the whole limit while the others still hash it."""
    accepted = Counter(reply.worker for reply in replies if reply.status == 200)
    return any(reply.status == 429 and accepted[reply.worker] < limit for reply in replies)


def test_the_workers_accept_exactly_the_rate_limit_in_its_window(fleet: Fleet) -> None:
    started = time.time()
    window = window_with_room(ROOM, started)
    limited = fleet.admin.create_api_key(
        "user_fleet", "limited", rate_limit=apikeys.RateLimit(limit=LIMIT, window=window)
    )
    replies = fleet.hammer("/whoami", limited.secret, 4 * LIMIT)
    assert {reply.window(window) for reply in replies} == {int(started // window)}
    accepted = [reply for reply in replies if reply.status == 200]
    refused = [reply for reply in replies if reply.status != 200]
    logger.info(
        "rate limit %d per %d s: %d accepted by %d workers, %d refused, %d workers answered",
        LIMIT, window, len(accepted), len({reply.worker for reply in accepted}), len(refused),
        len({reply.worker for reply in replies}),
    )  # fmt: skip
    assert len(accepted) == LIMIT
    assert refused_for_the_others(replies, LIMIT), replies
    for reply in refused:
        assert (reply.status, reply.code) == (429, "rate_limited"), reply
        assert reply.retry_after is not None and 1 <= int(reply.retry_after) <= window, reply


def test_the_workers_charge_a_quota_once_per_accepted_call(fleet: Fleet) -> None:
    metered = fleet.admin.create_api_key(
        "user_fleet", "metered", quota=apikeys.Quota(limit=CALLS * SPEND_COST)
    )
    replies = fleet.hammer("/spend", metered.secret, 3 * CALLS)
    accepted = [reply for reply in replies if reply.status == 200]
    used = quota_used(fleet.database_url, metered.id)
    logger.info(
        "quota of %d calls: %d accepted, %d charged in the database",
        CALLS, len(accepted), used // SPEND_COST,
    )  # fmt: skip
    assert len(accepted) == CALLS
    assert len({reply.worker for reply in replies}) > 1, replies  # several workers answered
    assert used == len(accepted) * SPEND_COST
    for reply in (reply for reply in replies if reply.status != 200):
        assert (reply.status, reply.code) == (429, "quota_exceeded"), reply
        assert reply.retry_after is not None, reply


def test_calls_the_rate_limit_refuses_leave_the_quota_as_it_was(fleet: Fleet) -> None:
    """Each call charges the quota in the database first, and gives it back when the rate
    limit (in Redis) then refuses: what the database holds is what was accepted."""
    started = time.time()
    window = window_with_room(ROOM, started)
    both = fleet.admin.create_api_key(
        "user_fleet",
        "both",
        rate_limit=apikeys.RateLimit(limit=CALLS * SPEND_COST, window=window),
        quota=apikeys.Quota(limit=10 * CALLS * SPEND_COST),
    )
    replies = fleet.hammer("/spend", both.secret, 3 * CALLS)
    assert {reply.window(window) for reply in replies} == {int(started // window)}
    accepted = [reply for reply in replies if reply.status == 200]
    used = quota_used(fleet.database_url, both.id)
    logger.info(
        "rate limit of %d calls over a quota of %d: %d accepted, %d charged in the database",
        CALLS, 10 * CALLS, len(accepted), used // SPEND_COST,
    )  # fmt: skip
    assert len(accepted) == CALLS
    assert refused_for_the_others(replies, CALLS), replies
    assert used == len(accepted) * SPEND_COST
    for reply in (reply for reply in replies if reply.status != 200):
        assert (reply.status, reply.code) == (429, "rate_limited"), reply


def test_every_window_accepts_exactly_the_rate_limit_again(fleet: Fleet) -> None:
    """A flow of calls through the workers across short windows: each window it covers whole
    accepts the limit again, never one more. A call is counted at some moment between its
    request and its answer: one asked in a window and answered in the next may belong to
    either (the calls in flight as a window ends are the first counted in the next, so the
    limit is more than the calls in flight at once)."""
    window, limit, whole = 3, LIMIT, 2
    limited = fleet.admin.create_api_key(
        "user_fleet", "refilled", rate_limit=apikeys.RateLimit(limit=limit, window=window)
    )
    first = int(time.time() // window) + 1  # the first window the flow covers whole
    end = (first + whole) * window
    with Flow(fleet.port, "/whoami", limited.secret, pinned=fleet.pinned) as flow:
        eventually(
            lambda: flow.count(lambda reply: reply.asked >= end) > 0,
            timeout=end - time.time() + WAIT,
        )
    accepted = [reply for reply in flow.replies if reply.status == 200]
    for number in range(first, first + whole):
        inside = sum(reply.window(window) == number for reply in accepted)
        across = sum(
            reply.window(window) is None
            and number in (reply.asked // window, reply.answered // window)
            for reply in accepted
        )
        logger.info("window of %d s: %d accepted in it, %d maybe", window, inside, across)
        assert inside <= limit <= inside + across, (number, inside, across)
    for reply in flow.replies:
        if reply.status != 200:
            assert (reply.status, reply.code) == (429, "rate_limited"), reply
            assert reply.retry_after is not None and 1 <= int(reply.retry_after) <= window, reply

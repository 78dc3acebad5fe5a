"""Per-client failure limits, on by default for Clerk: floods of random Clerk keys, sent as real
requests through each framework's own test client, spend a handful of Clerk calls.

Every app here is the demo app on the real Clerk manager, built from ``clerk://`` and
pointed at a :class:`~apikeys.testing.FakeClerk` served on loopback (which counts every
call), with ``client_max_failures`` left unset. The test clients connect from 127.0.0.1:
listed in ``trusted_proxies``, it is a reverse proxy whose ``X-Forwarded-For`` names the
clients behind it; unlisted, it is one client whatever that header says.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import httpx
import pytest

from apikeys._factory import builtin_backend_of
from apikeys._ratelimit import FailureLimiter
from apikeys.backends.clerk import ClerkKeyManager
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
from apikeys.integrations._settings import CLERK_CLIENT_MAX_FAILURES, IntegrationSettings, Limiters
from apikeys.testing import FAKE_SECRET_KEY, FakeClerk
from tests.clerk_server import served
from tests.integrations.apps import (
    SendingClient,
    asgi_client,
    fastapi_app,
    flask_app,
    flask_client,
    starlette_app,
)
from tests.integrations.contract import AppOptions, Client, Reply, bearer
from tests.integrations.django_settings import configured, django_client
from tests.integrations.servers import running_server, uvicorn_command
from tests.integrations.test_django_rest_framework import drf_client
from tests.redis_server import RedisServer

pytestmark = pytest.mark.clerk

VERIFY = "POST /api_keys/verify"
FLOOD = 1_000
CLIENTS = 50
PROXY = "127.0.0.1"
"""The test clients' address: the reverse proxy where it is trusted."""
HOLDER = "203.0.113.5"
"""The legitimate client behind the proxy, calling with its known key throughout."""
HOLDER_EVERY = 20
"""The holder calls once every this many flood requests."""
STILL = 86400
"""``client_failure_window``: no allowance grows back during a test, so counts are exact."""


def behind_proxy(**settings: object) -> IntegrationSettings:
    return IntegrationSettings.model_validate(
        {"trusted_proxies": (PROXY,), "client_failure_window": STILL, **settings}
    )


def random_key() -> str:
    """A string shaped like a Clerk secret that Clerk has never issued."""
    return "ak_" + secrets.token_urlsafe(24)


def flood_calls(fake: FakeClerk, *known: str) -> int:
    """Calls to Clerk's verify endpoint for secrets other than ``known`` (the holder's)."""
    return sum(
        1
        for request in fake.requests
        if f"{request.method} {request.route}" == VERIFY and request.body["secret"] not in known
    )


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClerk]:
    """A FakeClerk on loopback, the Clerk instance every ``clerk://`` manager here reaches.

    The managers' verification budget is off, so the per-client limit is measured alone;
    :func:`test_fifty_clients_spend_at_most_the_verification_budget` turns it back on.
    """
    fake = FakeClerk()
    with served(fake) as api_url:
        monkeypatch.setenv("CLERK_API_URL", api_url)
        monkeypatch.setenv("CLERK_SECRET_KEY", FAKE_SECRET_KEY)
        monkeypatch.setenv("APIKEYS_VERIFICATION_BUDGET", "0")
        monkeypatch.delenv("APIKEYS_REDIS_URL", raising=False)
        yield fake


@pytest.fixture
def known_key(fake: FakeClerk) -> str:
    """A key Clerk issued: the legitimate client's."""
    with fake.key_manager() as issuer:
        return issuer.create_api_key(fake.new_user_id(), "holder").secret


# --- each framework's demo app, on clerk://, under its own test client ----------------------


def _drf(settings: IntegrationSettings) -> AbstractContextManager[Client]:
    @contextmanager
    def opened() -> Iterator[Client]:
        with drf_client("clerk://", AppOptions(settings=settings)) as get:
            # Only GET without a query or a body is sent here.
            yield SendingClient(lambda _method, path, headers, *_: get(path, **(headers or {})))

    return opened()


Opener = Callable[[IntegrationSettings], AbstractContextManager[Client]]
FRAMEWORKS = [
    pytest.param(
        lambda s: asgi_client(fastapi_app("clerk://", AppOptions(settings=s)), peer=PROXY),
        "/protected", marks=pytest.mark.fastapi, id="fastapi",
    ),
    pytest.param(
        lambda s: asgi_client(starlette_app("clerk://", AppOptions(settings=s)), peer=PROXY),
        "/protected", marks=pytest.mark.fastapi, id="starlette",
    ),
    pytest.param(
        lambda s: flask_client(flask_app("clerk://", AppOptions(settings=s))),
        "/protected-sync", marks=pytest.mark.flask, id="flask",
    ),
    pytest.param(
        lambda s: django_client("clerk://", AppOptions(settings=s), asynchronous=False),
        "/protected-sync", marks=pytest.mark.django, id="django-sync",
    ),
    pytest.param(
        lambda s: django_client("clerk://", AppOptions(settings=s), asynchronous=True),
        "/protected", marks=pytest.mark.django, id="django-async",
    ),
    pytest.param(_drf, "/drf/key", marks=pytest.mark.django, id="django-rest-framework"),
]  # fmt: skip


class Holder:
    """The legitimate client: calls with its known key, and remembers every refusal."""

    def __init__(self, client: Client, route: str, secret: str) -> None:
        self.client, self.route, self.secret = client, route, secret
        self.calls = 0
        self.refusals: list[int] = []

    def call(self) -> None:
        headers = {**bearer(self.secret), **forwarded_for(HOLDER)}
        reply = self.client.request("GET", self.route, headers=headers)
        self.calls += 1
        if reply.status != 200:
            self.refusals.append(reply.status)


def assert_limited(replies: list[Reply], allowed: int) -> None:
    """``allowed`` refusals by Clerk (403), then only 429s with ``Retry-After``."""
    statuses = [reply.status for reply in replies]
    assert statuses == [403] * allowed + [429] * (len(replies) - allowed), Counter(statuses)
    for reply in replies[allowed:]:
        assert reply.json["code"] == "rate_limited"
        assert int(reply.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("open_app", "route"), FRAMEWORKS)
def test_one_client_flooding_random_keys_is_limited_after_the_default(
    open_app: Opener, route: str, fake: FakeClerk, known_key: str
) -> None:
    flooder = forwarded_for("198.51.100.7")
    with open_app(behind_proxy()) as client:
        holder = Holder(client, route, known_key)
        replies = []
        for n in range(FLOOD):
            if n % HOLDER_EVERY == 0:
                holder.call()
            headers = {**bearer(random_key()), **flooder}
            replies.append(client.request("GET", route, headers=headers))
    assert_limited(replies, CLERK_CLIENT_MAX_FAILURES)
    assert holder.refusals == [] and holder.calls == FLOOD // HOLDER_EVERY
    assert flood_calls(fake, known_key) == CLERK_CLIENT_MAX_FAILURES


@pytest.mark.parametrize(("open_app", "route"), FRAMEWORKS)
def test_fifty_clients_behind_a_trusted_proxy_are_each_limited(
    open_app: Opener, route: str, fake: FakeClerk, known_key: str
) -> None:
    per_client = FLOOD // CLIENTS
    replies: dict[str, list[Reply]] = {f"198.51.100.{n + 1}": [] for n in range(CLIENTS)}
    with open_app(behind_proxy()) as client:
        holder = Holder(client, route, known_key)
        for _ in range(per_client):  # the clients take turns, as if at once
            holder.call()
            for address, answers in replies.items():
                # What the client wrote, then the address the proxy saw and appended.
                headers = {**bearer(random_key()), **forwarded_for(f"192.0.2.9, {address}")}
                answers.append(client.request("GET", route, headers=headers))
    for answers in replies.values():
        assert_limited(answers, CLERK_CLIENT_MAX_FAILURES)
    assert holder.refusals == [] and holder.calls == per_client
    assert flood_calls(fake, known_key) == CLIENTS * CLERK_CLIENT_MAX_FAILURES


@pytest.mark.parametrize(("open_app", "route"), FRAMEWORKS)
def test_fifty_clients_spend_at_most_the_verification_budget(
    open_app: Opener, route: str, fake: FakeClerk, known_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both defaults on: each client's failure limit and the manager's budget for unknown keys.
    monkeypatch.delenv("APIKEYS_VERIFICATION_BUDGET")
    budget, window = 20, 10.0
    per_client = FLOOD // CLIENTS
    statuses: Counter[int] = Counter()
    started = time.monotonic()
    with open_app(behind_proxy()) as client:
        holder = Holder(client, route, known_key)
        for _ in range(per_client):
            holder.call()
            for n in range(CLIENTS):
                address = f"198.51.100.{n + 1}"
                headers = {**bearer(random_key()), **forwarded_for(f"192.0.2.9, {address}")}
                reply = client.request("GET", route, headers=headers)
                statuses[reply.status] += 1
                if reply.status == 503:
                    assert reply.json["code"] == "verification_budget_spent"
                    assert int(reply.headers["retry-after"]) >= 1
    windows = int((time.monotonic() - started) // window) + 1
    assert set(statuses) <= {403, 429, 503}, statuses
    assert statuses[503] > 0, statuses
    assert holder.refusals == [] and holder.calls == per_client
    assert flood_calls(fake, known_key) == statuses[403] <= budget * windows


@pytest.mark.parametrize(("open_app", "route"), FRAMEWORKS)
def test_a_forged_x_forwarded_for_from_an_untrusted_peer_does_not_split_the_count(
    open_app: Opener, route: str, fake: FakeClerk
) -> None:
    # No trusted proxies: the peer is the client, whatever address each request claims.
    with open_app(IntegrationSettings(client_failure_window=STILL)) as client:
        replies = [
            client.request(
                "GET",
                route,
                headers={**bearer(random_key()), **forwarded_for(f"198.51.100.{n % 250 + 1}")},
            )
            for n in range(FLOOD)
        ]
    assert_limited(replies, CLERK_CLIENT_MAX_FAILURES)
    assert fake.count(VERIFY) == CLERK_CLIENT_MAX_FAILURES


@pytest.mark.parametrize(("open_app", "route"), FRAMEWORKS)
def test_an_explicit_zero_turns_the_default_off(
    open_app: Opener, route: str, fake: FakeClerk
) -> None:
    sent = 3 * CLERK_CLIENT_MAX_FAILURES
    with open_app(behind_proxy(client_max_failures=0)) as client:
        statuses = [
            client.request("GET", route, headers=bearer(random_key())).status for _ in range(sent)
        ]
    assert statuses == [403] * sent
    assert fake.count(VERIFY) == sent  # every one reached Clerk: the limit is off


@pytest.mark.fastapi
def test_an_explicit_limit_wins_over_the_default(fake: FakeClerk) -> None:
    with asgi_client(
        fastapi_app("clerk://", AppOptions(settings=behind_proxy(client_max_failures=3))),
        peer=PROXY,
    ) as client:
        replies = [
            client.request("GET", "/protected", headers=bearer(random_key())) for _ in range(20)
        ]
    assert_limited(replies, 3)
    assert fake.count(VERIFY) == 3


@pytest.mark.fastapi
def test_the_default_counts_for_every_worker_with_redis(
    fake: FakeClerk, redis: RedisServer
) -> None:
    pytest.importorskip("redis")
    settings = behind_proxy(redis_url=redis.url)
    workers = [fastapi_app("clerk://", AppOptions(settings=settings)) for _ in range(3)]
    with (
        asgi_client(workers[0], peer=PROXY) as a,
        asgi_client(workers[1], peer=PROXY) as b,
        asgi_client(workers[2], peer=PROXY) as c,
    ):
        replies = [
            (a, b, c)[n % 3].request("GET", "/protected", headers=bearer(random_key()))
            for n in range(3 * CLERK_CLIENT_MAX_FAILURES)
        ]
    assert_limited(replies, CLERK_CLIENT_MAX_FAILURES)
    assert fake.count(VERIFY) == CLERK_CLIENT_MAX_FAILURES


def test_only_clerk_managers_get_the_default() -> None:
    default = Limiters.of(IntegrationSettings())
    explicit = Limiters.of(IntegrationSettings(client_max_failures=4))
    assert isinstance(default.client, FailureLimiter)
    assert default.client.max_failures == CLERK_CLIENT_MAX_FAILURES == 10
    with FakeClerk().key_manager() as clerk, SQLAlchemyKeyManager("sqlite:///:memory:") as local:
        assert default.client_for(clerk) is default.client
        assert default.client_for(local) is None
        assert explicit.client_for(clerk) is explicit.client_for(local) is explicit.client
    assert default.client_for(object()) is None
    assert Limiters.of(IntegrationSettings(client_max_failures=0)).client_for(object()) is None

    class OwnClerkManager(ClerkKeyManager):
        """A subclass is still a Clerk manager."""

    with httpx.Client() as http, OwnClerkManager(FAKE_SECRET_KEY, http_client=http) as own:
        assert default.client_for(own) is default.client
        assert builtin_backend_of(own) == "clerk"


# --- the same flood at a real server, with the example app's own defaults -------------------


@pytest.mark.e2e
@pytest.mark.fastapi
def test_a_flood_at_a_real_server_spends_the_default_and_spares_the_holder(
    fake: FakeClerk, known_key: str
) -> None:
    # The example app, as shipped: no integration settings at all. The flooder and the
    # holder connect from two loopback addresses, so each is a client of its own.
    flooder = httpx.HTTPTransport(local_address="127.0.0.1")
    holder = httpx.HTTPTransport(local_address="127.0.0.2")
    refused: list[int] = []
    with running_server(uvicorn_command, "examples.fastapi_app:app", "clerk://") as base_url:
        started = time.monotonic()
        with (
            httpx.Client(base_url=base_url, transport=flooder, timeout=30) as attack,
            httpx.Client(base_url=base_url, transport=holder, timeout=30) as legit,
        ):
            replies = []
            for n in range(FLOOD):
                if n % HOLDER_EVERY == 0:
                    status = legit.get("/protected", headers=bearer(known_key)).status_code
                    if status != 200:
                        refused.append(status)
                replies.append(attack.get("/protected", headers=bearer(random_key())))
        elapsed = time.monotonic() - started
    statuses = Counter(reply.status_code for reply in replies)
    assert set(statuses) == {403, 429}
    assert all(int(r.headers["retry-after"]) >= 1 for r in replies if r.status_code == 429)
    assert refused == []
    # The default window (60 s) gives one more attempt every 6 s of the run.
    grown_back = int(elapsed * CLERK_CLIENT_MAX_FAILURES / 60) + 1
    assert CLERK_CLIENT_MAX_FAILURES <= statuses[403] <= CLERK_CLIENT_MAX_FAILURES + grown_back
    assert flood_calls(fake, known_key) == statuses[403]

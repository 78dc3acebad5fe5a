"""One behaviour suite that every framework integration runs.

A framework's test module subclasses :class:`IntegrationContract` and provides
the ``make_client`` fixture: a factory that builds the framework's demo app
(see :class:`AppOptions`) on a database URL and returns that framework's own
test client, wrapped as a :class:`Client`. The tests here then prove that
every framework answers every request the same way.

The demo app every framework builds:

- ``GET /protected`` and ``GET /protected-sync``: ``require_api_key()``,
  answering the product docs' body (an ``async`` and a sync handler);
- ``GET /scoped``: ``require_api_key(scopes=["read:data"])``;
- ``GET /admin``: ``require_api_key(scopes=["admin:write"])``;
- ``GET /rate-limited``: raises ``RateLimitedError(retry_after=7)`` in the handler;
- the management endpoints at ``/api-keys``;
- with ``AppOptions.middleware``: ``APIKeyMiddleware`` over the whole app,
  exempting ``/health`` and ``/public/*``, plus ``GET /health``,
  ``GET /public/info`` and ``GET /whoami`` (answers the published key's user id
  or ``null``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import pytest

import apikeys
from apikeys.integrations._settings import IntegrationSettings, Limiters
from tests.integrations.conftest import OTHER_OWNER, OWNER, Seeded


@dataclass(frozen=True)
class Reply:
    """A response, whatever client produced it."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


class Client(Protocol):
    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Reply: ...


@dataclass(frozen=True)
class AppOptions:
    """How to build the demo app."""

    settings: IntegrationSettings = field(default_factory=IntegrationSettings)
    middleware: bool = False
    middleware_scopes: tuple[str, ...] = ()
    clock: Callable[[], float] | None = None
    """The clock of the app's ``POST /api-keys`` creation limit (see :func:`apply_clock`)."""


def apply_clock(limiters: Limiters, options: AppOptions) -> None:
    """Give the creation limiter of an app's ``APIKeys`` ``options.clock``."""
    if options.clock is None:
        return
    limiter = limiters.creation
    if limiter is not None:
        limiter.clock = options.clock


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ClientFactory = Callable[..., AbstractContextManager[Client]]
"""``make_client(url, AppOptions(...))`` → a context manager yielding a :class:`Client`."""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def as_json(body: object) -> bytes:
    return json.dumps(body).encode()


def assert_no_secret(reply: Reply, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in reply.text
    assert "Traceback" not in reply.text


def post_key(client: Client, secret: str, body: object) -> Reply:
    """``POST /api-keys`` with ``body`` as JSON, authenticated by ``secret``."""
    return client.request("POST", "/api-keys", headers=bearer(secret), content=as_json(body))


PROTECTED = ["/protected", "/protected-sync"]

DAY = 86400


def limited_key(
    seeded: Seeded,
    *,
    rate_limit: apikeys.RateLimit | None = None,
    quota: apikeys.Quota | None = None,
) -> str:
    """The secret of a new ``OWNER`` key with ``read:data`` and these limits."""
    manager = apikeys.create_key_manager(seeded.url)
    try:
        made = manager.create_api_key(
            OWNER, "limited", ["read:data"], rate_limit=rate_limit, quota=quota
        )
    finally:
        manager.close()
    return made.secret


def parse_fields(value: str) -> dict[str, dict[str, int]]:
    """A ``RateLimit`` field (a list of sf-string items with integer parameters) by policy."""
    items: dict[str, dict[str, int]] = {}
    for member in value.split(", "):
        name, *parameters = member.split(";")
        assert name.startswith('"') and name.endswith('"'), value
        items[name.strip('"')] = {
            key: int(number) for key, number in (p.split("=") for p in parameters)
        }
    return items


def assert_a_refused_costly_call_charges_nothing(
    make_guarded: Callable[[], AbstractContextManager[Client]], seeded: Seeded, path: str
) -> None:
    """Behind the middleware (``make_guarded``), a key with 3 calls left asks for ``path``,
    which costs 5, and for ``/admin``, whose scope it lacks: they are refused with
    429 and 403, and the key still has 3 left."""
    secret = limited_key(seeded, rate_limit=apikeys.RateLimit(limit=4, window=DAY))
    with make_guarded() as guarded:
        first = guarded.request("GET", "/whoami", headers=bearer(secret))
        refused = guarded.request("GET", path, headers=bearer(secret))
        unscoped = guarded.request("GET", "/admin", headers=bearer(secret))
        after = guarded.request("GET", "/whoami", headers=bearer(secret))
    assert (first.status, refused.status, unscoped.status, after.status) == (200, 429, 403, 200)
    assert unscoped.json["code"] == "insufficient_scope"
    assert unscoped.json["missingScopes"] == ["admin:write"]
    assert parse_fields(first.headers["ratelimit"])["rate"]["r"] == 3
    assert refused.json["code"] == "rate_limited"
    assert refused.headers["ratelimit-policy"] == '"rate";q=4;w=86400'
    assert parse_fields(refused.headers["ratelimit"])["rate"]["r"] == 0
    assert parse_fields(after.headers["ratelimit"])["rate"]["r"] == 2  # 3 were still left


class IntegrationContract:
    """Behaviour shared by every framework. Subclasses provide ``make_client``."""

    @pytest.fixture
    def make_client(self) -> ClientFactory:
        raise NotImplementedError

    @pytest.fixture
    def client(self, make_client: ClientFactory, seeded: Seeded) -> Iterator[Client]:
        with make_client(seeded.url, AppOptions()) as made:
            yield made

    # --- protecting a route -----------------------------------------------------------

    @pytest.mark.parametrize("path", PROTECTED)
    def test_no_key_is_401_with_a_bearer_challenge(self, client: Client, path: str) -> None:
        reply = client.request("GET", path)
        assert reply.status == 401
        assert reply.headers["www-authenticate"] == 'Bearer realm="api"'
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json == {"code": "missing_api_key", "message": "An API key is required"}

    @pytest.mark.parametrize("path", PROTECTED)
    def test_valid_key_answers_the_product_docs_example(
        self, client: Client, seeded: Seeded, path: str
    ) -> None:
        before = datetime.now(UTC)
        reply = client.request("GET", path, headers=bearer(seeded.admin.secret))
        assert reply.status == 200
        body = reply.json
        assert body["message"] == "API key authentication successful"
        assert body["user"] == OWNER
        stamp = datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
        assert set(body) == {"message", "user", "timestamp"}

    @pytest.mark.parametrize(
        "make_headers",
        [
            lambda k: {"Authorization": f"Bearer {k}"},
            lambda k: {"authorization": f"bearer {k}"},
            lambda k: {"Authorization": f"BEARER   {k}  "},
            lambda k: {"Authorization": f"\tBearer\t{k}"},
            lambda k: {"X-API-Key": k},
            lambda k: {"x-api-key": f"  {k} "},
            lambda k: {"X-API-Key": f"Bearer {k}"},
            lambda k: {"Authorization": f"Bearer {k}", "X-API-Key": k},
        ],
        ids=["bearer", "lowercase", "upper-spaces", "tabs", "x-api-key", "x-api-key-spaces",
             "x-api-key-bearer", "both-same"],
    )  # fmt: skip
    def test_header_variants_are_accepted(
        self, client: Client, seeded: Seeded, make_headers: Callable[[str], dict[str, str]]
    ) -> None:
        reply = client.request("GET", "/protected", headers=make_headers(seeded.admin.secret))
        assert reply.status == 200, reply.text
        assert reply.json["user"] == OWNER

    def test_two_different_keys_are_refused(self, client: Client, seeded: Seeded) -> None:
        headers = {**bearer(seeded.admin.secret), "X-API-Key": seeded.reader.secret}
        reply = client.request("GET", "/protected", headers=headers)
        assert reply.status == 403
        assert reply.json["code"] == "invalid_api_key"
        assert_no_secret(reply, seeded.admin.secret, seeded.reader.secret)

    def test_another_authorization_scheme_counts_as_no_key(self, client: Client) -> None:
        reply = client.request("GET", "/protected", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert reply.status == 401
        assert reply.json["code"] == "missing_api_key"

    @pytest.mark.parametrize(
        ("pick", "code"),
        [
            (lambda s: "apk_1garbage", "invalid_api_key"),
            (lambda s: "x" * 600, "invalid_api_key"),
            (lambda s: "x" * 20_000, "invalid_api_key"),
            (lambda s: s.admin.secret[:-1] + ("A" if s.admin.secret[-1] != "A" else "B"),
             "invalid_api_key"),
            (lambda s: s.revoked.secret, "revoked_api_key"),
            (lambda s: s.expired.secret, "expired_api_key"),
        ],
        ids=["malformed", "too-long", "huge", "typo", "revoked", "expired"],
    )  # fmt: skip
    def test_refused_keys_are_403(
        self, client: Client, seeded: Seeded, pick: Callable[[Seeded], str], code: str
    ) -> None:
        presented = pick(seeded)
        reply = client.request("GET", "/protected", headers=bearer(presented))
        assert reply.status == 403
        assert reply.json["code"] == code
        assert "www-authenticate" not in reply.headers
        assert_no_secret(reply, presented, seeded.admin.secret)

    def test_unknown_key_is_refused_like_a_malformed_one(
        self, client: Client, seeded: Seeded
    ) -> None:
        unknown = apikeys.generate_key().key  # well-formed, never stored
        unknown_reply = client.request("GET", "/protected", headers=bearer(unknown))
        malformed_reply = client.request("GET", "/protected", headers=bearer("apk_1nope"))
        assert unknown_reply.status == malformed_reply.status == 403
        assert unknown_reply.json == malformed_reply.json

    def test_non_ascii_key_is_refused(self, client: Client) -> None:
        reply = client.request("GET", "/protected", headers={"X-API-Key": "apk_1clé"})
        assert reply.status == 403
        assert reply.json["code"] == "invalid_api_key"

    def test_missing_scope_is_403_insufficient_scope(self, client: Client, seeded: Seeded) -> None:
        reply = client.request("GET", "/admin", headers=bearer(seeded.admin.secret))
        assert reply.status == 403
        assert reply.json["code"] == "insufficient_scope"
        assert reply.json["missingScopes"] == ["admin:write"]
        challenge = reply.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="admin:write"' in challenge

    def test_held_scope_passes(self, client: Client, seeded: Seeded) -> None:
        reply = client.request("GET", "/scoped", headers=bearer(seeded.reader.secret))
        assert reply.status == 200
        assert reply.json["user"] == OWNER

    def test_rate_limit_error_is_429_with_retry_after(self, client: Client, seeded: Seeded) -> None:
        reply = client.request("GET", "/rate-limited", headers=bearer(seeded.admin.secret))
        assert reply.status == 429
        assert reply.headers["retry-after"] == "7"
        assert reply.json == {"code": "rate_limited", "message": "slow down", "retryAfter": 7}

    def test_backend_unavailable_is_503_with_retry_after(
        self, make_client: ClientFactory, unavailable_url: str, seeded: Seeded
    ) -> None:
        with make_client(unavailable_url, AppOptions()) as broken:
            reply = broken.request("GET", "/protected", headers=bearer(seeded.admin.secret))
            listing = broken.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        for answer in (reply, listing):
            assert answer.status == 503
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json["code"] == "backend_unavailable"
            # The generic message: nothing about drivers, paths or SQL.
            assert answer.json["message"] == "API key backend is unavailable"
            assert_no_secret(answer, seeded.admin.secret, unavailable_url)

    def test_rfc6750_mode_answers_401_invalid_token(
        self, make_client: ClientFactory, seeded: Seeded
    ) -> None:
        options = AppOptions(settings=IntegrationSettings(invalid_key_status=401))
        with make_client(seeded.url, options) as rfc_client:
            for presented, code in [
                ("apk_1garbage", "invalid_api_key"),
                (seeded.revoked.secret, "revoked_api_key"),
            ]:
                reply = rfc_client.request("GET", "/protected", headers=bearer(presented))
                assert reply.status == 401
                assert reply.json["code"] == code
                challenge = reply.headers["www-authenticate"]
                assert challenge.startswith('Bearer realm="api", error="invalid_token"')
            scope_reply = rfc_client.request("GET", "/admin", headers=bearer(seeded.admin.secret))
            assert scope_reply.status == 403

    def test_query_string_key_is_refused_by_default(self, client: Client, seeded: Seeded) -> None:
        reply = client.request("GET", "/protected", params={"api_key": seeded.admin.secret})
        assert reply.status == 401
        assert reply.json["code"] == "missing_api_key"
        assert "query string" in reply.json["message"]
        assert_no_secret(reply, seeded.admin.secret)

    def test_query_string_key_when_enabled(
        self, make_client: ClientFactory, seeded: Seeded
    ) -> None:
        options = AppOptions(settings=IntegrationSettings(allow_query_param=True))
        with make_client(seeded.url, options) as query_client:
            reply = query_client.request(
                "GET", "/protected", params={"api_key": seeded.admin.secret}
            )
        assert reply.status == 200
        assert reply.json["user"] == OWNER

    def test_custom_header_names(self, make_client: ClientFactory, seeded: Seeded) -> None:
        options = AppOptions(settings=IntegrationSettings(header_names=("X-Service-Token",)))
        with make_client(seeded.url, options) as custom:
            good = custom.request(
                "GET", "/protected", headers={"x-service-token": seeded.admin.secret}
            )
            ignored = custom.request("GET", "/protected", headers=bearer(seeded.admin.secret))
        assert good.status == 200
        assert ignored.status == 401

    # --- whole-app middleware -----------------------------------------------------------

    @pytest.fixture
    def guarded(self, make_client: ClientFactory, seeded: Seeded) -> Iterator[Client]:
        with make_client(seeded.url, AppOptions(middleware=True)) as made:
            yield made

    @pytest.mark.parametrize("path", ["/health", "/public/info"])
    def test_exempt_paths_need_no_key(self, guarded: Client, path: str) -> None:
        reply = guarded.request("GET", path)
        assert reply.status == 200

    def test_exempt_path_with_a_trailing_slash(self, guarded: Client) -> None:
        # Whether "/health/" routes is the framework's business; the middleware lets it by.
        reply = guarded.request("GET", "/health/")
        assert reply.status not in (401, 403)

    def test_middleware_refuses_other_paths_without_a_key(self, guarded: Client) -> None:
        reply = guarded.request("GET", "/whoami")
        assert reply.status == 401
        assert reply.headers["www-authenticate"] == 'Bearer realm="api"'
        missing = guarded.request("GET", "/no-such-page")
        assert missing.status == 401  # unknown paths are not a way around the middleware

    def test_middleware_publishes_the_key(self, guarded: Client, seeded: Seeded) -> None:
        reply = guarded.request("GET", "/whoami", headers={"X-API-Key": seeded.reader.secret})
        assert reply.status == 200
        assert reply.json == {"user": OWNER}

    def test_middleware_refuses_a_revoked_key(self, guarded: Client, seeded: Seeded) -> None:
        reply = guarded.request("GET", "/whoami", headers=bearer(seeded.revoked.secret))
        assert reply.status == 403
        assert reply.json["code"] == "revoked_api_key"

    def test_route_scopes_still_apply_behind_the_middleware(
        self, guarded: Client, seeded: Seeded
    ) -> None:
        reply = guarded.request("GET", "/admin", headers=bearer(seeded.admin.secret))
        assert reply.status == 403
        assert reply.json["missingScopes"] == ["admin:write"]

    def test_middleware_scopes(self, make_client: ClientFactory, seeded: Seeded) -> None:
        options = AppOptions(middleware=True, middleware_scopes=("keys:read",))
        with make_client(seeded.url, options) as scoped:
            refused = scoped.request("GET", "/whoami", headers=bearer(seeded.reader.secret))
            allowed = scoped.request("GET", "/whoami", headers=bearer(seeded.admin.secret))
            exempt = scoped.request("GET", "/health")
        assert refused.status == 403
        assert refused.json["missingScopes"] == ["keys:read"]
        assert allowed.status == 200
        assert exempt.status == 200

    # --- management: listing ------------------------------------------------------------

    def test_list_returns_only_the_callers_keys_without_secrets(
        self, client: Client, seeded: Seeded
    ) -> None:
        reply = client.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        assert reply.status == 200
        assert reply.headers["cache-control"] == "no-store"
        body = reply.json
        names = {item["name"] for item in body["items"]}
        assert names == {"admin", "reader"}  # active keys of OWNER only
        assert all(item["userId"] == OWNER for item in body["items"])
        assert all("secret" not in item for item in body["items"])
        assert_no_secret(reply, seeded.admin.secret, seeded.reader.secret)
        assert body["total"] == 2
        assert body["hasMore"] is False

    def test_list_paginates_and_includes_invalid_keys_on_request(
        self, client: Client, seeded: Seeded
    ) -> None:
        first = client.request(
            "GET", "/api-keys", headers=bearer(seeded.admin.secret), params={"limit": "1"}
        ).json
        assert (len(first["items"]), first["total"], first["hasMore"]) == (1, 2, True)
        second = client.request(
            "GET",
            "/api-keys",
            headers=bearer(seeded.admin.secret),
            params={"limit": "1", "offset": "1"},
        ).json
        assert second["items"][0]["id"] != first["items"][0]["id"]
        everything = client.request(
            "GET",
            "/api-keys",
            headers=bearer(seeded.admin.secret),
            params={"includeInvalid": "true"},
        ).json
        states = {item["name"]: item["active"] for item in everything["items"]}
        assert states == {"admin": True, "reader": True, "revoked": False, "expired": False}

    @pytest.mark.parametrize(
        "params",
        [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"offset": "-1"},
         {"includeInvalid": "maybe"}],
    )  # fmt: skip
    def test_list_refuses_bad_paging(
        self, client: Client, seeded: Seeded, params: dict[str, str]
    ) -> None:
        reply = client.request(
            "GET", "/api-keys", headers=bearer(seeded.admin.secret), params=params
        )
        assert reply.status == 422
        assert [error["field"] for error in reply.json["errors"]] == list(params)

    def test_management_needs_a_key(self, client: Client) -> None:
        for method in ("GET", "POST", "DELETE"):
            reply = client.request(method, "/api-keys", content=as_json({"name": "x"}))
            assert reply.status == 401, method

    def test_management_scope(self, make_client: ClientFactory, seeded: Seeded) -> None:
        options = AppOptions(settings=IntegrationSettings(management_scope="keys:admin"))
        with make_client(seeded.url, options) as scoped:
            refused = scoped.request("GET", "/api-keys", headers=bearer(seeded.reader.secret))
            allowed = scoped.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        assert refused.status == 403
        assert refused.json["missingScopes"] == ["keys:admin"]
        assert allowed.status == 200  # keys:* covers keys:admin

    def test_a_key_without_the_management_scope_manages_nothing(
        self, client: Client, seeded: Seeded
    ) -> None:
        before = seeded.count_keys()
        reader = bearer(seeded.reader.secret)
        attempts = [
            client.request("GET", "/api-keys", headers=reader),
            post_key(client, seeded.reader.secret, {"name": "minted", "scopes": ["read:data"]}),
            client.request("DELETE", f"/api-keys/{seeded.admin.id}", headers=reader),
            client.request(
                "DELETE", "/api-keys", headers=reader, content=as_json({"id": seeded.admin.id})
            ),
            client.request("DELETE", "/api-keys", headers=reader, params={"id": seeded.admin.id}),
        ]
        for reply in attempts:
            assert reply.status == 403, reply.text
            assert reply.json["code"] == "insufficient_scope"
            assert reply.json["missingScopes"] == [apikeys.MANAGEMENT_SCOPE] == ["keys:manage"]
            assert reply.headers["www-authenticate"] == (
                'Bearer realm="api", error="insufficient_scope", scope="keys:manage"'
            )
            assert seeded.admin.id not in reply.text  # nothing listed
        assert seeded.count_keys() == before
        still_works = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
        assert still_works.status == 200

    def test_a_key_with_the_management_scope_manages_its_owners_keys(
        self, client: Client, seeded: Seeded
    ) -> None:
        manager = apikeys.create_key_manager(seeded.url)
        try:
            keeper = manager.create_api_key(OWNER, "keeper", [apikeys.MANAGEMENT_SCOPE])
        finally:
            manager.close()
        listed = client.request("GET", "/api-keys", headers=bearer(keeper.secret))
        assert listed.status == 200
        assert "keeper" in {item["name"] for item in listed.json["items"]}
        created = post_key(client, keeper.secret, {"name": "child", "scopes": ["keys:manage"]})
        assert created.status == 201, created.text
        revoked = client.request(
            "DELETE", f"/api-keys/{seeded.reader.id}", headers=bearer(keeper.secret)
        )
        assert revoked.status == 200
        assert revoked.json["active"] is False

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("PUT", "/api-keys", "GET, POST, DELETE"),
            ("PATCH", "/api-keys", "GET, POST, DELETE"),
            ("GET", "/api-keys/{id}", "DELETE"),
            ("POST", "/api-keys/{id}", "DELETE"),
            ("PUT", "/api-keys/{id}", "DELETE"),
            ("PATCH", "/api-keys/{id}", "DELETE"),
        ],
    )
    def test_a_method_the_endpoints_do_not_serve_is_one_json_405(
        self, client: Client, seeded: Seeded, method: str, path: str, allow: str
    ) -> None:
        path = path.format(id=seeded.reader.id)
        headers = {**bearer(seeded.admin.secret), "Content-Type": "application/json"}
        reply = client.request(method, path, headers=headers, content=as_json({"name": "x"}))
        assert reply.status == 405, reply.text
        assert reply.headers["allow"] == allow
        assert reply.json == {"code": "method_not_allowed", "message": "Method not allowed"}
        assert client.request(method, path).status == 401  # the key is checked first
        listed = client.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        assert seeded.reader.id in {item["id"] for item in listed.json["items"]}  # untouched
        assert "x" not in {item["name"] for item in listed.json["items"]}

    def test_open_management_lets_every_key_manage_its_owners_keys(
        self, make_client: ClientFactory, seeded: Seeded
    ) -> None:
        options = AppOptions(settings=IntegrationSettings(management_scope=None))
        with make_client(seeded.url, options) as open_client:
            reader = bearer(seeded.reader.secret)
            listed = open_client.request("GET", "/api-keys", headers=reader)
            created = post_key(open_client, seeded.reader.secret, {"name": "minted"})
            revoked = open_client.request("DELETE", f"/api-keys/{seeded.admin.id}", headers=reader)
        assert listed.status == 200
        assert created.status == 201
        assert created.json["scopes"] == []
        assert revoked.status == 200

    # --- management: creating -----------------------------------------------------------

    def test_create_returns_the_secret_once_and_it_works(
        self, client: Client, seeded: Seeded
    ) -> None:
        reply = post_key(
            client,
            seeded.admin.secret,
            {"name": "CI", "scopes": ["read:data"], "expiration": "2099-12-31"},
        )
        assert reply.status == 201
        assert reply.headers["cache-control"] == "no-store"
        created = reply.json
        assert created["userId"] == OWNER
        assert created["scopes"] == ["read:data"]
        assert created["expiresAt"] == "2100-01-01T00:00:00Z"
        used = client.request("GET", "/protected", headers=bearer(created["secret"]))
        assert used.status == 200
        listed = client.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        assert created["id"] in {item["id"] for item in listed.json["items"]}
        assert created["secret"] not in listed.text

    def test_create_with_own_user_id_and_wildcard_cover(
        self, client: Client, seeded: Seeded
    ) -> None:
        reply = post_key(
            client,
            seeded.admin.secret,
            {"name": "ops", "scopes": ["keys:read", "keys:*"], "userId": OWNER},
        )
        assert reply.status == 201
        assert reply.json["scopes"] == ["keys:read", "keys:*"]

    def test_create_for_another_user_is_403_and_writes_nothing(
        self, client: Client, seeded: Seeded
    ) -> None:
        before = seeded.count_keys()
        reply = post_key(client, seeded.admin.secret, {"name": "sneaky", "userId": OTHER_OWNER})
        assert reply.status == 403
        assert reply.json["code"] == "forbidden_user"
        assert seeded.count_keys() == before

    @pytest.mark.parametrize(
        ("scopes", "missing"),
        [(["admin:write"], ["admin:write"]), (["read:data", "write:data"], ["write:data"]),
         (["read:*"], ["read:*"])],
    )  # fmt: skip
    def test_create_cannot_escalate_scopes(
        self, client: Client, seeded: Seeded, scopes: list[str], missing: list[str]
    ) -> None:
        before = seeded.count_keys()
        reply = post_key(client, seeded.admin.secret, {"name": "escalate", "scopes": scopes})
        assert reply.status == 403
        assert reply.json["code"] == "insufficient_scope"
        assert reply.json["missingScopes"] == missing
        assert seeded.count_keys() == before

    def test_create_cannot_outlive_the_calling_key(self, client: Client, seeded: Seeded) -> None:
        manager = apikeys.create_key_manager(seeded.url)
        try:
            short_lived = manager.create_api_key(
                OWNER, "short", ["read:data", "keys:manage"], "2031-01-01"
            )
        finally:
            manager.close()
        inherited = post_key(client, short_lived.secret, {"name": "child"})
        assert inherited.status == 201
        assert inherited.json["expiresAt"] == "2031-01-02T00:00:00Z"
        earlier = post_key(client, short_lived.secret, {"name": "c2", "expiration": "2030-06-30"})
        assert earlier.status == 201
        before = seeded.count_keys()
        later = post_key(client, short_lived.secret, {"name": "c3", "expiration": "2040-01-01"})
        assert later.status == 403
        assert later.json["code"] == "expiration_beyond_caller"
        assert seeded.count_keys() == before

    def test_create_gives_limits_no_looser_than_the_calling_key(
        self, client: Client, seeded: Seeded
    ) -> None:
        manager = apikeys.create_key_manager(seeded.url)
        try:
            limited = manager.create_api_key(
                OWNER, "metered", ["read:data", "keys:manage"], rate_limit="10/1m", quota="1000/30d"
            )
        finally:
            manager.close()
        inherited = post_key(client, limited.secret, {"name": "child"})
        assert inherited.status == 201, inherited.text
        assert inherited.json["rateLimit"] == {"limit": 10, "window": 60}
        assert inherited.json["quota"] == {"limit": 1000, "period": 30 * 86400}
        tighter = post_key(
            client,
            limited.secret,
            {"name": "c2", "rateLimit": {"limit": 5, "window": 60}, "quota": {"limit": 10}},
        )
        assert tighter.status == 201, tighter.text
        assert tighter.json["rateLimit"] == {"limit": 5, "window": 60}
        assert tighter.json["quota"] == {"limit": 10, "period": None}
        before = seeded.count_keys()
        for looser in (
            {"rateLimit": None},
            {"rateLimit": {"limit": 20, "window": 60}},
            {"rateLimit": {"limit": 5, "window": 1}},
            {"quota": None},
            {"quota": {"limit": 1000, "period": 86400}},
        ):
            refused = post_key(client, limited.secret, {"name": "c3", **looser})
            assert refused.status == 403, looser
            assert refused.json["code"] == "limits_beyond_caller"
        assert seeded.count_keys() == before
        # A key without limits mints keys with any, or none.
        free = post_key(client, seeded.admin.secret, {"name": "c4", "rateLimit": None})
        assert free.status == 201
        assert free.json["rateLimit"] is None and free.json["quota"] is None

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            (b"not json", ["body"]),
            (b'["a list"]', ["body"]),
            (b'{"name": "a", "name": "b"}', ["name"]),
            (b'{"name": NaN}', ["body"]),
            (b"[" * 5000 + b"]" * 5000, ["body"]),
            (b"\xff\xfe", ["body"]),
            (as_json({}), ["name"]),
            (as_json({"name": ""}), ["name"]),
            (as_json({"name": 42}), ["name"]),
            (as_json({"name": "a", "scopes": "bad scope!"}), ["scopes"]),
            (as_json({"name": "a", "scopes": [1, 2]}), ["scopes"]),
            (as_json({"name": "a", "scopes": {"read": True}}), ["scopes"]),
            (as_json({"name": "a", "expiration": "2001-01-01"}), ["expiration"]),
            (as_json({"name": "a", "expiration": "soon"}), ["expiration"]),
            (as_json({"name": "a", "expiration": 1700000000}), ["expiration"]),
            (as_json({"name": "a", "userId": 7}), ["userId"]),
            (as_json({"name": "a", "metadata": [1]}), ["metadata"]),
            (as_json({"name": "a", "admin": True}), ["admin"]),
            (as_json({"name": "a", "owner": "x", "scopes": 3}), ["owner", "scopes"]),
            (as_json({"name": "a" * 100_000}), ["body"]),
            (as_json({"name": "a", "rateLimit": "100/1m"}), ["rateLimit"]),
            (as_json({"name": "a", "rateLimit": {"limit": 0, "window": 60}}), ["rateLimit.limit"]),
            (as_json({"name": "a", "rateLimit": {"limit": 5}}), ["rateLimit.window"]),
            (as_json({"name": "a", "quota": {"limit": 5, "period": 1.5}}), ["quota.period"]),
            (as_json({"name": "a", "quota": {"limit": True}}), ["quota.limit"]),
            (as_json({"name": "a", "quota": {"limit": 5, "every": 60}}), ["quota.every"]),
        ],
        ids=["not-json", "array", "repeated-field", "nan", "deep", "not-utf8", "empty",
             "empty-name", "name-type", "bad-scope", "scope-types", "scopes-object",
             "past-expiration", "unparseable-expiration", "numeric-expiration", "user-id-type",
             "metadata-type", "unknown-field", "several", "huge", "rate-limit-text",
             "rate-limit-zero", "rate-limit-no-window", "quota-fraction", "quota-bool",
             "quota-unknown-part"],
    )  # fmt: skip
    def test_create_refuses_bad_bodies_and_writes_nothing(
        self, client: Client, seeded: Seeded, body: bytes, fields: list[str]
    ) -> None:
        before = seeded.count_keys()
        reply = client.request(
            "POST",
            "/api-keys",
            headers={**bearer(seeded.admin.secret), "Content-Type": "application/json"},
            content=body,
        )
        assert reply.status == 422, reply.text
        assert reply.json["code"] == "invalid_input"
        assert sorted(error["field"] for error in reply.json["errors"]) == sorted(fields)
        assert seeded.count_keys() == before

    # --- management: how many keys an owner may create ----------------------------------

    def test_key_creations_are_limited_per_owner_with_retry_after(
        self, make_client: ClientFactory, seeded: Seeded
    ) -> None:
        clock = FakeClock()
        settings = IntegrationSettings(max_key_creations=3, key_creation_window=60)
        with make_client(seeded.url, AppOptions(settings=settings, clock=clock)) as limited:
            first = post_key(
                limited, seeded.admin.secret, {"name": "k0", "scopes": ["keys:manage"]}
            )
            assert first.status == 201
            # An invalid body creates nothing and counts nothing.
            assert post_key(limited, seeded.admin.secret, {"name": ""}).status == 422
            for index in (1, 2):
                assert post_key(limited, seeded.admin.secret, {"name": f"k{index}"}).status == 201
            before = seeded.count_keys()
            refused = post_key(limited, seeded.admin.secret, {"name": "k3"})
            assert refused.status == 429
            assert refused.headers["retry-after"] == "20"  # one creation per 60 / 3 s
            assert refused.json["code"] == "rate_limited"
            assert refused.json["retryAfter"] == 20
            # Per owner, not per key: the owner's other keys are refused too...
            sibling = post_key(limited, first.json["secret"], {"name": "k3"})
            assert sibling.status == 429
            assert seeded.count_keys() == before
            # ...another owner is not, and the rest of /api-keys still answers.
            assert post_key(limited, seeded.other.secret, {"name": "theirs"}).status == 201
            listed = limited.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
            assert listed.status == 200
            clock.now += 19.5
            assert post_key(limited, seeded.admin.secret, {"name": "k3"}).status == 429
            clock.now += 0.5
            assert post_key(limited, seeded.admin.secret, {"name": "k3"}).status == 201
            assert post_key(limited, seeded.admin.secret, {"name": "k4"}).status == 429

    def test_key_creations_are_limited_by_default(self, client: Client, seeded: Seeded) -> None:
        statuses: list[int] = []
        while len(statuses) < 101 and 429 not in statuses:
            statuses.append(post_key(client, seeded.admin.secret, {"name": "k"}).status)
        assert statuses[-1] == 429, f"{len(statuses)} keys created in a row, none refused"
        assert statuses == [201] * IntegrationSettings().max_key_creations + [429]
        assert post_key(client, seeded.admin.secret, {"name": "k"}).status == 429

    # --- management: revoking -----------------------------------------------------------

    def test_delete_by_path_revokes_with_a_reason(self, client: Client, seeded: Seeded) -> None:
        reply = client.request(
            "DELETE",
            f"/api-keys/{seeded.reader.id}",
            headers=bearer(seeded.admin.secret),
            content=as_json({"reason": "leaked in CI logs"}),
        )
        assert reply.status == 200
        assert reply.json["id"] == seeded.reader.id
        assert reply.json["revokedAt"] is not None
        assert reply.json["revocationReason"] == "leaked in CI logs"
        assert reply.json["active"] is False
        refused = client.request("GET", "/protected", headers=bearer(seeded.reader.secret))
        assert refused.status == 403
        assert refused.json["code"] == "revoked_api_key"

    def test_delete_with_the_id_in_the_body_or_the_query(
        self, client: Client, seeded: Seeded
    ) -> None:
        by_body = client.request(
            "DELETE",
            "/api-keys",
            headers=bearer(seeded.admin.secret),
            content=as_json({"id": seeded.reader.id}),
        )
        assert by_body.status == 200
        assert by_body.json["id"] == seeded.reader.id
        by_query = client.request(
            "DELETE",
            "/api-keys",
            headers=bearer(seeded.admin.secret),
            params={"id": seeded.expired.id, "reason": "old"},
        )
        assert by_query.status == 200
        assert by_query.json["revocationReason"] == "old"

    def test_delete_of_another_owners_key_is_404_like_an_unknown_one(
        self, client: Client, seeded: Seeded
    ) -> None:
        foreign = client.request(
            "DELETE", f"/api-keys/{seeded.other.id}", headers=bearer(seeded.admin.secret)
        )
        unknown = client.request(
            "DELETE", "/api-keys/AAAAAAAAAAAA", headers=bearer(seeded.admin.secret)
        )
        assert foreign.status == unknown.status == 404
        assert (
            foreign.json
            == unknown.json
            == {
                "code": "api_key_not_found",
                "message": "API key not found",
            }
        )
        still_works = client.request("GET", "/protected", headers=bearer(seeded.other.secret))
        assert still_works.status == 200

    @pytest.mark.parametrize("mode", ["revoke", "delete"])
    def test_keys_a_leaked_key_minted_die_with_it(
        self, make_client: ClientFactory, seeded: Seeded, mode: str
    ) -> None:
        delete: Literal["revoke", "delete"] = "delete" if mode == "delete" else "revoke"
        options = AppOptions(settings=IntegrationSettings(management_delete=delete))
        with make_client(seeded.url, options) as client:
            leaked = post_key(client, seeded.admin.secret, {"name": "leaked", "scopes": ["keys:*"]})
            child = post_key(
                client,
                leaked.json["secret"],
                {"name": "minted by the thief", "scopes": ["keys:manage"]},
            )
            grandchild = post_key(client, child.json["secret"], {"name": "and by the child"})
            assert child.status == grandchild.status == 201
            assert child.json["createdBy"] == leaked.json["id"]
            assert grandchild.json["createdBy"] == child.json["id"]
            for minted in (child, grandchild):
                works = client.request("GET", "/protected", headers=bearer(minted.json["secret"]))
                assert works.status == 200
            ended = client.request(
                "DELETE", f"/api-keys/{leaked.json['id']}", headers=bearer(seeded.admin.secret)
            )
            assert ended.status in (200, 204)
            for minted in (child, grandchild):
                refused = client.request("GET", "/protected", headers=bearer(minted.json["secret"]))
                assert refused.status == 403
                assert refused.json["code"] == "revoked_api_key"
            still = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
            assert still.status == 200

    def test_create_past_the_active_key_limit_is_409(
        self, make_client: ClientFactory, seeded: Seeded
    ) -> None:
        manager = apikeys.create_key_manager(seeded.url, max_active_keys_per_owner=0)
        try:
            active = manager.list_api_keys(OWNER).total
            for n in range(100 - active):
                manager.create_api_key(OWNER, f"filler {n}")
        finally:
            manager.close()
        before = seeded.count_keys()
        with make_client(seeded.url, AppOptions()) as client:
            reply = post_key(client, seeded.admin.secret, {"name": "one too many"})
        assert reply.status == 409
        assert reply.json["code"] == "key_limit_reached"
        assert "100 active API keys" in reply.json["message"]
        assert "max_active_keys_per_owner" in reply.json["message"]
        assert seeded.count_keys() == before

    @pytest.mark.parametrize("reason", ["nul\u0000byte", "line\nbreak", "\u001b[31mred"])
    def test_delete_refuses_control_characters_in_the_reason(
        self, client: Client, seeded: Seeded, reason: str
    ) -> None:
        reply = client.request(
            "DELETE",
            f"/api-keys/{seeded.reader.id}",
            headers=bearer(seeded.admin.secret),
            content=as_json({"reason": reason}),  # JSON escapes: \u0000, \n, \u001b
        )
        assert reply.status == 422, reply.text
        assert [error["field"] for error in reply.json["errors"]] == ["reason"]
        works = client.request("GET", "/protected", headers=bearer(seeded.reader.secret))
        assert works.status == 200

    @pytest.mark.parametrize(
        ("path", "params", "body", "fields"),
        [
            ("/api-keys", None, None, ["id"]),
            ("/api-keys", None, as_json({"id": 5}), ["id"]),
            ("/api-keys", None, as_json({"id": "a", "force": True}), ["force"]),
            ("/api-keys/AAAAAAAAAAAA", None, as_json({"id": "BBBBBBBBBBBB"}), ["id"]),
            ("/api-keys/AAAAAAAAAAAA", None, as_json({"reason": "r" * 501}), ["reason"]),
        ],
        ids=["no-id", "id-type", "unknown-field", "conflicting-ids", "long-reason"],
    )
    def test_delete_refuses_bad_requests(
        self,
        client: Client,
        seeded: Seeded,
        path: str,
        params: dict[str, str] | None,
        body: bytes | None,
        fields: list[str],
    ) -> None:
        reply = client.request(
            "DELETE", path, headers=bearer(seeded.admin.secret), params=params, content=body
        )
        assert reply.status == 422, reply.text
        assert [error["field"] for error in reply.json["errors"]] == fields

    def test_delete_mode_deletes_for_good(self, make_client: ClientFactory, seeded: Seeded) -> None:
        options = AppOptions(settings=IntegrationSettings(management_delete="delete"))
        before = seeded.count_keys()
        with make_client(seeded.url, options) as deleting:
            first = deleting.request(
                "DELETE", f"/api-keys/{seeded.reader.id}", headers=bearer(seeded.admin.secret)
            )
            second = deleting.request(
                "DELETE", f"/api-keys/{seeded.reader.id}", headers=bearer(seeded.admin.secret)
            )
        assert first.status == 204
        assert first.text == ""
        assert second.status == 404
        assert seeded.count_keys() == before - 1

    # --- per-key rate limits and quotas -----------------------------------------------
    # The keys' windows are a day long and nothing here waits: a window cannot end
    # mid-test but at midnight UTC, and the counts are read in the fields themselves.

    def test_a_rate_limited_key_counts_down_in_the_fields_then_is_429(
        self, client: Client, seeded: Seeded
    ) -> None:
        secret = limited_key(seeded, rate_limit=apikeys.RateLimit(limit=3, window=DAY))
        replies = [client.request("GET", "/protected", headers=bearer(secret)) for _ in range(4)]
        assert [reply.status for reply in replies] == [200, 200, 200, 429]
        for reply in replies[:3]:
            assert reply.headers["ratelimit-policy"] == '"rate";q=3;w=86400'
        states = [parse_fields(reply.headers["ratelimit"])["rate"] for reply in replies[:3]]
        assert [state["r"] for state in states] == [2, 1, 0]
        assert all(0 < state["t"] <= DAY for state in states)
        refused = replies[3]
        assert refused.json["code"] == "rate_limited"
        retry_after = int(refused.headers["retry-after"])
        assert 0 < retry_after <= DAY
        assert refused.json["retryAfter"] == retry_after
        assert refused.headers["ratelimit"] == f'"rate";r=0;t={retry_after}'

    def test_a_spent_quota_is_429_quota_exceeded(self, client: Client, seeded: Seeded) -> None:
        secret = limited_key(seeded, quota=apikeys.Quota(limit=2))
        replies = [client.request("GET", "/protected", headers=bearer(secret)) for _ in range(3)]
        assert [reply.status for reply in replies] == [200, 200, 429]
        assert replies[0].headers["ratelimit-policy"] == '"quota";q=2'
        assert [reply.headers["ratelimit"] for reply in replies] == [
            '"quota";r=1',
            '"quota";r=0',
            '"quota";r=0',
        ]
        assert replies[2].json["code"] == "quota_exceeded"
        assert int(replies[2].headers["retry-after"]) >= 1

    def test_a_429_of_a_limited_key_names_every_limit_with_what_it_still_has(
        self, client: Client, seeded: Seeded
    ) -> None:
        secret = limited_key(
            seeded,
            rate_limit=apikeys.RateLimit(limit=2, window=DAY),
            quota=apikeys.Quota(limit=10, period=timedelta(days=30)),
        )
        replies = [client.request("GET", "/protected", headers=bearer(secret)) for _ in range(4)]
        assert [reply.status for reply in replies] == [200, 200, 429, 429]
        policy = '"rate";q=2;w=86400, "quota";q=10;w=2592000'
        assert [reply.headers["ratelimit-policy"] for reply in replies] == [policy] * 4
        for refused in replies[2:]:
            assert refused.json["code"] == "rate_limited"
            retry_after = int(refused.headers["retry-after"])
            fields = parse_fields(refused.headers["ratelimit"])
            assert fields["rate"] == {"r": 0, "t": retry_after}
            # The refused calls spent nothing: the quota is where the second call left it.
            assert fields["quota"]["r"] == 8
            assert 0 < fields["quota"]["t"] <= 30 * DAY

    def test_a_429_of_a_spent_quota_carries_its_policy(
        self, client: Client, seeded: Seeded
    ) -> None:
        secret = limited_key(seeded, quota=apikeys.Quota(limit=5, period=timedelta(days=1)))
        assert client.request("GET", "/costly", headers=bearer(secret)).status == 200
        refused = client.request("GET", "/protected", headers=bearer(secret))
        assert refused.status == 429
        assert refused.json["code"] == "quota_exceeded"
        assert refused.headers["ratelimit-policy"] == '"quota";q=5;w=86400'
        retry_after = int(refused.headers["retry-after"])
        assert refused.headers["ratelimit"] == f'"quota";r=0;t={retry_after}'

    def test_a_route_with_cost_5_spends_5_and_a_refused_call_nothing(
        self, client: Client, seeded: Seeded
    ) -> None:
        secret = limited_key(
            seeded,
            rate_limit=apikeys.RateLimit(limit=100, window=DAY),
            quota=apikeys.Quota(limit=12, period=timedelta(days=30)),
        )
        costly = [client.request("GET", "/costly", headers=bearer(secret)) for _ in range(3)]
        assert [reply.status for reply in costly] == [200, 200, 429]
        remaining = [parse_fields(reply.headers["ratelimit"]) for reply in costly[:2]]
        assert [(r["rate"]["r"], r["quota"]["r"]) for r in remaining] == [(95, 7), (90, 2)]
        assert costly[0].headers["ratelimit-policy"] == (
            '"rate";q=100;w=86400, "quota";q=12;w=2592000'
        )
        assert costly[2].json["code"] == "quota_exceeded"
        assert parse_fields(costly[2].headers["ratelimit"])["quota"]["r"] == 0
        # A sync view, as /costly is: Django serves those with its sync manager,
        # whose rate-limit counts (without Redis) are not its async manager's.
        cheap = client.request("GET", "/protected-sync", headers=bearer(secret))
        assert cheap.status == 200
        after = parse_fields(cheap.headers["ratelimit"])
        assert (after["rate"]["r"], after["quota"]["r"]) == (89, 1)

    def test_behind_the_middleware_a_routes_cost_is_charged_once(
        self, make_client: ClientFactory, seeded: Seeded
    ) -> None:
        secret = limited_key(seeded, quota=apikeys.Quota(limit=12))
        with make_client(seeded.url, AppOptions(middleware=True)) as guarded:
            costly = guarded.request("GET", "/costly", headers=bearer(secret))
            cheap = guarded.request("GET", "/protected", headers=bearer(secret))
            whoami = guarded.request("GET", "/whoami", headers=bearer(secret))
        assert (costly.status, cheap.status, whoami.status) == (200, 200, 200)
        assert [reply.headers["ratelimit"] for reply in (costly, cheap, whoami)] == [
            '"quota";r=7',
            '"quota";r=6',
            '"quota";r=5',
        ]

    def test_a_handlers_error_carries_the_keys_fields(self, client: Client, seeded: Seeded) -> None:
        secret = limited_key(seeded, rate_limit=apikeys.RateLimit(limit=10, window=DAY))
        reply = client.request("GET", "/rate-limited", headers=bearer(secret))
        assert reply.status == 429
        assert reply.headers["retry-after"] == "7"
        assert reply.json["code"] == "rate_limited"
        assert parse_fields(reply.headers["ratelimit"])["rate"]["r"] == 9

    def test_an_unlimited_key_gets_no_ratelimit_fields(
        self, client: Client, seeded: Seeded
    ) -> None:
        for path in ("/protected", "/costly", "/rate-limited"):
            reply = client.request("GET", path, headers=bearer(seeded.admin.secret))
            assert reply.status in (200, 429)
            assert "ratelimit" not in reply.headers
            assert "ratelimit-policy" not in reply.headers

    def test_refused_keys_are_403_and_spend_nothing(
        self, client: Client, seeded: Seeded, sync_manager: apikeys.KeyManager
    ) -> None:
        quota = apikeys.Quota(limit=5)
        secret = limited_key(seeded, quota=quota)
        revoked = sync_manager.create_api_key(OWNER, "revoked", ["read:data"], quota=quota)
        sync_manager.revoke_api_key(revoked.id)
        for presented in (revoked.secret, secret[:-4] + "AAAA"):
            reply = client.request("GET", "/costly", headers=bearer(presented))
            assert reply.status == 403
            assert "ratelimit" not in reply.headers
        first = client.request("GET", "/protected", headers=bearer(secret))
        assert first.headers["ratelimit"] == '"quota";r=4'

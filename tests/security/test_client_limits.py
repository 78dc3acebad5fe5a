"""Per-client failure limits, the HTTPS requirement, trusted proxies and the events
only the web layer can see -- in every framework, through its test client."""

from __future__ import annotations

import copy
import ipaddress
import logging
import pickle
from collections.abc import Iterator
from typing import cast

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import apikeys
from apikeys import KeyEvent
from apikeys._errors import ConfigurationError, RateLimitedError
from apikeys._protocols import KeyManager
from apikeys._ratelimit import FailureLimiter
from apikeys.integrations import _clients
from apikeys.integrations._authentication import authenticate_sync
from apikeys.integrations._clients import Peer, resolve_client
from apikeys.integrations._credentials import ASGICredentials
from apikeys.integrations._settings import IntegrationSettings, Limiters
from tests.integrations.conftest import OWNER, Seeded
from tests.integrations.contract import bearer
from tests.security.conftest import PEER, OpenClient

WRONG = "apk_1garbage"


@pytest.fixture
def events() -> Iterator[list[KeyEvent]]:
    seen: list[KeyEvent] = []
    listener = apikeys.add_event_listener(seen.append)
    yield seen
    apikeys.remove_event_listener(listener)


# --- per-client limits ----------------------------------------------------------------------


def test_repeated_failures_from_one_client_get_429_with_retry_after(
    open_client: OpenClient, seeded: Seeded, events: list[KeyEvent]
) -> None:
    settings = IntegrationSettings(client_max_failures=3, client_failure_window=60)
    with open_client(seeded.url, settings) as client:
        refused = [client.request("GET", "/protected", headers=bearer(WRONG)) for _ in range(3)]
        limited = client.request("GET", "/protected", headers=bearer(WRONG))
        # Once limited, even the right key waits: the client, not the key, is limited.
        right_key = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
        management = client.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
    assert [reply.status for reply in refused] == [403, 403, 403]
    for reply in (limited, right_key, management):
        assert reply.status == 429, reply.text
        retry_after = int(reply.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert reply.json == {
            "code": "rate_limited",
            "message": "Too many requests",
            "retryAfter": retry_after,
        }
    limited_events = [e for e in events if e.kind == "rejected" and e.reason == "rate_limited"]
    assert len(limited_events) == 3
    assert all(event.key_id is None for event in limited_events)


def test_the_limit_is_off_by_default(open_client: OpenClient, seeded: Seeded) -> None:
    with open_client(seeded.url) as client:
        statuses = {
            client.request("GET", "/protected", headers=bearer(WRONG)).status for _ in range(30)
        }
        ok = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
    assert statuses == {403}
    assert ok.status == 200


def test_missing_keys_expired_and_revoked_keys_do_not_count(
    open_client: OpenClient, seeded: Seeded
) -> None:
    settings = IntegrationSettings(client_max_failures=2)
    with open_client(seeded.url, settings) as client:
        for _ in range(3):
            assert client.request("GET", "/protected").status == 401
            assert (
                client.request("GET", "/protected", headers=bearer(seeded.revoked.secret)).status
                == 403
            )
            assert (
                client.request("GET", "/protected", headers=bearer(seeded.expired.secret)).status
                == 403
            )
        ok = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
    assert ok.status == 200


def test_forwarded_clients_are_limited_apart_behind_a_trusted_proxy(
    open_client: OpenClient, seeded: Seeded
) -> None:
    def via(client_ip: str, secret: str) -> dict[str, str]:
        return {**bearer(secret), "X-Forwarded-For": f"{client_ip}, 10.9.9.9"}

    settings = IntegrationSettings(client_max_failures=2, trusted_proxies=(PEER, "10.0.0.0/8"))
    with open_client(seeded.url, settings) as client:
        for _ in range(2):
            assert (
                client.request("GET", "/protected", headers=via("203.0.113.7", WRONG)).status == 403
            )
        attacker = client.request(
            "GET", "/protected", headers=via("203.0.113.7", seeded.admin.secret)
        )
        neighbour = client.request(
            "GET", "/protected", headers=via("198.51.100.1", seeded.admin.secret)
        )
        # A client cannot escape by prepending addresses of its own choosing.
        forged = client.request(
            "GET",
            "/protected",
            headers={**bearer(WRONG), "X-Forwarded-For": "192.0.2.55, 203.0.113.7, 10.9.9.9"},
        )
    assert attacker.status == 429
    assert neighbour.status == 200
    assert forged.status == 429


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    open_client: OpenClient, seeded: Seeded
) -> None:
    settings = IntegrationSettings(client_max_failures=2)  # no trusted proxies
    with open_client(seeded.url, settings) as client:
        statuses = [
            client.request(
                "GET", "/protected", headers={**bearer(WRONG), "X-Forwarded-For": f"192.0.2.{n}"}
            ).status
            for n in range(4)
        ]
    # Rotating the header does not make new clients: the peer is what counts.
    assert statuses == [403, 403, 429, 429]


# --- HTTPS requirement ----------------------------------------------------------------------


def test_keys_over_plain_http_are_refused_when_https_is_required(
    open_client: OpenClient, seeded: Seeded, events: list[KeyEvent]
) -> None:
    settings = IntegrationSettings(require_https=True)
    with open_client(seeded.url, settings) as client:
        plain = client.request("GET", "/protected", headers=bearer(seeded.admin.secret))
        garbage = client.request("GET", "/protected", headers={"X-API-Key": "junk"})
        management = client.request("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        no_key = client.request("GET", "/protected")
        spoofed = client.request(
            "GET",
            "/protected",
            headers={**bearer(seeded.admin.secret), "X-Forwarded-Proto": "https"},
        )
    for reply in (plain, garbage, management, spoofed):
        assert reply.status == 403, reply.text
        assert reply.json == {
            "code": "https_required",
            "message": "API keys must be sent over HTTPS",
        }
        assert seeded.admin.secret not in reply.text
    assert no_key.status == 401
    assert no_key.json["code"] == "missing_api_key"
    # The key was never validated: the backend saw nothing.
    assert not [e for e in events if e.kind == "validated"]


def test_forwarded_proto_https_from_a_trusted_proxy_is_believed(
    open_client: OpenClient, seeded: Seeded
) -> None:
    settings = IntegrationSettings(require_https=True, trusted_proxies=("127.0.0.0/8",))
    with open_client(seeded.url, settings) as client:
        secure = client.request(
            "GET",
            "/protected",
            headers={**bearer(seeded.admin.secret), "X-Forwarded-Proto": "https"},
        )
        mixed = client.request(
            "GET",
            "/protected",
            headers={**bearer(seeded.admin.secret), "X-Forwarded-Proto": "http, https"},
        )
        plain = client.request(
            "GET",
            "/protected",
            headers={**bearer(seeded.admin.secret), "X-Forwarded-Proto": "http"},
        )
    assert secure.status == 200
    assert secure.json["user"] == OWNER
    assert mixed.status == plain.status == 403
    assert plain.json["code"] == "https_required"


# --- events the backend cannot see ----------------------------------------------------------


def test_missing_and_unparseable_keys_are_reported_once(
    open_client: OpenClient, seeded: Seeded, events: list[KeyEvent]
) -> None:
    with open_client(seeded.url) as client:
        client.request("GET", "/protected")
        client.request("GET", "/protected", headers={"X-API-Key": "x" * 600})
        events.clear()  # from here on, only backend refusals
        client.request("GET", "/protected", headers=bearer(WRONG))
        backend_only = list(events)
    rejected = [e for e in backend_only if e.kind == "rejected"]
    assert len(rejected) == 1  # the backend's own report, not a second one from the web layer
    assert rejected[0].source == "sqlalchemy"


def test_web_layer_events_name_their_framework(
    open_client: OpenClient, framework: str, seeded: Seeded, events: list[KeyEvent]
) -> None:
    with open_client(seeded.url) as client:
        client.request("GET", "/protected")
        client.request("GET", "/protected", headers={"X-API-Key": "é"})
    reasons = [(e.kind, e.reason, e.key_id) for e in events]
    assert reasons == [("rejected", "missing", None), ("rejected", "invalid", None)]
    expected = {"fastapi": "starlette", "flask": "flask"}.get(framework, "django")
    assert {event.source for event in events} == {expected}


# --- the core, without a framework ----------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        ([], "10.0.0.1"),
        (["203.0.113.9"], "203.0.113.9"),
        (["203.0.113.9, 10.0.0.2"], "203.0.113.9"),
        (["198.51.100.1, 203.0.113.9", "10.0.0.2"], "203.0.113.9"),
        (["10.0.0.3, 10.0.0.2"], "10.0.0.3"),
        (["not-an-ip, 10.0.0.2"], "10.0.0.2"),
        (["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_resolve_client_walks_forwarded_for_from_the_right(
    forwarded: list[str], expected: str
) -> None:
    settings = IntegrationSettings(trusted_proxies=("10.0.0.0/8",))
    headers = [("X-Forwarded-For", value) for value in forwarded]
    assert resolve_client(headers, Peer("10.0.0.1"), settings).address == expected


def test_resolve_client_ignores_headers_from_untrusted_or_unknown_peers() -> None:
    settings = IntegrationSettings(trusted_proxies=("10.0.0.0/8",))
    headers = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]
    for peer in (Peer("192.0.2.1"), Peer(None), Peer("testclient")):
        assert resolve_client(headers, peer, settings) == peer


@pytest.mark.parametrize("proxies", [("localhost",), ("10.0.0.0/33",), ("",)])
def test_trusted_proxies_must_be_addresses_or_networks(proxies: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        IntegrationSettings.from_mapping({"trusted_proxies": proxies})


class _UnreachedManager:
    """A manager the refusals under test come before: asking it fails the test."""

    def validate_api_key(self, secret: str, **options: object) -> apikeys.VerifiedKey:
        raise AssertionError("the manager was asked")


def _authenticate(
    key: str, settings: IntegrationSettings, limiters: Limiters, peer: str | None = None
) -> apikeys.VerifiedKey:
    """Authenticate an ASGI request sending ``key`` in ``X-API-Key``, from ``peer`` if known."""
    scope = {
        "type": "http",
        "scheme": "http",
        "headers": [(b"x-api-key", key.encode())],
        "query_string": b"",
        "client": (peer, 5000) if peer is not None else None,
    }
    manager = cast(KeyManager, _UnreachedManager())
    return authenticate_sync(manager, ASGICredentials(scope), settings, limiters=limiters)


def test_without_a_peer_https_is_refused_and_no_client_is_limited() -> None:
    strict = IntegrationSettings(require_https=True)
    with pytest.raises(apikeys.AuthenticationError) as caught:
        _authenticate("apk_1abc", strict, Limiters.of(strict))
    assert caught.value.code == "https_required"
    limited = IntegrationSettings(client_max_failures=1)
    limiters = Limiters.of(limited)
    for _ in range(3):
        with pytest.raises(apikeys.InvalidKeyError):
            _authenticate("é", limited, limiters)
    assert isinstance(limiters.client, FailureLimiter) and len(limiters.client) == 0
    with pytest.raises(apikeys.InvalidKeyError):
        _authenticate("é", limited, limiters, peer="192.0.2.1")
    with pytest.raises(RateLimitedError):
        _authenticate("é", limited, limiters, peer="192.0.2.1")


ADDRESSES = st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str)


def _as_ipv4(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address, an IPv4-mapped one as IPv4 (as the library reads it)."""
    address = ipaddress.ip_address(text)
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped if mapped is not None else address


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    forged=st.lists(st.text(max_size=20).filter(lambda t: "," not in t) | ADDRESSES, max_size=5),
    client_ip=ADDRESSES.filter(lambda a: _as_ipv4(a) not in ipaddress.ip_network("10.0.0.0/8")),
    proxy_hops=st.lists(st.integers(0, 255).map(lambda n: f"10.1.2.{n}"), max_size=3),
    split=st.booleans(),
)
def test_whatever_a_client_prepends_the_proxies_own_hop_decides(
    forged: list[str], client_ip: str, proxy_hops: list[str], split: bool
) -> None:
    settings = IntegrationSettings(trusted_proxies=("10.0.0.0/8",))
    hops = [*forged, client_ip, *proxy_hops]
    # The header as the client sent it, then extended by the proxies, in one or two headers.
    values = [", ".join(hops)]
    if split:
        values = [", ".join([*forged, client_ip]), ", ".join(proxy_hops)]
    headers = [("X-Forwarded-For", value) for value in values if value]
    resolved = resolve_client(headers, Peer("10.0.0.1", "http"), settings)
    assert ipaddress.ip_address(resolved.address or "") == _as_ipv4(client_ip)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"client": ("192.0.2.1", 5000), "scheme": "https"}, Peer("192.0.2.1", "https")),
        ({"client": ("192.0.2.1", 5000), "scheme": "ws"}, Peer("192.0.2.1", "ws")),
        ({"client": None, "scheme": "wss"}, Peer(None, "wss")),
        ({}, Peer(None, "http")),
    ],
)
def test_the_peer_of_an_asgi_scope(scope: dict[str, object], expected: Peer) -> None:
    assert Peer.of_asgi(scope) == expected
    assert expected.secure is (expected.scheme in ("https", "wss"))


def test_settings_are_values_and_each_app_counts_with_its_own_limiters() -> None:
    # trusted_proxies as one comma-separated string, as an environment variable gives it.
    built = IntegrationSettings.model_validate(
        {"client_max_failures": 3, "trusted_proxies": "10.0.0.0/8"}
    )
    again = IntegrationSettings.from_mapping(
        {"CLIENT_MAX_FAILURES": 3, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    )
    assert built.trusted_networks == (ipaddress.ip_network("10.0.0.0/8"),)  # derived, kept
    assert built == again and hash(built) == hash(again)
    assert built != IntegrationSettings.model_validate(
        {"client_max_failures": 4, "trusted_proxies": "10.0.0.0/8"}
    )
    assert copy.deepcopy(built) == built
    restored = pickle.loads(pickle.dumps(built))  # noqa: S301 (our own bytes)
    assert restored == built and restored.trusted_networks == built.trusted_networks
    one_app, another_app = Limiters.of(built), Limiters.of(again)
    assert one_app.client is not None and another_app.client is not None
    assert one_app.client is not another_app.client  # one limiter per app
    # Off by default, but for Clerk managers (tests/integrations/test_clerk_client_limits.py).
    assert Limiters.of(IntegrationSettings()).client_for(object()) is None


# --- IPv6 grouping and IPv4-mapped addresses ------------------------------------------------


@hypothesis_settings(max_examples=300, deadline=None)
@given(first=st.ip_addresses(v=6), second=st.ip_addresses(v=6))
def test_an_ipv6_client_counts_as_its_64_network(
    first: ipaddress.IPv6Address, second: ipaddress.IPv6Address
) -> None:
    first_key, second_key = Peer(str(first)).limiter_key, Peer(str(second)).limiter_key
    if first.ipv4_mapped is None and second.ipv4_mapped is None:
        assert (first_key == second_key) is (int(first) >> 64 == int(second) >> 64)
        assert first in ipaddress.ip_network(first_key or "")


@hypothesis_settings(max_examples=300, deadline=None)
@given(client=st.ip_addresses(v=4), proxy=st.ip_addresses(v=4))
def test_an_ipv4_mapped_address_is_read_as_ipv4(
    client: ipaddress.IPv4Address, proxy: ipaddress.IPv4Address
) -> None:
    mapped = f"::ffff:{client}"
    assert Peer(mapped).limiter_key == Peer(str(client)).limiter_key == str(client)
    # The trust check, the forwarded hop and trusted_proxies written either way.
    for trusted in (str(proxy), f"::ffff:{proxy}"):
        settings = IntegrationSettings(trusted_proxies=(trusted,))
        for peer in (str(proxy), f"::ffff:{proxy}"):
            resolved = resolve_client([("X-Forwarded-For", mapped)], Peer(peer), settings)
            expected = str(proxy) if client == proxy else str(client)
            assert resolved.address == expected


def test_an_ipv6_client_rotating_inside_its_64_is_limited() -> None:
    limited = IntegrationSettings(client_max_failures=2)
    limiters = Limiters.of(limited)
    statuses = []
    for peer in ("2001:db8::1", "2001:db8::2:3", "2001:db8::ffff:1", "::ffff:192.0.2.1"):
        try:
            _authenticate("é", limited, limiters, peer=peer)
        except apikeys.APIKeysError as exc:
            statuses.append(exc.status_code)
    assert statuses == [403, 403, 429, 403]


@pytest.mark.parametrize(
    ("address", "key"),
    [
        (None, None),
        ("testclient", "testclient"),
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
    ],
)
def test_the_limiter_key_of_a_peer(address: str | None, key: str | None) -> None:
    assert Peer(address).limiter_key == key


# --- set-ups that defeat the settings are logged once ---------------------------------------


@pytest.fixture
def proxy_warnings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    monkeypatch.setattr(_clients, "proxy_warnings_given", set())
    caplog.set_level(logging.WARNING, logger="apikeys.integrations")
    return caplog


@pytest.mark.parametrize(
    ("settings", "headers", "peer", "warning"),
    [
        (
            IntegrationSettings(client_max_failures=3, trusted_proxies=("10.0.0.1",)),
            [("X-Forwarded-Proto", "https")],
            "10.0.0.1",
            "a request from trusted proxy 10.0.0.1 carried no X-Forwarded-For",
        ),
        (
            IntegrationSettings(require_https=True, trusted_proxies=("10.0.0.1",)),
            [("X-Forwarded-For", "192.0.2.1")],
            "10.0.0.1",
            "a request from trusted proxy 10.0.0.1 carried no X-Forwarded-Proto",
        ),
        (
            IntegrationSettings(client_max_failures=3),
            [("X-Forwarded-For", "198.51.100.2, 192.0.2.1")],
            "192.0.2.1",
            "the server already took the client address 192.0.2.1 from X-Forwarded-For",
        ),
        (
            IntegrationSettings(client_max_failures=3, trusted_proxies=("10.0.0.1",)),
            [("X-Forwarded-For", "192.0.2.1")],
            "10.0.0.2",
            "X-Forwarded-For from 10.0.0.2 is ignored, as it is not in trusted_proxies",
        ),
    ],
    ids=["no-forwarded-for", "no-forwarded-proto", "resolved-by-server", "untrusted"],
)
def test_a_set_up_that_defeats_the_settings_is_logged_once(
    proxy_warnings: pytest.LogCaptureFixture,
    settings: IntegrationSettings,
    headers: list[tuple[str, str]],
    peer: str,
    warning: str,
) -> None:
    for _ in range(3):
        resolve_client(headers, Peer(peer), settings)
    messages = [record.getMessage() for record in proxy_warnings.records]
    assert len(messages) == 1, messages
    assert warning in messages[0]
    assert "Behind a reverse proxy" in messages[0]


def test_a_set_up_that_works_logs_nothing(proxy_warnings: pytest.LogCaptureFixture) -> None:
    settings = IntegrationSettings(
        client_max_failures=3, require_https=True, trusted_proxies=("10.0.0.0/8",)
    )
    forwarded = [("X-Forwarded-For", "192.0.2.1, 10.0.0.2"), ("X-Forwarded-Proto", "https")]
    assert resolve_client(forwarded, Peer("10.0.0.1"), settings) == Peer("192.0.2.1", "https")
    # A direct client without forwarded headers, and one whose connection is already HTTPS.
    assert resolve_client([], Peer("192.0.2.7"), settings) == Peer("192.0.2.7")
    direct = IntegrationSettings(client_max_failures=3)
    assert resolve_client([], Peer("10.0.0.1", "https"), direct) == Peer("10.0.0.1", "https")
    assert proxy_warnings.records == []

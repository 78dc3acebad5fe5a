"""Who sent a request, read from the connection and the headers of trusted proxies.

What a proxy reports counts only from a trusted proxy; ``X-Forwarded-Proto`` is HTTPS only if
every line and every value says so; a set-up that defeats the settings is logged once per
process, with the message an operator reads to fix it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from apikeys.integrations._clients import (
    HeaderSource,
    Peer,
    ip_address,
    ip_network,
    resolve_client,
    text_pairs,
)
from apikeys.integrations._credentials import ASGICredentials, WSGICredentials
from apikeys.integrations._settings import IntegrationSettings

PROXY = "10.0.0.2"
CLIENT = "198.51.100.7"
DOCS = "; see 'Behind a reverse proxy' in the apikeys security docs"

TRUSTING = IntegrationSettings(trusted_proxies=("10.0.0.0/8",))
FROM_THE_PROXY = Peer(PROXY)


def resolved(
    headers: HeaderSource,
    settings: IntegrationSettings = TRUSTING,
    peer: Peer = FROM_THE_PROXY,
) -> Peer:
    return resolve_client(headers, peer, settings)


# --- X-Forwarded-Proto ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "scheme"),
    [
        ([b"https"], "https"),
        ([b"HTTPS"], "https"),
        ([b" https "], "https"),
        ([b"https, https"], "https"),
        ([b"https", b"https"], "https"),
        ([b"http"], "http"),
        ([b"https, http"], "http"),
        ([b"http", b"https"], "http"),
        ([b"https", b"http"], "http"),
        ([b"https", b"https, http"], "http"),
        ([b"https", b"ftp"], "http"),
    ],
)
def test_proto_lines_count_as_https_only_if_every_value_says_https(
    lines: list[bytes], scheme: str
) -> None:
    # As an ASGI server gives them: one (name, value) pair per line, names in bytes.
    headers = [(b"x-forwarded-for", CLIENT.encode())]
    headers += [(b"x-forwarded-proto", line) for line in lines]
    assert resolved(headers) == Peer(CLIENT, scheme)
    # As a WSGI server gives them: the lines joined into one value.
    joined = {"x-forwarded-for": CLIENT, "x-forwarded-proto": ", ".join(map(bytes.decode, lines))}
    assert resolved(joined) == Peer(CLIENT, scheme)


def test_an_asgi_scope_with_a_forged_proto_line_beside_the_proxys_is_plain_http() -> None:
    for lines in ([b"http", b"https"], [b"https", b"http"]):
        headers = [(b"x-forwarded-for", CLIENT.encode())]
        headers += [(b"x-forwarded-proto", line) for line in lines]
        scope = {"client": (PROXY, 4321), "scheme": "http", "headers": headers}
        assert ASGICredentials(scope).client(TRUSTING) == Peer(CLIENT, "http")


def test_header_names_match_in_any_case_as_text_or_bytes() -> None:
    for name_for, name_proto in (
        (b"X-Forwarded-For", b"X-Forwarded-Proto"),
        ("X-FORWARDED-FOR", "x-forwarded-PROTO"),
    ):
        headers: list[tuple[str | bytes, str | bytes]] = [(name_for, CLIENT), (name_proto, "https")]
        assert resolved(headers) == Peer(CLIENT, "https")


def test_mapping_values_that_are_lists_count_as_lines() -> None:
    headers = {"x-forwarded-for": [CLIENT], "x-forwarded-proto": ("https", "http")}
    assert resolved(headers) == Peer(CLIENT, "http")
    pairs: list[tuple[str | bytes, Any]] = [(b"a", [b"1", "2"]), ("b", "3")]
    assert list(text_pairs(pairs)) == [("a", "1"), ("a", "2"), ("b", "3")]


def test_without_proto_the_connections_scheme_stands(
    warnings_seen: Callable[[], list[str]],
) -> None:
    assert resolved({"x-forwarded-for": CLIENT}) == Peer(CLIENT, "http")
    over_tls = Peer(PROXY, "https")
    assert resolved({"x-forwarded-for": CLIENT}, peer=over_tls) == Peer(CLIENT, "https")
    requiring = IntegrationSettings(trusted_proxies=("10.0.0.0/8",), require_https=True)
    # The proxy reached the app over TLS: nothing defeats require_https, nothing to log.
    assert resolved({"x-forwarded-for": CLIENT}, requiring, over_tls) == Peer(CLIENT, "https")
    assert warnings_seen() == []


# --- what is logged, once per process -------------------------------------------------------


REQUIRING_HTTPS = IntegrationSettings(trusted_proxies=("10.0.0.0/8",), require_https=True)
LIMITING = IntegrationSettings(trusted_proxies=("10.0.0.0/8",), client_max_failures=5)
FORWARDED = {"x-forwarded-for": CLIENT, "x-forwarded-proto": "https"}


@pytest.mark.parametrize(
    ("settings", "headers", "peer", "client", "message"),
    [
        pytest.param(
            REQUIRING_HTTPS,
            {"x-forwarded-for": CLIENT},
            FROM_THE_PROXY,
            Peer(CLIENT, "http"),
            f"apikeys: a request from trusted proxy {PROXY} carried no X-Forwarded-Proto, so "
            "require_https refuses every key it forwards (waitress removes the header unless "
            f"started with --no-clear-untrusted-proxy-headers){DOCS}",
            id="no proto from a trusted proxy",
        ),
        pytest.param(
            LIMITING,
            {"x-forwarded-proto": "https"},
            FROM_THE_PROXY,
            Peer(PROXY, "https"),
            f"apikeys: a request from trusted proxy {PROXY} carried no X-Forwarded-For, so the "
            "per-client limit counts every client behind that proxy as one (waitress removes "
            f"the header unless started with --no-clear-untrusted-proxy-headers){DOCS}",
            id="no forwarded-for from a trusted proxy",
        ),
        pytest.param(
            TRUSTING,
            FORWARDED,
            Peer("192.0.2.9"),
            Peer("192.0.2.9"),
            "apikeys: X-Forwarded-For from 192.0.2.9 is ignored, as it is not in "
            "trusted_proxies=('10.0.0.0/8',); if it is your reverse proxy, list it, or the "
            f"per-client limit counts every client behind it as one{DOCS}",
            id="forwarding from an unlisted peer",
        ),
        pytest.param(
            # The server replaced its peer (the proxy) with the header's last hop.
            TRUSTING,
            {"x-forwarded-for": f"203.0.113.1, {CLIENT}"},
            Peer(CLIENT),
            Peer(CLIENT),
            f"apikeys: the server already took the client address {CLIENT} from "
            "X-Forwarded-For (uvicorn does for connections from --forwarded-allow-ips, "
            "127.0.0.1 and ::1 by default; waitress with --trusted-proxy), so per-client "
            "limits and require_https depend on the server's proxy settings, not on "
            f"trusted_proxies=('10.0.0.0/8',){DOCS}",
            id="forwarded-for already taken by the server",
        ),
    ],
)
def test_a_set_up_that_defeats_the_settings_is_logged_once_with_its_fix(
    warnings_seen: Callable[[], list[str]],
    settings: IntegrationSettings,
    headers: dict[str, str],
    peer: Peer,
    client: Peer,
    message: str,
) -> None:
    for _ in range(3):
        assert resolved(headers, settings, peer) == client
    assert warnings_seen() == [message]


def test_missing_headers_the_settings_do_not_need_are_not_logged(
    warnings_seen: Callable[[], list[str]],
) -> None:
    # No per-client limit (unset, it is on for Clerk), HTTPS not required: neither header matters.
    unlimited = IntegrationSettings(trusted_proxies=("10.0.0.0/8",), client_max_failures=0)
    assert resolved({}, unlimited) == Peer(PROXY, "http")
    assert warnings_seen() == []


def test_forwarding_from_an_unlisted_peer_is_ignored_and_logged_once(
    warnings_seen: Callable[[], list[str]],
) -> None:
    settings = IntegrationSettings(trusted_proxies=("10.0.0.0/8",))
    unlisted = Peer("192.0.2.9")
    for _ in range(3):
        headers = {"x-forwarded-for": CLIENT, "x-forwarded-proto": "https"}
        assert resolved(headers, settings, unlisted) == unlisted
    assert warnings_seen() == [
        "apikeys: X-Forwarded-For from 192.0.2.9 is ignored, as it is not in "
        f"trusted_proxies=('10.0.0.0/8',); if it is your reverse proxy, list it, or the "
        f"per-client limit counts every client behind it as one{DOCS}"
    ]


def test_a_client_address_the_server_took_from_forwarded_for_is_logged_once(
    warnings_seen: Callable[[], list[str]],
) -> None:
    # The server replaced its peer (the proxy) with the header's last hop.
    taken = Peer(CLIENT)
    for _ in range(3):
        assert resolved({"x-forwarded-for": f"203.0.113.1, {CLIENT}"}, peer=taken) == taken
    assert warnings_seen() == [
        f"apikeys: the server already took the client address {CLIENT} from X-Forwarded-For "
        "(uvicorn does for connections from --forwarded-allow-ips, 127.0.0.1 and ::1 by "
        "default; waitress with --trusted-proxy), so per-client limits and require_https "
        f"depend on the server's proxy settings, not on trusted_proxies=('10.0.0.0/8',){DOCS}"
    ]


def test_each_problem_is_logged_once_and_an_unlisted_peer_without_forwarding_not_at_all(
    warnings_seen: Callable[[], list[str]],
) -> None:
    settings = IntegrationSettings(
        trusted_proxies=("10.0.0.0/8",), client_max_failures=5, require_https=True
    )
    resolved({}, settings)  # a trusted proxy with neither header: two problems
    resolved({}, settings, Peer("192.0.2.9"))  # a direct client: nothing wrong
    resolved({"x-forwarded-for": "192.0.2.1"}, settings, Peer("192.0.2.9"))
    resolved({"x-forwarded-for": "192.0.2.9"}, settings, Peer("192.0.2.9"))
    resolved({}, settings)
    logged = warnings_seen()
    assert [message.split(" ", 4)[:4] for message in logged] == [
        ["apikeys:", "a", "request", "from"],
        ["apikeys:", "a", "request", "from"],
        ["apikeys:", "X-Forwarded-For", "from", "192.0.2.9"],
        ["apikeys:", "the", "server", "already"],
    ]
    assert "X-Forwarded-For, so" in logged[0]
    assert "X-Forwarded-Proto, so" in logged[1]


def test_a_peer_that_is_no_ip_address_is_taken_as_it_is(
    warnings_seen: Callable[[], list[str]],
) -> None:
    unix_socket = Peer("unix:/run/app.sock", "https")
    headers = {"x-forwarded-for": CLIENT, "x-forwarded-proto": "http"}
    assert resolved(headers, peer=unix_socket) == unix_socket
    assert resolved(headers, peer=Peer(None)) == Peer(None)
    assert warnings_seen() == []


# --- X-Forwarded-For ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        (CLIENT, CLIENT),
        (f"{CLIENT}, 10.0.0.7", CLIENT),  # a second trusted proxy
        (f"{CLIENT},10.9.9.9 , 10.0.0.7", CLIENT),
        (f"192.0.2.66, {CLIENT}", CLIENT),  # the client's own forgery is left of its hop
        (f"::ffff:{CLIENT}", CLIENT),
        ("2001:db8::1", "2001:db8::1"),
        (f"{CLIENT}, not-an-address, 10.0.0.7", "10.0.0.7"),  # stops at the reporting proxy
        ("unknown", PROXY),
        ("10.0.0.7", "10.0.0.7"),  # only proxies: the farthest one read
    ],
)
def test_the_client_is_the_first_hop_from_the_right_that_is_no_trusted_proxy(
    forwarded_for: str, client: str
) -> None:
    assert resolved({"x-forwarded-for": forwarded_for}) == Peer(client, "http")


def test_several_forwarded_for_lines_are_one_list() -> None:
    headers = [(b"x-forwarded-for", f"{CLIENT}".encode()), (b"x-forwarded-for", b"10.0.0.7")]
    assert resolved(headers) == Peer(CLIENT, "http")


def test_at_most_32_hops_are_read() -> None:
    proxies = [f"10.0.0.{n}" for n in range(1, 40)]
    within = ", ".join([CLIENT, *proxies[:31]])
    assert resolved({"x-forwarded-for": within}).address == CLIENT
    beyond = ", ".join([CLIENT, *proxies[:32]])
    # The 33rd hop from the right is not read: the walk ends at the farthest hop read.
    assert resolved({"x-forwarded-for": beyond}).address == proxies[0]


@pytest.mark.parametrize(
    ("hops_after", "warning"),
    [
        (31, "the server already took the client address 192.0.2.9"),
        (32, "X-Forwarded-For from 192.0.2.9 is ignored, as it is not in trusted_proxies"),
    ],
)
def test_the_peer_is_recognised_among_the_last_32_hops_only(
    warnings_seen: Callable[[], list[str]], hops_after: int, warning: str
) -> None:
    hops = ["192.0.2.9", *[f"203.0.113.{n}" for n in range(1, hops_after + 1)]]
    resolved({"x-forwarded-for": ", ".join(hops)}, IntegrationSettings(), Peer("192.0.2.9"))
    (logged,) = warnings_seen()
    assert warning in logged


# --- peers, addresses and networks ----------------------------------------------------------


def test_the_peer_of_an_asgi_scope() -> None:
    assert Peer.of_asgi({"client": ("192.0.2.1", 5555), "scheme": "https"}) == Peer(
        "192.0.2.1", "https"
    )
    assert Peer.of_asgi({"client": None}) == Peer(None, "http")
    assert Peer.of_asgi({}) == Peer(None, "http")


def test_the_peer_of_a_wsgi_environ() -> None:
    settings = IntegrationSettings()
    environ: dict[str, Any] = {"REMOTE_ADDR": "192.0.2.1", "wsgi.url_scheme": "https"}
    assert WSGICredentials(environ).client(settings) == Peer("192.0.2.1", "https")
    assert WSGICredentials({"REMOTE_ADDR": ""}).client(settings) == Peer(None, "http")
    # The framework's scheme (Django's SECURE_PROXY_SSL_HEADER) wins over the environ's.
    assert WSGICredentials(environ, lambda: "http").client(settings) == Peer("192.0.2.1", "http")
    assert WSGICredentials(environ, lambda: None).client(settings) == Peer("192.0.2.1", "http")


@pytest.mark.parametrize(
    ("scheme", "secure"),
    [
        ("https", True),
        ("HTTPS", True),
        ("wss", True),
        ("WSS", True),
        ("http", False),
        ("ws", False),
    ],
)
def test_a_peer_is_secure_over_tls_only(scheme: str, secure: bool) -> None:
    assert Peer("192.0.2.1", scheme).secure is secure


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::", "2001:db8:1:2::/64"),
        ("unix-socket", "unix-socket"),
        (None, None),
    ],
)
def test_the_limiter_counts_an_ipv6_client_as_its_64(address: str | None, key: str | None) -> None:
    assert Peer(address).limiter_key == key


def test_addresses_are_read_leniently_and_mapped_ipv4_as_ipv4() -> None:
    assert ip_address(" 192.0.2.1 ") == ipaddress.IPv4Address("192.0.2.1")
    assert ip_address("::ffff:192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")
    assert ip_address("2001:db8::1") == ipaddress.IPv6Address("2001:db8::1")
    assert ip_address("192.0.2.256") is None
    assert ip_address("") is None


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", ipaddress.IPv4Network("10.0.0.0/8")),
        (" 10.1.2.3/8 ", ipaddress.IPv4Network("10.0.0.0/8")),
        ("10.0.0.1", ipaddress.IPv4Network("10.0.0.1/32")),
        ("::ffff:10.0.0.0/104", ipaddress.IPv4Network("10.0.0.0/8")),
        ("::ffff:10.0.0.1/128", ipaddress.IPv4Network("10.0.0.1/32")),
        ("::ffff:0.0.0.0/96", ipaddress.IPv4Network("0.0.0.0/0")),
        ("::/64", ipaddress.IPv6Network("::/64")),
        ("2001:db8::/96", ipaddress.IPv6Network("2001:db8::/96")),
    ],
)
def test_trusted_networks_are_read_with_mapped_ipv4_as_ipv4(
    text: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> None:
    assert ip_network(text) == network


def test_a_trusted_network_that_is_no_network_is_refused() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        ip_network("proxy.internal")


def test_a_mapped_ipv4_proxy_is_trusted_by_its_ipv4_network() -> None:
    settings = IntegrationSettings(trusted_proxies=("::ffff:10.0.0.0/104",))
    headers: Sequence[tuple[str, str]] = [("x-forwarded-for", CLIENT)]
    assert resolve_client(headers, Peer("10.0.0.2"), settings).address == CLIENT
    assert resolve_client(headers, Peer("::ffff:10.0.0.2"), settings).address == CLIENT
    assert resolve_client(headers, Peer("11.0.0.2"), settings).address == "11.0.0.2"

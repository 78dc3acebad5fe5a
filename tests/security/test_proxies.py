"""waitress, uvicorn and gunicorn behind a reverse proxy on loopback, set up as the docs say.

Every server protects the demo app with ``client_max_failures=3`` and
``require_https``. Behind the proxy, an attacker (connecting from 127.0.0.2)
sends wrong keys until it is answered 429, while a neighbour (127.0.0.3)
behind the same proxy must still get 200, and a key that reached the proxy
over plain HTTP must be refused. Each server runs in its documented set-ups
(the server passes the headers through and apikeys resolves the client, or
the server resolves it) and in the default that silently defeats the
settings, which must be logged once.
"""

from __future__ import annotations

import json
import shlex
import socket
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest

from tests.integrations.apps import fastapi_app, flask_app
from tests.integrations.conftest import Seeded, seed
from tests.integrations.contract import AppOptions, bearer
from tests.security.proxied_app import MAX_FAILURES, protected_settings
from tests.security.proxying import (
    ProtoLine,
    fetch,
    forwarding_proxy,
    gunicorn_serving,
    uvicorn_serving,
    waitress_serving,
)

pytestmark = pytest.mark.e2e

LOOPBACK = "127.0.0.1"
ATTACKER = "127.0.0.2"
NEIGHBOUR = "127.0.0.3"
WRONG = "apk_1garbage"

# What a documented set-up answers: the attacker alone is limited, HTTPS via the proxy passes.
PROTECTED = ([403] * MAX_FAILURES, 429, 200, 403)

STRIPPED_FOR = "carried no X-Forwarded-For"
STRIPPED_PROTO = "carried no X-Forwarded-Proto"
RESOLVED_BY_SERVER = "the server already took the client address"
UNTRUSTED = "is ignored, as it is not in trusted_proxies"


class Outcome(NamedTuple):
    refused: list[int]
    """The attacker's wrong keys."""
    attacker: int
    """The attacker's right key afterwards, with an ``X-Forwarded-For`` of its own making."""
    neighbour: int
    """Another client's right key, through the same proxy."""
    plain: int
    """The neighbour's right key through a proxy that took it over plain HTTP."""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed(f"sqlite:///{tmp_path_factory.mktemp('proxies') / 'keys.db'}")


def attack(server_port: int, keys: Seeded) -> Outcome:
    """Run the attacker, the neighbour and a plain-HTTP request through proxies to the server."""
    upstream = (LOOPBACK, server_port)
    right = bearer(keys.admin.secret)
    with forwarding_proxy(upstream) as tls, forwarding_proxy(upstream, scheme="http") as plain:
        refused = [
            fetch(LOOPBACK, tls, "/protected", bearer(WRONG), source=ATTACKER).status
            for _ in range(MAX_FAILURES)
        ]
        forged = {**right, "X-Forwarded-For": "198.51.100.7"}
        attacker = fetch(LOOPBACK, tls, "/protected", forged, source=ATTACKER).status
        neighbour = fetch(LOOPBACK, tls, "/protected", right, source=NEIGHBOUR).status
        in_clear = fetch(LOOPBACK, plain, "/protected", right, source=NEIGHBOUR).status
    return Outcome(refused, attacker, neighbour, in_clear)


def flask_with(keys: Seeded, trusted_proxies: tuple[str, ...]) -> Any:
    return flask_app(keys.url, AppOptions(settings=protected_settings(trusted_proxies)))


def fastapi_with(keys: Seeded, trusted_proxies: tuple[str, ...]) -> Any:
    return fastapi_app(keys.url, AppOptions(settings=protected_settings(trusted_proxies)))


def matching(messages: list[str], fragment: str) -> list[str]:
    return [message for message in messages if fragment in message]


# --- waitress -------------------------------------------------------------------------------


def test_waitress_passing_the_headers_through_lets_apikeys_resolve_clients(
    keys: Seeded, warnings_seen: Any
) -> None:
    app = flask_with(keys, (LOOPBACK,))
    with waitress_serving(app, clear_untrusted_proxy_headers=False) as port:
        outcome = attack(port, keys)
    assert outcome == PROTECTED
    assert warnings_seen() == []


def test_waitress_resolving_clients_itself_protects_too_and_says_who_decides(
    keys: Seeded, warnings_seen: Any
) -> None:
    app = flask_with(keys, ())
    with waitress_serving(
        app, trusted_proxy=LOOPBACK, trusted_proxy_headers="x-forwarded-for x-forwarded-proto"
    ) as port:
        outcome = attack(port, keys)
    assert outcome == PROTECTED
    assert len(matching(warnings_seen(), RESOLVED_BY_SERVER)) == 1


def test_waitress_defaults_strip_the_headers_and_it_is_logged_once(
    keys: Seeded, warnings_seen: Any
) -> None:
    app = flask_with(keys, (LOOPBACK,))
    with waitress_serving(app) as port:
        outcome = attack(port, keys)
    # Without X-Forwarded-Proto every key looks like plain HTTP: all refused, nothing counted.
    assert outcome == ([403] * MAX_FAILURES, 403, 403, 403)
    seen = warnings_seen()
    assert len(matching(seen, STRIPPED_FOR)) == 1
    assert len(matching(seen, STRIPPED_PROTO)) == 1
    assert all("127.0.0.1" in message for message in seen)


# --- uvicorn --------------------------------------------------------------------------------


def test_uvicorn_without_proxy_headers_lets_apikeys_resolve_clients(
    keys: Seeded, warnings_seen: Any
) -> None:
    app = fastapi_with(keys, (LOOPBACK,))
    with uvicorn_serving(app, proxy_headers=False) as port:
        outcome = attack(port, keys)
    assert outcome == PROTECTED
    assert warnings_seen() == []


@pytest.mark.parametrize("trusted_proxies", [(), (LOOPBACK,)], ids=["server-only", "both"])
def test_uvicorn_trusts_loopback_proxies_by_default_and_it_is_logged_once(
    keys: Seeded, warnings_seen: Any, trusted_proxies: tuple[str, ...]
) -> None:
    app = fastapi_with(keys, trusted_proxies)
    with uvicorn_serving(app, forwarded_allow_ips="127.0.0.1,::1") as port:
        outcome = attack(port, keys)
    assert outcome == PROTECTED
    resolved = matching(warnings_seen(), RESOLVED_BY_SERVER)
    assert len(resolved) == 1
    assert ATTACKER in resolved[0] or NEIGHBOUR in resolved[0]


# --- gunicorn -------------------------------------------------------------------------------


def _gunicorn_attack(keys: Seeded, tmp_path: Path, trusted_proxies: str) -> tuple[Outcome, str]:
    log = tmp_path / "gunicorn.log"
    env = {"APIKEYS_BACKEND": keys.url, "APIKEYS_TRUSTED_PROXIES": trusted_proxies}
    app = "tests.security.proxied_app:create_app()"
    with gunicorn_serving(app, env, log, "--forwarded-allow-ips", "127.0.0.1,::1") as port:
        outcome = attack(port, keys)
    # The worker has exited: everything it logged is in the file.
    return outcome, log.read_text(errors="replace")


def test_gunicorn_passes_the_headers_through_for_apikeys_to_resolve(
    keys: Seeded, tmp_path: Path
) -> None:
    outcome, output = _gunicorn_attack(keys, tmp_path, LOOPBACK)
    assert outcome == PROTECTED
    assert "apikeys:" not in output


def test_gunicorn_behind_an_unlisted_proxy_makes_one_client_and_it_is_logged_once(
    keys: Seeded, tmp_path: Path
) -> None:
    outcome, output = _gunicorn_attack(keys, tmp_path, "")
    # The whole proxy is one client: the attacker's failures lock the neighbour out too.
    assert outcome == ([403] * MAX_FAILURES, 429, 429, 403)
    assert output.count(UNTRUSTED) == 1
    assert output.count("apikeys:") == 1


# --- IPv6 -----------------------------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_over_ipv6_a_client_counts_as_its_64_and_mapped_ipv4_as_ipv4(keys: Seeded) -> None:
    app = flask_with(keys, ("::1",))
    with waitress_serving(app, host="::1", clear_untrusted_proxy_headers=False) as port:

        def status(client: str, secret: str) -> int:
            # The test is the trusted proxy on ::1, reporting ``client``.
            headers = {
                **bearer(secret),
                "X-Forwarded-For": client,
                "X-Forwarded-Proto": "https",
            }
            return fetch("::1", port, "/protected", headers).status

        rotating = [status(f"2001:db8:1:2::{n:x}", WRONG) for n in range(1, MAX_FAILURES + 2)]
        same_64 = status("2001:db8:1:2:ffff::1", keys.admin.secret)
        next_64 = status("2001:db8:1:3::1", keys.admin.secret)
        spellings = [
            status(client, WRONG)
            for client in ("203.0.113.9", "::ffff:203.0.113.9", "::ffff:cb00:7109", "203.0.113.9")
        ]
    assert rotating == [403] * MAX_FAILURES + [429]
    assert (same_64, next_64) == (429, 200)
    assert spellings == [403] * MAX_FAILURES + [429]


# --- the documented commands ----------------------------------------------------------------


def documented_commands() -> list[list[str]]:
    """The server commands of the security page's 'Behind a reverse proxy', as argv."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = page.split("### Behind a reverse proxy", 1)[1].split("\n### ", 1)[0]
    blocks = section.split("```text\n")[1:]
    lines = "".join(block.split("```", 1)[0] for block in blocks).replace("\\\n", " ")
    servers = ("waitress-serve ", "uvicorn ", "gunicorn ")
    return [shlex.split(line) for line in lines.splitlines() if line.startswith(servers)]


def test_the_documented_commands_parse_to_the_settings_tested_here() -> None:
    from gunicorn.config import Config
    from uvicorn.main import main as uvicorn_command
    from waitress.adjustments import Adjustments

    parsed: list[dict[str, object]] = []
    for server, *arguments in documented_commands():
        if server == "waitress-serve":
            # A list of arguments, as waitress-serve passes it; the stubs say str.
            options, _ = Adjustments.parse_args(cast("str", arguments))
            flags = ("help", "call")
            adjustments = Adjustments(**{k: v for k, v in options.items() if k not in flags})
            parsed.append(
                {
                    "clear_untrusted_proxy_headers": adjustments.clear_untrusted_proxy_headers,
                    "trusted_proxy": adjustments.trusted_proxy,
                    "trusted_proxy_headers": adjustments.trusted_proxy_headers,
                }
            )
        elif server == "uvicorn":
            params = uvicorn_command.make_context("uvicorn", arguments).params
            parsed.append({key: params[key] for key in ("proxy_headers", "forwarded_allow_ips")})
        else:
            config = Config()
            for name, value in vars(config.parser().parse_args(arguments)).items():
                if name in config.settings and value is not None:
                    config.set(name, value)
            parsed.append({"forwarded_allow_ips": config.forwarded_allow_ips})
    assert parsed == [
        # apikeys resolves: waitress_serving(clear_untrusted_proxy_headers=False), ...
        {"clear_untrusted_proxy_headers": False, "trusted_proxy": None,
         "trusted_proxy_headers": set()},
        {"proxy_headers": False, "forwarded_allow_ips": None},
        {"forwarded_allow_ips": ["127.0.0.1"]},
        # the server resolves
        {"clear_untrusted_proxy_headers": True, "trusted_proxy": LOOPBACK,
         "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"}},
        {"proxy_headers": True, "forwarded_allow_ips": LOOPBACK},
    ]  # fmt: skip


# --- X-Forwarded-Proto lines a client forged, and a proxy that sends none ---------------------


@pytest.mark.parametrize("proxy_line", ["before", "after"])
def test_a_forged_https_line_beside_the_proxys_http_line_counts_as_plain_http(
    keys: Seeded, warnings_seen: Any, proxy_line: ProtoLine
) -> None:
    """A plain-HTTP proxy that adds its ``X-Forwarded-Proto: http`` line beside the client's.

    The client forges ``https``; the app gets two lines, in either order, and one of them
    says ``http``: the key is refused as sent in the clear.
    """
    app = fastapi_with(keys, (LOOPBACK,))
    forged = [*bearer(keys.admin.secret).items(), ("X-Forwarded-Proto", "https")]
    with (
        uvicorn_serving(app, proxy_headers=False) as port,
        forwarding_proxy((LOOPBACK, port), scheme="http", proto=proxy_line) as proxy,
    ):
        refused = fetch(LOOPBACK, proxy, "/protected", forged, source=NEIGHBOUR)
        # Through a TLS proxy set up the same way, both lines say https: served.
        with forwarding_proxy((LOOPBACK, port), proto=proxy_line) as tls:
            served = fetch(LOOPBACK, tls, "/protected", forged, source=NEIGHBOUR)
    assert refused.status == 403
    assert json.loads(refused.body)["code"] == "https_required"
    assert served.status == 200
    assert warnings_seen() == []


def test_a_trusted_proxy_sending_no_proto_gets_keys_refused_and_it_is_logged_once(
    keys: Seeded, warnings_seen: Any
) -> None:
    app = fastapi_with(keys, (LOOPBACK,))
    right = bearer(keys.admin.secret)
    with (
        uvicorn_serving(app, proxy_headers=False) as port,
        forwarding_proxy((LOOPBACK, port), proto="none") as proxy,
    ):
        statuses = [
            fetch(LOOPBACK, proxy, "/protected", right, source=client).status
            for client in (NEIGHBOUR, ATTACKER)
        ]
    # The proxy may have taken the key over HTTPS, but nothing says so: refused, not served.
    assert statuses == [403, 403]
    seen = warnings_seen()
    assert len(matching(seen, STRIPPED_PROTO)) == 1
    assert matching(seen, STRIPPED_FOR) == []
    assert matching(seen, STRIPPED_PROTO)[0].startswith(
        "apikeys: a request from trusted proxy 127.0.0.1 carried no X-Forwarded-Proto, so "
        "require_https refuses every key it forwards"
    )

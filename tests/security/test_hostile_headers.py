"""Hostile credentials through every framework's test client: never a 500, never a success.

The documented answers (docs/integrations/index.md): no key -> 401
``missing_api_key`` with ``WWW-Authenticate: Bearer realm="api"``; anything in
a key's place that is not a valid key -> 403 ``invalid_api_key`` and no
challenge. The body is exactly ``{"code", "message"}`` and never echoes what
was sent.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import apikeys
from apikeys.testing import FakeClerk
from tests.integrations.conftest import Seeded
from tests.integrations.contract import Reply
from tests.security.conftest import OpenClient

MISSING = {"code": "missing_api_key", "message": "An API key is required"}

# Latin-1 without CR and LF: what an HTTP/1.1 parser lets through in a header value.
HEADER_CHARS = st.characters(min_codepoint=0, max_codepoint=0xFF, exclude_characters="\r\n")
VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
SPACE = st.sampled_from(["", " ", "  ", "\t", " \t "])
BEARER = st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR"])


def assert_refused(reply: Reply, expected: int, *sent: str) -> None:
    """The documented refusal, and nothing of what was sent echoed back."""
    assert reply.status == expected, (reply.status, reply.text[:300])
    body = reply.json
    assert set(body) == {"code", "message"}
    if expected == 401:
        assert body == MISSING
        assert reply.headers["www-authenticate"] == 'Bearer realm="api"'
    else:
        assert body["code"] == "invalid_api_key"
        assert "www-authenticate" not in reply.headers
    assert reply.headers["content-type"].startswith("application/json")
    for value in sent:
        if len(value.strip()) >= 8:
            assert value.strip() not in reply.text
    assert "Traceback" not in reply.text


@st.composite
def garbage(draw: st.DrawFn) -> str:
    """Something in a key's place: always at least one visible character, so that
    no framework's whitespace stripping can turn it into 'no key'."""
    return (
        draw(st.text(HEADER_CHARS, max_size=40))
        + draw(VISIBLE)
        + draw(st.text(HEADER_CHARS, max_size=40))
    )


# (header name, value, expected status): values no key could make valid.
def authorization_cases() -> st.SearchStrategy[tuple[str, str, int]]:
    name = st.sampled_from(["Authorization", "authorization", "AUTHORIZATION"])
    no_key = st.one_of(
        st.sampled_from(["", " ", "\t", "Bearer", "bearer ", "Bearer\t "]),
        st.builds(
            lambda scheme, rest: f"{scheme} {rest}",
            st.sampled_from(["Basic", "Digest", "Token", "ApiKey", "Negotiate", "AWS4-HMAC"]),
            st.text(HEADER_CHARS, max_size=40),
        ),
    )
    refused = st.one_of(
        st.builds(lambda b, s1, g, s2: f"{s1}{b} {g}{s2}", BEARER, SPACE, garbage(), SPACE),
        st.builds(lambda n: "Bearer " + "A" * n, st.integers(64 * 1024, 70 * 1024)),
    )
    return st.one_of(st.tuples(name, no_key, st.just(401)), st.tuples(name, refused, st.just(403)))


def x_api_key_cases() -> st.SearchStrategy[tuple[str, str, int]]:
    name = st.sampled_from(["X-API-Key", "x-api-key", "X-Api-Key"])
    no_key = st.sampled_from(["", " ", "\t", "  \t "])
    refused = st.one_of(
        garbage(),
        st.builds(lambda n: "k" * n, st.integers(64 * 1024, 70 * 1024)),
        st.builds(lambda g: f"Basic {g}", garbage()),
    )
    return st.one_of(st.tuples(name, no_key, st.just(401)), st.tuples(name, refused, st.just(403)))


def test_hostile_headers_get_the_documented_refusal(
    open_client: OpenClient, seeded: Seeded
) -> None:
    with open_client(seeded.url) as client:

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            authorization=st.none() | authorization_cases(),
            x_api_key=st.none() | x_api_key_cases(),
            path=st.sampled_from(["/protected", "/protected-sync", "/api-keys"]),
        )
        def check(
            authorization: tuple[str, str, int] | None,
            x_api_key: tuple[str, str, int] | None,
            path: str,
        ) -> None:
            sent = [case for case in (authorization, x_api_key) if case is not None]
            headers = {name: value for name, value, _ in sent}
            expected = max((status for _, _, status in sent), default=401)
            reply = client.request("GET", path, headers=headers)
            assert_refused(reply, expected, *headers.values())

        check()


Pick = Callable[[Seeded], dict[str, str]]


def _swap_last(secret: str) -> str:
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


@pytest.mark.parametrize(
    ("pick", "expected"),
    [
        (lambda s: {"Authorization": ""}, 401),
        (lambda s: {"X-API-Key": ""}, 401),
        (lambda s: {"Authorization": "Bearer"}, 401),
        (lambda s: {"Authorization": f"Basic {s.admin.secret}"}, 401),
        (lambda s: {"Authorization": f"Bearer {'a' * 65536}"}, 403),
        (lambda s: {"X-API-Key": "b" * 70000}, 403),
        (lambda s: {"Authorization": f"Bearer {s.admin.secret}é"}, 403),
        (lambda s: {"Authorization": f"Bearer {s.admin.secret}\x00"}, 403),
        (lambda s: {"X-API-Key": f"{s.admin.secret}\x1b[0m"}, 403),
        (lambda s: {"Authorization": f"Bearer {s.admin.secret[:20]} {s.admin.secret[20:]}"}, 403),
        (lambda s: {"Authorization": f"Bearer {_swap_last(s.admin.secret)}"}, 403),
        (lambda s: {"Authorization": f"bearer {s.admin.secret.upper()}"}, 403),
        # A valid key beside garbage is not a success: every value must be a key.
        (lambda s: {"Authorization": f"Bearer {s.admin.secret}", "X-API-Key": "junk"}, 403),
        (lambda s: {"Authorization": "Bearer junk", "X-API-Key": s.admin.secret}, 403),
        (lambda s: {"Authorization": f"Bearer {s.admin.secret}", "X-API-Key": "é"}, 403),
        # A Clerk-shaped key sent to the local backend.
        (lambda s: {"Authorization": "Bearer ak_" + "a1B2" * 8}, 403),
        (lambda s: {"X-API-Key": "ak_live_" + "Z" * 40}, 403),
    ],
    ids=["empty-auth", "empty-x-api-key", "bearer-alone", "basic-scheme", "huge-auth",
         "huge-x-api-key", "non-ascii-suffix", "nul", "escape-sequence", "space-inside",
         "typo", "uppercased", "valid-and-garbage", "garbage-and-valid", "valid-and-non-ascii",
         "clerk-shaped", "clerk-shaped-x-api-key"],
)  # fmt: skip
def test_named_hostile_headers(
    open_client: OpenClient, seeded: Seeded, pick: Pick, expected: int
) -> None:
    headers = pick(seeded)
    with open_client(seeded.url) as client:
        for path in ("/protected", "/api-keys"):
            reply = client.request("GET", path, headers=headers)
            assert_refused(reply, expected, *headers.values())
            assert seeded.admin.secret not in reply.text


def test_the_same_key_twice_with_stray_whitespace_is_one_key(
    open_client: OpenClient, seeded: Seeded
) -> None:
    # The control: the variants above fail for what they add, not for the header names.
    headers = {
        "authorization": f" bearer \t{seeded.admin.secret} ",
        "X-API-Key": seeded.admin.secret,
    }
    with open_client(seeded.url) as client:
        reply = client.request("GET", "/protected", headers=headers)
    assert reply.status == 200


@pytest.mark.clerk
@pytest.mark.parametrize("framework_name", [
    pytest.param("fastapi", marks=pytest.mark.fastapi),
    pytest.param("flask", marks=pytest.mark.flask),
])  # fmt: skip
def test_a_local_key_sent_to_a_clerk_manager_is_refused(
    framework_name: str, seeded: Seeded
) -> None:
    fake = FakeClerk()
    local = apikeys.generate_key().key
    clerk_key = None
    if framework_name == "fastapi":
        from fastapi import Depends, FastAPI
        from starlette.testclient import TestClient

        from apikeys.integrations.fastapi import APIKeys, require_api_key

        creator = fake.key_manager()
        clerk_key = creator.create_api_key(fake.new_user_id(), "control").secret
        creator.close()
        manager = fake.async_key_manager()
        app = FastAPI()
        APIKeys(app, manager=manager)

        @app.get("/protected")
        async def protected(
            key: apikeys.VerifiedKey = Depends(require_api_key()),  # noqa: B008
        ) -> dict[str, str]:
            return {"user": key.user_id}

        with TestClient(app) as test_client:
            replies = [
                test_client.get("/protected", headers={"Authorization": f"Bearer {value}"})
                for value in (local, seeded.admin.secret, clerk_key)
            ]
            statuses = [(r.status_code, r.json()) for r in replies]
            test_client.portal.call(manager.close)  # type: ignore[union-attr]
    else:
        from flask import Flask, g

        from apikeys.integrations.flask import APIKeys as FlaskAPIKeys
        from apikeys.integrations.flask import require_api_key as flask_require

        sync_manager = fake.key_manager()
        clerk_key = sync_manager.create_api_key(fake.new_user_id(), "control").secret
        flask_app = Flask(__name__)
        FlaskAPIKeys(flask_app, manager=sync_manager)

        @flask_app.get("/protected")
        @flask_require
        def flask_protected() -> dict[str, str]:
            return {"user": g.api_key.user_id}

        flask_test_client = flask_app.test_client()
        statuses = []
        for value in (local, seeded.admin.secret, clerk_key):
            response = flask_test_client.get(
                "/protected", headers={"Authorization": f"Bearer {value}"}
            )
            statuses.append((response.status_code, response.get_json()))
        sync_manager.close()
    for status, body in statuses[:2]:
        assert status == 403
        assert body["code"] == "invalid_api_key"
    assert statuses[2][0] == 200  # the control: the fake's own key is accepted

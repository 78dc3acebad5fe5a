"""A key header sent more than once gets one answer in every framework: 403.

ASGI servers hand repeated headers over one by one; WSGI servers join them
into one comma-separated value first (werkzeug and gunicorn with ``","``,
waitress and werkzeug's test client with ``", "``). Either way, two
``Authorization`` headers -- even identical ones -- are refused with 403
``invalid_api_key``; the same key in ``Authorization`` and ``X-API-Key`` is
one key. Through each framework's own test client, and under real servers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as DjangoTestClient
from django.test.utils import override_settings

from tests.integrations.apps import fastapi_app, flask_app
from tests.integrations.conftest import OWNER, Seeded
from tests.integrations.contract import AppOptions, Reply
from tests.integrations.django_settings import (
    SyncURLConf,
    apikeys_setting,
    configured,
)
from tests.integrations.django_settings import reply_of as django_reply_of
from tests.security.proxying import gunicorn_serving, uvicorn_serving, waitress_serving
from tests.security.raw_http import HTTPClient, werkzeug_serving

Pairs = list[tuple[str, str]]
Send = Callable[[Pairs], Reply]


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    with configured():
        yield


def repeats(secret: str) -> dict[str, Pairs]:
    """Requests that send a key header twice, by name."""
    return {
        "authorization-twice": [("Authorization", f"Bearer {secret}")] * 2,
        "x-api-key-twice": [("X-API-Key", secret)] * 2,
        "authorization-twice-with-x-api-key": [
            ("Authorization", f"Bearer {secret}"),
            ("X-API-Key", secret),
            ("Authorization", f"Bearer {secret}"),
        ],
        "bearer-then-empty": [("Authorization", f"Bearer {secret}"), ("Authorization", "")],
    }


def check(send: Send, seeded: Seeded) -> None:
    secret = seeded.admin.secret
    control = send([("Authorization", f"Bearer {secret}"), ("X-API-Key", secret)])
    assert (control.status, control.json["user"]) == (200, OWNER), control.text
    for name, pairs in repeats(secret).items():
        reply = send(pairs)
        assert reply.status == 403, (name, reply.text)
        assert reply.json["code"] == "invalid_api_key", name
        assert "more than once" in reply.json["message"], name
        assert secret not in reply.text


@contextmanager
def native_sender(framework: str, seeded: Seeded) -> Iterator[Send]:
    """``send(pairs)``: GET ``/protected-sync`` through the framework's own test client."""
    if framework == "fastapi":
        from starlette.testclient import TestClient

        with TestClient(fastapi_app(seeded.url, AppOptions())) as client:
            yield lambda pairs: _reply(client.get("/protected-sync", headers=pairs))
    elif framework == "flask":
        app = flask_app(seeded.url, AppOptions())
        client = app.test_client()
        try:
            yield lambda pairs: _reply(client.get("/protected-sync", headers=pairs))
        finally:
            app.extensions["apikeys"].manager.close()
    else:
        from apikeys.integrations.django import APIKeys

        with override_settings(
            APIKEYS=apikeys_setting(seeded.url, AppOptions()), ROOT_URLCONF=SyncURLConf
        ):
            django = DjangoTestClient()

            def send(pairs: Pairs) -> Reply:
                # Django's client takes one value per header: joined, as a WSGI server joins them.
                joined: dict[str, str] = {}
                for name, value in pairs:
                    joined[name] = f"{joined[name]}, {value}" if name in joined else value
                return django_reply_of(django.get("/protected-sync", headers=joined))

            try:
                yield send
            finally:
                APIKeys.current().close()


def _reply(response: Any) -> Reply:
    headers = response.headers.items()
    text = response.text if hasattr(response, "text") else response.get_data(True)
    return Reply(response.status_code, {name.lower(): value for name, value in headers}, text)


@pytest.mark.parametrize(
    "framework",
    [
        pytest.param("fastapi", marks=pytest.mark.fastapi),
        pytest.param("flask", marks=pytest.mark.flask),
        pytest.param("django", marks=pytest.mark.django),
    ],
)
def test_repeated_key_headers_through_each_test_client(framework: str, seeded: Seeded) -> None:
    with native_sender(framework, seeded) as send:
        check(send, seeded)


@contextmanager
def served(server: str, seeded: Seeded, tmp_path: Path) -> Iterator[int]:
    """The demo app of the server's framework, served on 127.0.0.1; yields the port."""
    serving: AbstractContextManager[int]
    if server == "uvicorn":
        serving = uvicorn_serving(fastapi_app(seeded.url, AppOptions()))
    elif server == "gunicorn":
        serving = gunicorn_serving(
            "tests.security.lingering_apps:create_flask_app()",
            {"APIKEYS_BACKEND": seeded.url},
            tmp_path / "gunicorn.log",
        )
    elif server == "werkzeug":
        serving = werkzeug_serving(flask_app(seeded.url, AppOptions()))
    else:
        from django.core.handlers.wsgi import WSGIHandler

        from apikeys.integrations.django import APIKeys

        with override_settings(
            APIKEYS=apikeys_setting(seeded.url, AppOptions()), ROOT_URLCONF=SyncURLConf
        ):
            try:
                with waitress_serving(WSGIHandler(), threads=1) as port:
                    yield port
            finally:
                APIKeys.current().close()
        return
    with serving as port:
        yield port


@pytest.mark.e2e
@pytest.mark.parametrize(
    "server",
    [
        pytest.param("uvicorn", marks=pytest.mark.fastapi),
        pytest.param("werkzeug", marks=pytest.mark.flask),
        pytest.param("gunicorn", marks=pytest.mark.flask),
        pytest.param("waitress", marks=pytest.mark.django),
    ],
    ids=["fastapi-uvicorn", "flask-werkzeug", "flask-gunicorn", "django-waitress"],
)
def test_repeated_key_headers_under_real_servers(
    server: str, seeded: Seeded, tmp_path: Path
) -> None:
    with served(server, seeded, tmp_path) as port:
        client = HTTPClient(port)
        check(lambda pairs: client.request("GET", "/protected-sync", headers=pairs), seeded)

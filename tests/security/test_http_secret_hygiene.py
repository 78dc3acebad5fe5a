"""No secret over HTTP anywhere but the one 201 creation answer, in every framework.

The main flows -- create through ``/api-keys``, use, misuse, list, revoke --
run through each framework's test client with every logger at DEBUG. Every
log record (see :class:`tests.reliability.test_secret_hygiene.Evidence`),
every response body and every response header is then searched for each
secret: the full key and its random part alone.
"""

from __future__ import annotations

from typing import Any

import pytest

import apikeys
from apikeys.integrations._settings import IntegrationSettings
from tests.integrations.conftest import Seeded
from tests.integrations.contract import Reply, as_json, bearer
from tests.reliability.helpers import wrong_secret_for
from tests.reliability.test_secret_hygiene import (  # noqa: F401 (the evidence fixture)
    Evidence,
    evidence,
    secret_part,
)
from tests.security.conftest import OpenClient

pytestmark = pytest.mark.sqlalchemy


def _texts(reply: Reply) -> list[str]:
    return [reply.text, *(f"{name}: {value}" for name, value in reply.headers.items())]


def test_no_secret_in_logs_bodies_or_headers(
    open_client: OpenClient,
    seeded: Seeded,
    evidence: Evidence,  # noqa: F811 (the fixture imported above)
) -> None:
    evidence.secrets.update({seeded.admin.secret, seeded.reader.secret, seeded.revoked.secret})
    settings = IntegrationSettings(client_max_failures=6)
    replies: list[Reply] = []
    with open_client(seeded.url, settings) as client:

        def send(method: str, path: str, **options: Any) -> Reply:
            reply = client.request(method, path, **options)
            replies.append(reply)
            return reply

        created = client.request(
            "POST",
            "/api-keys",
            headers=bearer(seeded.admin.secret),
            content=as_json({"name": "ci", "scopes": ["read:data"]}),
        )
        assert created.status == 201
        assert created.headers["cache-control"] == "no-store"
        secret = created.json["secret"]
        key_id = created.json["id"]
        evidence.secrets.add(secret)

        assert send("GET", "/protected", headers=bearer(secret)).status == 200
        assert send("GET", "/protected-sync", headers={"x-api-key": f" {secret} "}).status == 200
        assert send("GET", "/admin", headers=bearer(secret)).status == 403
        # A key in a URL is out of the library's hands: the test client logs every URL
        # (logger "httpx"), and Django's "django.request" records carry the request, whose
        # repr holds the query string. That is why query-string keys are off by default;
        # a throwaway key, left out of the search, shows the refusal.
        throwaway = apikeys.generate_key().key
        assert send("GET", "/protected", params={"api_key": throwaway}).status == 401
        conflicting = {**bearer(secret), "X-API-Key": seeded.reader.secret}
        assert send("GET", "/protected", headers=conflicting).status == 403
        for presented in (
            wrong_secret_for(secret),
            secret[:-1],
            secret + "x",
            secret.upper(),
            secret + "é",
            apikeys.generate_key().key,
        ):
            evidence.secrets.add(presented)
            assert send("GET", "/protected", headers=bearer(presented)).status in (403, 429)
        listed = send("GET", "/api-keys", headers=bearer(seeded.admin.secret))
        assert listed.status in (200, 429)
        revoked = send("DELETE", f"/api-keys/{key_id}", headers=bearer(seeded.admin.secret))
        assert revoked.status in (200, 429)
        after = send("GET", "/protected", headers=bearer(secret))
        assert after.status in (403, 429)
    # The flows reached the limiter: a 429 answer is searched too.
    assert 429 in {reply.status for reply in replies}

    assert evidence.records > 20, "the loggers were not capturing"
    haystack = "\n".join([*evidence.texts, *(text for r in replies for text in _texts(r))])
    leaks = [s for s in evidence.secrets if s in haystack or secret_part(s) in haystack]
    assert leaks == [], "secrets leaked"
    # The control: the search finds a secret where one is.
    assert secret in created.text and secret_part(secret) in created.text

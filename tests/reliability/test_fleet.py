"""Several worker processes sharing one store: a revocation reaches every one of them at once.

Real servers with four workers each (``uvicorn --workers 4`` for FastAPI,
``gunicorn -w 4`` for Flask, with the manager built before the fork, and for
Django), on a real PostgreSQL (``LISTEN/NOTIFY``) or on SQLite with a real
Redis (pub/sub). Every worker first caches the key (its cache would serve it
for 60 seconds); the key is then revoked, and every worker must refuse it
within :data:`BOUND` seconds of the revoke returning.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest

import apikeys
from tests.reliability.fleet import (
    CACHE_TTL,
    FRAMEWORKS,
    assert_every_worker_refused,
    serving,
    warm_every_worker,
    watch_the_revocation,
)


def _revocation_reaches_every_worker(
    framework: str, env: dict[str, str], tmp_path: Path, through: str
) -> None:
    env = {**env, "APIKEYS_CACHE_TTL": str(CACHE_TTL)}
    options = {"redis_url": env["APIKEYS_REDIS_URL"]} if "APIKEYS_REDIS_URL" in env else {}
    admin = apikeys.create_key_manager(env["APIKEYS_BACKEND"], **options)
    try:
        new = admin.create_api_key("user_fleet", "fleet", scopes=["keys:manage"])
        with serving(framework, env, tmp_path / "server.log") as port:
            warm_every_worker(port, new.secret)
            if through == "manager":
                admin.revoke_api_key(new.id)
            else:  # DELETE /api-keys/{id} through one worker, with the key itself
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request(
                    "DELETE",
                    f"/api-keys/{new.id}",
                    headers={"Authorization": f"Bearer {new.secret}"},
                )
                assert connection.getresponse().status == 200  # revoked, and listed as such
                connection.close()
            seen = watch_the_revocation(port, new.secret, time.monotonic())
    finally:
        admin.close()
    assert_every_worker_refused(seen)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_revocation_on_postgres_reaches_every_worker_at_once(
    framework: str, postgres_url: str, tmp_path: Path
) -> None:
    _revocation_reaches_every_worker(
        framework, {"APIKEYS_BACKEND": postgres_url}, tmp_path, through="manager"
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_revocation_through_redis_reaches_every_worker_at_once(
    framework: str, sqlite_and_redis: dict[str, str], tmp_path: Path
) -> None:
    _revocation_reaches_every_worker(framework, sqlite_and_redis, tmp_path, through="http")

"""Per-client failure limits and creation limits counted in a real Redis, for every worker at once.

Each app here stands for one worker process: its own ``APIKeys`` and so its
own limiters, all pointed at one Redis. A flood spread over them meets one
limit; with Redis down each counts alone, as without Redis.
"""

from __future__ import annotations

import pytest

from apikeys.integrations.fastapi import IntegrationSettings
from tests.integrations.apps import asgi_client, fastapi_app
from tests.integrations.conftest import Seeded
from tests.integrations.contract import AppOptions
from tests.redis_server import RedisServer

pytest.importorskip("redis")

LIMIT = 5


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def wrong_key(seeded: Seeded) -> dict[str, str]:
    secret = seeded.reader.secret
    return bearer(secret[:-1] + ("x" if secret[-1] != "x" else "y"))


def options(redis: RedisServer, **settings: object) -> AppOptions:
    return AppOptions(settings=IntegrationSettings(redis_url=redis.url, **settings))  # type: ignore[arg-type]


def test_a_flood_spread_over_workers_meets_one_client_limit(
    seeded: Seeded, redis: RedisServer
) -> None:
    workers = [fastapi_app(seeded.url, options(redis, client_max_failures=LIMIT)) for _ in range(3)]
    with asgi_client(workers[0]) as a, asgi_client(workers[1]) as b, asgi_client(workers[2]) as c:
        clients = [a, b, c]
        statuses = [
            clients[n % 3].request("GET", "/protected", headers=wrong_key(seeded)).status
            for n in range(LIMIT)
        ]
        assert statuses == [403] * LIMIT
        for client in clients:
            refused = client.request("GET", "/protected", headers=wrong_key(seeded))
            assert refused.status == 429
            assert int(refused.headers["retry-after"]) >= 1
            # the limit holds against the client, not the key: its valid key is refused too
            assert (
                client.request("GET", "/protected", headers=bearer(seeded.reader.secret)).status
                == 429
            )


def test_creations_spread_over_workers_meet_one_owner_limit(
    seeded: Seeded, redis: RedisServer
) -> None:
    workers = [fastapi_app(seeded.url, options(redis, max_key_creations=3)) for _ in range(2)]
    body = b'{"name": "minted"}'
    with asgi_client(workers[0]) as a, asgi_client(workers[1]) as b:
        made = [
            client.request(
                "POST", "/api-keys", headers=bearer(seeded.admin.secret), content=body
            ).status
            for client in (a, b, a)
        ]
        assert made == [201, 201, 201]
        for client in (a, b):
            assert (
                client.request(
                    "POST", "/api-keys", headers=bearer(seeded.admin.secret), content=body
                ).status
                == 429
            )


def test_with_redis_down_each_worker_counts_alone(seeded: Seeded, redis: RedisServer) -> None:
    workers = [fastapi_app(seeded.url, options(redis, client_max_failures=LIMIT)) for _ in range(2)]
    redis.kill()
    with asgi_client(workers[0]) as a, asgi_client(workers[1]) as b:
        for client in (a, b):
            statuses = [
                client.request("GET", "/protected", headers=wrong_key(seeded)).status
                for _ in range(LIMIT)
            ]
            assert (
                statuses == [403] * LIMIT
            )  # never a 500, never a 503: the limit is per process now
            assert client.request("GET", "/protected", headers=wrong_key(seeded)).status == 429

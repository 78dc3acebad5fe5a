"""One small app per framework, served by several worker processes in the fleet tests.

Configured from the environment alone (``APIKEYS_BACKEND``, ``APIKEYS_REDIS_URL``,
``APIKEYS_CACHE_TTL``, ...), as a deployment would be; the integration settings
(``client_max_failures``, ...) as a JSON object in ``FLEET_SETTINGS``. ``GET /whoami`` answers
with the key's id, ``GET /spend`` too but spends :data:`SPEND_COST` units of the
key's limits, and every answer carries the serving worker's process id
(``X-Worker``), so a test can tell the workers apart.

- FastAPI: ``uvicorn --factory tests.reliability.fleet_apps:fastapi_app --workers 4``
- Flask: ``gunicorn -w 4 'tests.reliability.fleet_apps:flask_app()'``
- Django: ``gunicorn -w 4 tests.reliability.fleet_django:application``
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

WORKER_HEADER = "X-Worker"
"""Every answer names the process that served it, refusals included."""
SETTINGS_VARIABLE = "FLEET_SETTINGS"
SPEND_COST = 2
"""What one call of ``GET /spend`` spends from the key's rate limit and quota."""


def integration_options() -> dict[str, Any]:
    """The apps' integration settings, from :data:`SETTINGS_VARIABLE` (none: the defaults)."""
    options: dict[str, Any] = json.loads(os.environ.get(SETTINGS_VARIABLE) or "{}")
    return options


def fastapi_app() -> Any:
    """The FastAPI app, on an async manager closed at shutdown."""
    from fastapi import Depends, FastAPI

    import apikeys
    from apikeys.integrations.fastapi import APIKeys, management_router, require_api_key

    manager = apikeys.create_async_key_manager()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await manager.close()

    app = FastAPI(lifespan=lifespan)

    @app.middleware("http")
    async def name_the_worker(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response

    APIKeys(app, manager=manager, **integration_options())
    app.include_router(management_router)

    @app.get("/whoami")
    async def whoami(key: apikeys.VerifiedKey = Depends(require_api_key())) -> dict[str, Any]:  # noqa: B008
        return {"pid": os.getpid(), "key": key.id}

    @app.get("/spend")
    async def spend(
        key: apikeys.VerifiedKey = Depends(require_api_key(cost=SPEND_COST)),  # noqa: B008
    ) -> dict[str, Any]:
        return {"pid": os.getpid(), "key": key.id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def flask_app() -> Any:
    """The Flask app, on the sync manager configured by the environment."""
    from flask import Flask, g, jsonify

    import apikeys
    from apikeys.integrations.flask import (
        APIKeys,
        IntegrationSettings,
        management_router,
        require_api_key,
    )

    app = Flask(__name__)

    @app.after_request
    def name_the_worker(response: Any) -> Any:
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response

    settings = IntegrationSettings.from_mapping(integration_options())
    APIKeys(app, manager=apikeys.create_key_manager(), settings=settings)
    app.register_blueprint(management_router)

    @app.get("/whoami")
    @require_api_key
    def whoami() -> Any:
        return jsonify(pid=os.getpid(), key=g.api_key.id)

    @app.get("/spend")
    @require_api_key(cost=SPEND_COST)
    def spend() -> Any:
        return jsonify(pid=os.getpid(), key=g.api_key.id)

    @app.get("/health")
    def health() -> Any:
        return jsonify(status="ok")

    return app

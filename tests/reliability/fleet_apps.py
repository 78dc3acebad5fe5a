"""One small app per framework, served by several worker processes in the fleet tests.

Configured from the environment alone (``APIKEYS_BACKEND``, ``APIKEYS_REDIS_URL``,
``APIKEYS_CACHE_TTL``, ...), as a deployment would be. ``GET /whoami`` answers
with the key's id, and every answer carries the serving worker's process id
(``X-Worker``), so a test can tell the workers apart.

- FastAPI: ``uvicorn --factory tests.reliability.fleet_apps:fastapi_app --workers 4``
- Flask: ``gunicorn -w 4 'tests.reliability.fleet_apps:flask_app()'``
- Django: ``gunicorn -w 4 tests.reliability.fleet_django:application``
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

WORKER_HEADER = "X-Worker"
"""Every answer names the process that served it, refusals included."""


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

    APIKeys(app, manager=manager)
    app.include_router(management_router)

    @app.get("/whoami")
    async def whoami(key: apikeys.VerifiedKey = Depends(require_api_key())) -> dict[str, Any]:  # noqa: B008
        return {"pid": os.getpid(), "key": key.id}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def flask_app() -> Any:
    """The Flask app, on the sync manager configured by the environment."""
    from flask import Flask, g, jsonify

    import apikeys
    from apikeys.integrations.flask import APIKeys, management_router, require_api_key

    app = Flask(__name__)

    @app.after_request
    def name_the_worker(response: Any) -> Any:
        response.headers[WORKER_HEADER] = str(os.getpid())
        return response

    APIKeys(app, manager=apikeys.create_key_manager())
    app.register_blueprint(management_router)

    @app.get("/whoami")
    @require_api_key
    def whoami() -> Any:
        return jsonify(pid=os.getpid(), key=g.api_key.id)

    @app.get("/health")
    def health() -> Any:
        return jsonify(status="ok")

    return app

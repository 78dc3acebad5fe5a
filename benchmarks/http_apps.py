"""The three web apps the HTTP benchmark serves: ``GET /open`` and ``GET /protected``, nothing else.

Both routes answer the same small JSON body; ``/protected`` needs an API key
(the framework integration's own decorator or dependency) and adds nothing
else, so the gap between the two is the cost of protection. The backend is the
SQLAlchemy one on the SQLite file named by ``APIKEYS_BENCH_BACKEND``, with its
default settings (verification cache on). Each factory is what the server
command line loads (``uvicorn --factory``, ``waitress-serve --call``).
"""

from __future__ import annotations

import os
from typing import Any

BODY = {"status": "ok"}


def _backend() -> str:
    return os.environ["APIKEYS_BENCH_BACKEND"]


def fastapi_app() -> Any:
    """FastAPI on the async manager; ``require_api_key()`` as a dependency.

    ``/noop`` has a do-nothing security dependency of the same kind
    (a ``SecurityBase`` taking the connection): what FastAPI's dependency
    machinery costs by itself, apart from any validation.
    """
    from fastapi import Depends, FastAPI
    from fastapi.openapi.models import APIKey as APIKeyModel
    from fastapi.openapi.models import APIKeyIn
    from fastapi.security.base import SecurityBase
    from starlette.requests import HTTPConnection

    import apikeys
    from apikeys.integrations.fastapi import APIKeys, require_api_key

    app = FastAPI()
    manager = apikeys.create_async_key_manager(_backend())
    app.state.apikeys_manager = manager  # closed by whoever drives the app without a server
    APIKeys(app, manager=manager)

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return BODY

    class NoopDependency(SecurityBase):
        def __init__(self) -> None:
            self.model = APIKeyModel.model_validate(
                {"in": APIKeyIn.header, "name": "Authorization"}
            )
            self.scheme_name = "noop"

        async def __call__(self, connection: HTTPConnection) -> None:
            return None

    # Postponed annotations are resolved in this module's globals, where the
    # locally imported HTTPConnection is not: give FastAPI the class itself.
    NoopDependency.__call__.__annotations__["connection"] = HTTPConnection
    noop = NoopDependency()

    @app.get("/noop")
    async def noop_route(_none: None = Depends(noop)) -> dict[str, str]:
        return BODY

    @app.get("/protected")
    async def protected(
        _key: apikeys.VerifiedKey = Depends(require_api_key()),  # noqa: B008
    ) -> dict[str, str]:
        return BODY

    return app


def fastapi_middleware_app() -> Any:
    """FastAPI protected whole by ``APIKeyMiddleware``, ``/open`` exempt; no dependency.

    ``/open`` passes through the middleware too (its exemption check is part of
    what protection costs this way); ``/protected`` is validated there and reads
    nothing itself.
    """
    from fastapi import FastAPI

    import apikeys
    from apikeys.integrations.fastapi import APIKeyMiddleware, APIKeys

    app = FastAPI()
    manager = apikeys.create_async_key_manager(_backend())
    app.state.apikeys_manager = manager  # closed by whoever drives the app without a server
    APIKeys(app, manager=manager)
    app.add_middleware(APIKeyMiddleware, exempt_paths=["/open"])

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return BODY

    @app.get("/protected")
    async def protected() -> dict[str, str]:
        return BODY

    return app


def flask_app() -> Any:
    """Flask on the sync manager; ``@require_api_key`` on the view."""
    from flask import Flask

    from apikeys.integrations.flask import APIKeys, require_api_key

    app = Flask(__name__)
    app.config["APIKEYS_BACKEND"] = _backend()
    APIKeys(app)

    @app.get("/open")
    def open_route() -> dict[str, str]:
        return BODY

    @app.get("/protected")
    @require_api_key
    def protected() -> dict[str, str]:
        return BODY

    return app


def django_app() -> Any:
    """Django (WSGI) with minimal settings (CommonMiddleware alone); ``@require_api_key`` on the view."""
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.urandom(16).hex(),
        ALLOWED_HOSTS=["127.0.0.1"],
        USE_TZ=True,
        ROOT_URLCONF="benchmarks.http_apps_django_urls",
        DATABASES={},
        INSTALLED_APPS=[],
        # CommonMiddleware (in every project startproject creates) sets
        # Content-Length; without it waitress answers chunked with
        # "Connection: close", and every request would pay a new connection.
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        APIKEYS={"BACKEND": _backend()},
    )
    django.setup()
    return get_wsgi_application()


__all__ = ["BODY", "django_app", "fastapi_app", "fastapi_middleware_app", "flask_app"]

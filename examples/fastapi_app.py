"""A FastAPI app protected by API keys, on SQLite by default.

Install once, from a checkout (``pip install 'apikeys[examples]'`` from PyPI), then run it
(one command; the database file is created on first use)::

    pip install -e '.[examples]'
    python examples/fastapi_app.py            # or: uvicorn examples.fastapi_app:app

Issue a first key with the command line (``/api-keys`` cannot issue it: every
call there needs a key holding ``keys:manage``), then call the API::

    apikeys create user_123 "my laptop" --scope "read:data keys:manage" --backend sqlite:///apikeys-example.db
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/protected
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/api-keys

``APIKEYS_BACKEND`` chooses another backend (``postgresql+psycopg://…``,
``clerk://``); the interactive docs are at http://127.0.0.1:8000/docs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import Depends, FastAPI, Request

import apikeys
from apikeys.integrations.fastapi import (
    APIKeyMiddleware,
    APIKeys,
    management_router,
    require_api_key,
)

BACKEND = os.environ.get("APIKEYS_BACKEND", "sqlite:///apikeys-example.db")
manager = apikeys.create_async_key_manager(BACKEND)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await manager.close()  # release the connection pool on shutdown


app = FastAPI(title="apikeys FastAPI example", lifespan=lifespan)
APIKeys(app, manager=manager)
app.include_router(management_router)  # GET/POST/DELETE /api-keys
# Every route needs a key, except these (the docs pages must load in a browser).
app.add_middleware(APIKeyMiddleware, exempt_paths=["/health", "/docs", "/docs/*", "/openapi.json"])


@app.get("/health")
async def health() -> dict[str, str]:
    """Liveness probe: no key needed."""
    return {"status": "ok"}


@app.get("/protected")
async def protected(key: apikeys.VerifiedKey = Depends(require_api_key())) -> dict[str, str]:  # noqa: B008
    """The product docs' example: who called, and when."""
    return {
        "message": "API key authentication successful",
        "user": key.user_id,
        "timestamp": datetime.now(UTC).isoformat(),
    }


@app.get("/data")
async def read_data(
    key: apikeys.VerifiedKey = Depends(require_api_key(scopes=["read:data"])),  # noqa: B008
) -> dict[str, object]:
    """A route that needs the ``read:data`` scope."""
    return {"owner": key.user_id, "items": [1, 2, 3]}


@app.get("/whoami")
async def whoami(request: Request) -> dict[str, object]:
    """Any route behind the middleware finds the verified key on ``request.state``."""
    key: apikeys.VerifiedKey = request.state.api_key
    return {"user": key.user_id, "key": key.id, "scopes": list(key.scopes)}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

"""A Flask app protected by API keys, on SQLite by default.

Install once, from a checkout (``pip install 'apikeys[examples]'`` from PyPI), then run it
(one command; the database file is created on first use)::

    pip install -e '.[examples]'
    python examples/flask_app.py        # or: waitress-serve --listen=127.0.0.1:8000 examples.flask_app:app

Issue a first key with the command line (``/api-keys`` cannot issue it: every
call there needs a key holding ``keys:manage``), then call the API::

    apikeys create user_123 "my laptop" --scope "read:data keys:manage" --backend sqlite:///apikeys-example.db
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/protected
    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/api-keys

``APIKEYS_BACKEND`` chooses another backend (``postgresql+psycopg://…``, ``clerk://``).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from flask import Flask, g

from apikeys.integrations.flask import (
    APIKeyMiddleware,
    APIKeys,
    management_router,
    require_api_key,
)

app = Flask(__name__)
app.config["APIKEYS_BACKEND"] = os.environ.get("APIKEYS_BACKEND", "sqlite:///apikeys-example.db")
app.config["APIKEYS_EXEMPT_PATHS"] = ["/health"]
APIKeys(app)
app.register_blueprint(management_router)  # GET/POST/DELETE /api-keys
# Every route needs a key, except APIKEYS_EXEMPT_PATHS.
APIKeyMiddleware(app)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness probe: no key needed."""
    return {"status": "ok"}


@app.get("/protected")
@require_api_key
def protected() -> dict[str, str]:
    """The product docs' example: who called, and when."""
    return {
        "message": "API key authentication successful",
        "user": g.api_key.user_id,
        "timestamp": datetime.now(UTC).isoformat(),
    }


@app.get("/data")
@require_api_key(scopes=["read:data"])
def read_data() -> dict[str, object]:
    """A route that needs the ``read:data`` scope."""
    return {"owner": g.api_key.user_id, "items": [1, 2, 3]}


@app.get("/whoami")
def whoami() -> dict[str, object]:
    """Any route behind the middleware finds the verified key on ``g.api_key``."""
    return {"user": g.api_key.user_id, "key": g.api_key.id, "scopes": list(g.api_key.scopes)}


if __name__ == "__main__":
    from waitress import serve

    serve(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))

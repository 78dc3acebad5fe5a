"""The Flask demo app with per-client limits and HTTPS required, for a server process.

gunicorn imports it as ``tests.security.proxied_app:create_app()``; the
backend comes from ``APIKEYS_BACKEND`` and the trusted proxies from
``APIKEYS_TRUSTED_PROXIES``, read when the app is built.
"""

from __future__ import annotations

import os
from typing import Any

from apikeys.integrations._settings import IntegrationSettings
from tests.integrations.apps import flask_app
from tests.integrations.contract import AppOptions

MAX_FAILURES = 3


def protected_settings(trusted_proxies: str | tuple[str, ...] = ()) -> IntegrationSettings:
    """What every proxied server here protects its app with.

    ``trusted_proxies`` may be one comma-separated string, as the environment gives it.
    """
    return IntegrationSettings.model_validate(
        {
            "client_max_failures": MAX_FAILURES,
            "client_failure_window": 60,
            "require_https": True,
            "trusted_proxies": trusted_proxies,
        }
    )


def create_app() -> Any:
    """The app, configured from the environment."""
    settings = protected_settings(os.environ.get("APIKEYS_TRUSTED_PROXIES", ""))
    return flask_app(os.environ["APIKEYS_BACKEND"], AppOptions(settings=settings))

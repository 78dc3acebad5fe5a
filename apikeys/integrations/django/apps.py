"""Optional app config: ``manage.py check`` reports a wrong ``settings.APIKEYS``.

Add ``"apikeys.integrations.django"`` to ``INSTALLED_APPS`` for the checks;
nothing else needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core import checks

from apikeys._errors import ConfigurationError
from apikeys.integrations.django._extension import APIKeys


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``apikeys.E001``: ``settings.APIKEYS`` is invalid; ``apikeys.W001``: keys
    are accepted in query strings, which end up in logs and ``Referer`` headers."""
    try:
        keys = APIKeys.from_settings()
    except ConfigurationError as exc:
        return [
            checks.Error(
                exc.message,
                hint="See the settings in docs/integrations/django.md.",
                id="apikeys.E001",
            )
        ]
    if keys.settings.allow_query_param:
        return [
            checks.Warning(
                "settings.APIKEYS['ALLOW_QUERY_PARAM'] is on: API keys in URLs end up in"
                " access logs, browser history and Referer headers.",
                hint="Send keys in the Authorization or X-API-Key header instead.",
                id="apikeys.W001",
            )
        ]
    return []


class APIKeysConfig(AppConfig):
    """Registers :func:`check_settings` with Django's system checks."""

    name = "apikeys.integrations.django"
    label = "apikeys"
    verbose_name = "API keys"

    def ready(self) -> None:
        checks.register(check_settings, checks.Tags.security)


__all__ = ["APIKeysConfig", "check_settings"]

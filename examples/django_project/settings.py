"""Settings of the example project: only what API-key authentication needs.

``APIKEYS`` configures apikeys: ``BACKEND`` is the key store (SQLite here;
``postgresql+psycopg://…`` or ``clerk://`` work the same), the other keys are
integration settings (``EXEMPT_PATHS``…) or manager settings (``CACHE_TTL``…).
``/api-keys`` requires ``keys:manage`` (``MANAGEMENT_SCOPE``, the default).
"""

from __future__ import annotations

import os

# Development only: read a real secret from the environment in production.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-apikeys-example")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# No database models: the keys live in the apikeys backend, not in Django's ORM.
INSTALLED_APPS = [
    "rest_framework",
    "apikeys.integrations.django",  # optional: `manage.py check` validates APIKEYS
]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "examples.django_project.urls"
WSGI_APPLICATION = "examples.django_project.wsgi.application"

APIKEYS = {
    "BACKEND": os.environ.get("APIKEYS_BACKEND", "sqlite:///apikeys-example.db"),
    "EXEMPT_PATHS": ["/health"],
}

MIDDLEWARE = [
    # Every request needs a valid key, except APIKEYS["EXEMPT_PATHS"]; sets request.api_key.
    "apikeys.integrations.django.APIKeyMiddleware",
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apikeys.integrations.django.rest_framework.APIKeyAuthentication"
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apikeys.integrations.django.rest_framework.HasAPIKeyScopes"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "apikeys.integrations.django.rest_framework.exception_handler",
    # No django.contrib.auth in this project: requests without a key have no user.
    "UNAUTHENTICATED_USER": None,
}

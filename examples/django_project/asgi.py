"""ASGI entry point: ``uvicorn examples.django_project.asgi:application``.

Under ASGI the middleware and ``async def`` views use the async manager.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.settings")

application = get_asgi_application()

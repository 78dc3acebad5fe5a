"""URLs of the example project: a few protected views and ``/api-keys``.

``/api-keys`` answers only keys holding ``keys:manage``; issue the first one
from the command line::

    apikeys create user_123 "my laptop" --scope "read:data keys:manage" --backend sqlite:///apikeys-example.db
"""

from __future__ import annotations

from django.urls import include, path

from apikeys.integrations.django import management_router
from examples.django_project import views

urlpatterns = [
    path("health", views.health),
    path("protected", views.protected),
    path("data", views.data),
    path("async-data", views.async_data),
    path("whoami", views.whoami),
    path("drf/data", views.DataView.as_view()),
    path("", include(management_router)),  # GET/POST/DELETE /api-keys, DELETE /api-keys/<id>
]

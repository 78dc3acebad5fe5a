"""A Flask app whose application context outlives the requests it serves.

The Flask demo app of :mod:`tests.integrations.apps`, set up the way real
projects set theirs up: its application context pushed once in the serving
thread (``app.app_context().push()`` at import, common with Flask-SQLAlchemy
scripts), so that it and its ``g`` outlive every request.

gunicorn imports it as ``tests.security.lingering_apps:create_flask_app()``;
the backend comes from ``APIKEYS_BACKEND``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from tests.integrations.apps import flask_app
from tests.integrations.contract import AppOptions


def create_flask_app() -> Any:
    """The Flask demo app with its application context pushed now, and never popped.

    gunicorn's sync worker calls this in the thread that then serves every
    request: the context, and its ``g``, outlive each of them.
    """
    app = flask_app(os.environ["APIKEYS_BACKEND"], AppOptions())
    app.app_context().push()
    return app


class ContextPushedInServingThread:
    """A WSGI app that pushes ``app``'s application context in each serving thread, once.

    What an app that pushes its context at import does when it is imported by
    the thread that serves it (``app.run(threaded=False)``, a server with one
    worker thread): that context, and its ``g``, outlive every request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._local = threading.local()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if not getattr(self._local, "pushed", False):
            self.app.app_context().push()
            self._local.pushed = True
        result: Iterable[bytes] = self.app(environ, start_response)
        return result

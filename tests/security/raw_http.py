"""Requests over real HTTP to a server on 127.0.0.1, headers sent exactly as given."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from tests.integrations.apps import reply_of
from tests.integrations.contract import Reply

Headers = Mapping[str, str] | Iterable[tuple[str, str]]
"""A mapping, or ``(name, value)`` pairs: a header may then be sent twice."""


class HTTPClient:
    """The contract's :class:`Client` over real HTTP to 127.0.0.1, one connection per request.

    Headers may be ``(name, value)`` pairs, so a header can be sent twice.
    """

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Headers | None = None,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Reply:
        assert params is None
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest(method, path)
            pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
            for name, value in pairs:
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(content or b"")))
            connection.endheaders(content)
            response = connection.getresponse()
            return reply_of(
                response.status, response.getheaders(), response.read().decode("utf-8", "replace")
            )
        finally:
            connection.close()


@contextmanager
def werkzeug_serving(app: Any) -> Iterator[int]:
    """werkzeug's server with ``threaded=False``: one thread serves every request."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        thread.join(30)
        server.server_close()

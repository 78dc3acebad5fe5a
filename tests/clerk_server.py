"""Serve a :class:`~apikeys.testing.FakeClerk` over a real socket on loopback.

For managers that must reach the fake through their own HTTP client: one
built from settings (``CLERK_API_URL``), or one in another process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from apikeys.testing import FakeClerk

HOST = "127.0.0.1"  # loopback only
# Hop-by-hop and framing headers: the relay sets its own.
_NOT_RELAYED = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class _RelayToFake(BaseHTTPRequestHandler):
    """Hands each HTTP request to the fake's transport and writes its answer back."""

    protocol_version = "HTTP/1.1"
    # The answer goes out in several small writes: with Nagle's algorithm each keep-alive
    # request would wait for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _FakeClerkServer

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _NOT_RELAYED]
        request = httpx.Request(
            self.command, f"http://{HOST}{self.path}", headers=headers, content=body
        )
        answer = self.server.fake.transport.handle_request(request)
        content = answer.read()
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in _NOT_RELAYED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_PATCH = do_DELETE = _relay

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        """Quiet: the fake records every request itself."""


class _FakeClerkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeClerk) -> None:
        super().__init__((HOST, 0), _RelayToFake)
        self.fake = fake


@contextmanager
def served(fake: FakeClerk) -> Iterator[str]:
    """Serve ``fake`` on a free port of 127.0.0.1; yield its API URL (``CLERK_API_URL``)."""
    server = _FakeClerkServer(fake)
    # A short poll interval: shutdown() waits for the next poll.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

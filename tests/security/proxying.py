"""A reverse proxy on loopback, and waitress, uvicorn and gunicorn behind it.

:class:`ForwardingProxy` forwards like nginx with ``proxy_set_header
X-Forwarded-For $proxy_add_x_forwarded_for`` and ``X-Forwarded-Proto
$scheme``: it appends the address of whoever connected to it to
``X-Forwarded-For`` and replaces ``X-Forwarded-Proto`` with its own scheme (a
TLS-terminating proxy sends ``https``); set up otherwise, it adds its own
``X-Forwarded-Proto`` line before or after the client's, or sends none. Clients
tell themselves apart by the loopback address they connect from (``127.0.0.2``,
``127.0.0.3``: all of ``127.0.0.0/8`` is the loopback interface).

waitress and uvicorn run in a thread of the test process, so ``caplog`` sees
what the app logs; gunicorn forks workers and runs as a process whose output
is written to a file.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 30.0
# Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
     "upgrade", "host", "content-length"}
)  # fmt: skip
# Rewritten by the proxy (see ``ProtoLine``), never passed on as sent.
_FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto"})


class Answer(NamedTuple):
    status: int
    body: bytes


def fetch(
    host: str,
    port: int,
    path: str,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    *,
    source: str | None = None,
) -> Answer:
    """GET ``path`` on one new connection, from the loopback address ``source`` if given.

    ``headers`` as ``(name, value)`` pairs may repeat a name: each pair is one header line.
    """
    connection = http.client.HTTPConnection(
        host, port, timeout=10, source_address=(source, 0) if source else None
    )
    lines = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
    try:
        connection.putrequest("GET", path)
        for name, value in lines:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Answer(response.status, response.read())
    finally:
        connection.close()


def _wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


ProtoLine = Literal["replace", "before", "after", "none"]
"""What the proxy does with ``X-Forwarded-Proto``: replace the client's lines with its own, add
its own line before or after the client's, or send none of its own (passing the client's)."""


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 16
    upstream: tuple[str, int]
    scheme: str
    proto: ProtoLine


class _Forward(BaseHTTPRequestHandler):
    server: _ProxyServer
    timeout = 10  # seconds a client connection may stay idle

    def do_GET(self) -> None:
        headers = [
            (name, value)
            for name, value in self.headers.items()
            if name.lower() not in _HOP_BY_HOP | _FORWARDED
        ]
        client = self.client_address[0]
        sent_for = self.headers.get("X-Forwarded-For")
        headers.append(("X-Forwarded-For", f"{sent_for}, {client}" if sent_for else client))
        sent_proto = [
            ("X-Forwarded-Proto", v) for v in self.headers.get_all("X-Forwarded-Proto", [])
        ]
        own_proto = [("X-Forwarded-Proto", self.server.scheme)]
        headers += {
            "replace": own_proto,
            "before": own_proto + sent_proto,
            "after": sent_proto + own_proto,
            "none": sent_proto,
        }[self.server.proto]
        host, port = self.server.upstream
        answer = fetch(host, port, self.path, headers)
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read statuses, not access logs."""


@contextmanager
def forwarding_proxy(
    upstream: tuple[str, int], *, scheme: str = "https", proto: ProtoLine = "replace"
) -> Iterator[int]:
    """Run a proxy to ``upstream`` on 127.0.0.1; yield its port."""
    server = _ProxyServer(("127.0.0.1", 0), _Forward)
    server.upstream = upstream
    server.scheme = scheme
    server.proto = proto
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE_SECONDS)


@contextmanager
def waitress_serving(app: Any, host: str = "127.0.0.1", **adjustments: Any) -> Iterator[int]:
    """Serve a WSGI app with waitress in a thread; yield its port."""
    import waitress.server
    from waitress import wasyncore

    server: Any = waitress.server.create_server(app, host=host, port=0, **adjustments)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        yield int(server.effective_port)
    finally:
        # Closed by the server's own thread, woken by its trigger: its loop ends with no socket
        # left, and no socket is closed under a select() in progress.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(DEADLINE_SECONDS)
        server.task_dispatcher.shutdown()


@contextmanager
def uvicorn_serving(app: Any, host: str = "127.0.0.1", **options: Any) -> Iterator[int]:
    """Serve an ASGI app with uvicorn in a thread; yield its port."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family)
    listener.bind((host, 0))
    port = int(listener.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        _wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        if not server.started:
            pytest.fail("uvicorn did not start")
        yield port
    finally:
        server.should_exit = True
        thread.join(DEADLINE_SECONDS)
        listener.close()


@contextmanager
def gunicorn_serving(app: str, env: Mapping[str, str], log: Path, *options: str) -> Iterator[int]:
    """Run ``app`` (``module:factory()``) under gunicorn, output to ``log``; yield its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
               "1", "--log-level", "warning", *options, app]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **env, "PYTHONPATH": str(REPO)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until(lambda: process.poll() is not None or _answers(port), "gunicorn to start")
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{log.read_text(errors='replace')}")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(port: int) -> bool:
    try:
        fetch("127.0.0.1", port, "/health")
    except OSError:
        return False
    return True

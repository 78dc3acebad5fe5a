"""Start a throwaway Redis server on loopback for the test session.

Used by the ``redis_url`` fixture when ``APIKEYS_TEST_REDIS_URL`` is not set.
It needs ``redis-server`` (Debian's ``redis-server`` package). Nothing is
persisted: no RDB snapshots, no append-only file.

Also runnable: ``python tests/redis_server.py start DIR PORT`` / ``stop DIR``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.postgres_server import free_port

START_TIMEOUT = 30.0


def find_binary() -> str | None:
    """Locate ``redis-server`` on PATH."""
    return shutil.which("redis-server")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start(data_dir: Path, port: int) -> str:
    """Start a server on ``port`` with its files in ``data_dir``; return its URL."""
    binary = find_binary()
    if binary is None:
        raise FileNotFoundError("redis-server not found")
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "yes",
        "--pidfile", str(data_dir / "redis.pid"),
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis-server did not answer on port {port}")
        time.sleep(0.02)  # polling a starting server, not waiting out a timer
    return f"redis://127.0.0.1:{port}/0"


def pid(data_dir: Path) -> int | None:
    """The running server's process id, if any."""
    try:
        return int((data_dir / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def stop(data_dir: Path) -> None:
    """Stop the server started in ``data_dir`` (at once: nothing to persist)."""
    server = pid(data_dir)
    if server is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(server, signal.SIGKILL)
    (data_dir / "redis.pid").unlink(missing_ok=True)


class RedisServer:
    """A server the tests may kill and start again on the same port."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        start(self.data_dir, self.port)
        return self

    def pause(self) -> None:
        """Stop the server without closing anything (SIGSTOP): it answers nothing, as
        when paused or cut off by the network; :meth:`resume` lets it go on."""
        os.kill(self._pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._pid(), signal.SIGCONT)

    def _pid(self) -> int:
        server = pid(self.data_dir)
        assert server is not None, "the server is not running"
        return server

    def kill(self) -> None:
        stop(self.data_dir)
        deadline = time.monotonic() + START_TIMEOUT
        while _answers(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not stop")
            time.sleep(0.02)  # polling a stopping server


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        print(start(Path(sys.argv[2]), int(sys.argv[3])))
    elif sys.argv[1:2] == ["stop"]:
        stop(Path(sys.argv[2]))
    else:
        sys.exit("usage: redis_server.py start DIR PORT | stop DIR")

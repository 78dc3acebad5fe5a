"""Start a throwaway PostgreSQL server on loopback for the test session.

Used by the ``postgres_url`` fixture when ``APIKEYS_TEST_POSTGRES_URL`` is not
set. It needs the server binaries (``initdb``, ``pg_ctl``: Debian's
``postgresql`` package). PostgreSQL refuses to run as root, so as root the
server runs as the ``postgres`` system user that package creates.

Also runnable: ``python tests/postgres_server.py start DIR PORT`` / ``stop DIR``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


def find_binary(name: str) -> str | None:
    """Locate a PostgreSQL server binary on PATH or in Debian's versioned folders."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pause(pids: Iterable[int]) -> list[int]:
    """Stop these server processes of the throwaway server (SIGSTOP): their connections stay
    open and answer nothing, as behind a network partition. Returns those stopped (a
    session may have ended meanwhile); :func:`resume` them.

    Raises:
        PermissionError: The server was configured (``APIKEYS_TEST_POSTGRES_URL``): its
            process ids are not this machine's to signal.
    """
    if os.environ.get("APIKEYS_TEST_POSTGRES_URL"):
        raise PermissionError("the PostgreSQL server was not started by the test suite")
    stopped = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
    return stopped


def resume(pids: Iterable[int]) -> None:
    """Let processes stopped by :func:`pause` go on."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root but runuser is missing")
    return [runuser, "-u", "postgres", "--", *command]


def start(data_dir: Path, port: int) -> str:
    """Initialise and start a server in ``data_dir``; return its SQLAlchemy URL."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(data_dir, "postgres", "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(
        _as_server_user(
            [initdb, "-D", str(data_dir / "db"), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        ),
        **run,  # type: ignore[call-overload]
    )
    options = f"-p {port} -h 127.0.0.1 -k {data_dir} -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_server_user(
            [
                pg_ctl,
                "-D",
                str(data_dir / "db"),
                "-l",
                str(data_dir / "log"),
                "-o",
                options,
                "-w",
                "start",
            ]
        ),
        **run,  # type: ignore[call-overload]
    )
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def stop(data_dir: Path) -> None:
    """Stop the server started in ``data_dir`` (fast shutdown)."""
    pg_ctl = find_binary("pg_ctl")
    if pg_ctl is None:
        return
    subprocess.run(
        _as_server_user([pg_ctl, "-D", str(data_dir / "db"), "-m", "fast", "-w", "stop"]),
        check=False,
        capture_output=True,
        timeout=60,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["start"]:
        print(start(Path(sys.argv[2]), int(sys.argv[3])))
    elif sys.argv[1:2] == ["stop"]:
        stop(Path(sys.argv[2]))
    else:
        sys.exit("usage: postgres_server.py start DIR PORT | stop DIR")

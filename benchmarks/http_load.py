"""Requests per second and latency of ``GET /protected`` against ``GET /open``, through real servers.

For each framework a real server process listens on 127.0.0.1 (uvicorn for
FastAPI, waitress for Flask and Django) serving :mod:`benchmarks.http_apps`;
``wrk`` (a separate process, bounded by ``--duration`` and ``--timeout``)
loads one route at a time with one valid key, and the two routes alternate,
``rounds`` times each, so machine noise lands on both. Each figure is the
median over the rounds. A run whose answers were not all 2xx is refused: a
fast 401 would look like a fast protected endpoint.

On a machine with two cores or more (and ``taskset``), the server runs on one
core and ``wrk`` on another, so neither steals the other's time slices. The
server's CPU time per request (user + system, from ``/proc/<pid>/stat`` on
Linux) is recorded too: it is what throughput is made of when the server is
CPU-bound, and it is less disturbed by other processes than requests per
second are.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import math
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager, api_keys_table, metadata

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only


def _uvicorn(factory: str) -> list[str]:
    """uvicorn serving ``benchmarks.http_apps.<factory>()`` (an ASGI app)."""
    return ["-m", "uvicorn", "--factory", f"benchmarks.http_apps:{factory}", "--host", HOST,
            "--port", "{port}", "--no-access-log", "--log-level", "warning"]  # fmt: skip


def _waitress(factory: str) -> list[str]:
    """waitress, 4 threads, serving ``benchmarks.http_apps.<factory>()`` (a WSGI app)."""
    return ["-m", "waitress", "--host", HOST, "--port", "{port}", "--threads", "4",
            "--call", f"benchmarks.http_apps:{factory}"]  # fmt: skip


SERVERS: dict[str, list[str]] = {
    "fastapi (uvicorn)": _uvicorn("fastapi_app"),
    "fastapi middleware (uvicorn)": _uvicorn("fastapi_middleware_app"),
    "flask (waitress)": _waitress("flask_app"),
    "django (waitress)": _waitress("django_app"),
}
ROUTES: dict[str, tuple[str, ...]] = {
    "fastapi (uvicorn)": ("open", "noop", "protected"),
    "fastapi middleware (uvicorn)": ("open", "protected"),
    "flask (waitress)": ("open", "protected"),
    "django (waitress)": ("open", "protected"),
}
"""The routes loaded per server; FastAPI's ``/noop`` isolates its dependency machinery."""
_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


@dataclass(frozen=True)
class HttpResult:
    """One framework's figures: medians over the rounds."""

    framework: str
    open_rps: float
    protected_rps: float
    open_p50_us: float
    open_p99_us: float
    protected_p50_us: float
    protected_p99_us: float
    rounds: int
    duration_s: int
    connections: int
    noop_rps: float | None = None
    noop_p50_us: float | None = None
    open_cpu_us: float | None = None
    protected_cpu_us: float | None = None
    noop_cpu_us: float | None = None
    pinned: bool = False
    protected_over_open: tuple[float, ...] = ()
    """Each round's protected req/s over the same round's open req/s."""
    protected_over_noop: tuple[float, ...] = ()

    @property
    def kept(self) -> float:
        """The protected endpoint's share of the open endpoint's throughput.

        The median of the rounds' own ratios: runs next to each other in time
        share the machine's state, so a slow drift (other virtual machines on the
        host) cancels out of each ratio, where it would not out of two medians.
        """
        if self.protected_over_open:
            return float(statistics.median(self.protected_over_open))
        return self.protected_rps / self.open_rps

    @property
    def kept_over_noop(self) -> float | None:
        """The protected endpoint's share of the no-op dependency route's throughput."""
        if self.protected_over_noop:
            return float(statistics.median(self.protected_over_noop))
        return None if self.noop_rps is None else self.protected_rps / self.noop_rps

    @property
    def kept_interval(self) -> tuple[float, float] | None:
        """A bootstrap 95% interval of :attr:`kept`: how far the rounds' noise leaves it open."""
        return median_interval(self.protected_over_open)

    @property
    def kept_over_noop_interval(self) -> tuple[float, float] | None:
        """A bootstrap 95% interval of :attr:`kept_over_noop`."""
        return median_interval(self.protected_over_noop)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            **asdict(self),
            "kept": self.kept,
            "kept_over_noop": self.kept_over_noop,
            "kept_interval": self.kept_interval,
            "kept_over_noop_interval": self.kept_over_noop_interval,
        }


def median_interval(
    ratios: Sequence[float], *, resamples: int = 4000, seed: int = 2026
) -> tuple[float, float] | None:
    """A percentile-bootstrap 95% interval of the median of ``ratios``; ``None`` under 3 rounds.

    Seeded, so the same rounds always give the same interval.
    """
    if len(ratios) < 3:
        return None
    rng = random.Random(seed)
    medians = sorted(
        statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples)
    )
    return medians[int(0.025 * resamples)], medians[math.ceil(0.975 * resamples) - 1]


def _pinning() -> tuple[list[str], list[str]]:
    """Command prefixes that put the server and ``wrk`` on cores of their own, if possible."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset")
    if taskset is None or len(cores) < 2:
        return [], []
    return [taskset, "-c", str(cores[-1])], [taskset, "-c", str(cores[0])]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and all its threads, or ``None`` off Linux."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_serving(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        connection = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            connection.request("GET", "/open")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    raise RuntimeError("the server did not answer in time")


def request_ok(connection: http.client.HTTPConnection, route: str, key: str) -> None:
    """``GET /<route>`` with ``key`` as a bearer token; a RuntimeError unless it
    answers 200 and keeps the connection open.

    wrk and the instruction counter reuse their connections: a server that
    closes one after each answer (waitress does, for a response with no
    ``Content-Length``: Django's without ``CommonMiddleware``) makes every
    request pay a new connection, and a benchmark of it measures TCP set-up.
    The error names the route and the status, never the key.
    """
    connection.request("GET", "/" + route, headers={"Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"/{route} answered {response.status}, not 200")
    if response.will_close:
        raise RuntimeError(
            f"/{route} closed the connection after its answer (no Content-Length?):"
            " every request would pay a new connection"
        )


def check_answers(port: int, routes: Sequence[str], key: str) -> None:
    """:func:`request_ok` on every route, twice, over one connection."""
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        for route in (*routes, *routes):
            request_ok(connection, route, key)
    finally:
        connection.close()


def _latency_us(text: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {label} latency in wrk's output")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text: str) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 (µs) from ``wrk --latency`` output; non-2xx refused."""
    if "Non-2xx or 3xx responses" in text or "Socket errors" in text:
        raise ValueError("the load run had failed requests: " + text)
    match = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if match is None:
        raise ValueError("no Requests/sec in wrk's output")
    return float(match.group(1)), _latency_us(text, "50%"), _latency_us(text, "99%")


def _load(wrk: list[str], url: str, key: str, duration: int, connections: int) -> tuple[float, ...]:
    completed = subprocess.run(
        [
            *wrk,
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "2s",
            "--latency",
            "-H",
            f"Authorization: Bearer {key}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=False,
    )
    if completed.returncode != 0:
        # Not CalledProcessError: its message would carry the command line, and the key in it.
        raise RuntimeError(f"wrk failed with status {completed.returncode}: {completed.stderr}")
    return parse_wrk(completed.stdout)


def _measured_load(
    server: subprocess.Popen[bytes],
    wrk: list[str],
    url: str,
    key: str,
    duration: int,
    connections: int,
) -> tuple[float, ...]:
    """:func:`_load`'s figures plus the server's CPU µs per request (NaN when unknown)."""
    before = _cpu_seconds(server.pid)
    rps, p50, p99 = _load(wrk, url, key, duration, connections)
    after = _cpu_seconds(server.pid)
    if before is None or after is None or rps <= 0:
        return rps, p50, p99, math.nan
    return rps, p50, p99, (after - before) / (rps * duration) * 1e6


def _ratios(
    figures: dict[str, list[tuple[float, ...]]], top: str, bottom: str
) -> tuple[float, ...]:
    """Round by round, the requests per second of route ``top`` over those of ``bottom``."""
    if top not in figures or bottom not in figures:
        return ()
    return tuple(a[0] / b[0] for a, b in zip(figures[top], figures[bottom], strict=True))


def issue_key(path: Path) -> str:
    manager = SQLAlchemyKeyManager(f"sqlite:///{path}")
    try:
        metadata.create_all(manager.engine)
        key = manager.create_api_key("bench-user", "http benchmark", ["read:data"]).secret
        with manager.engine.connect() as connection:
            count = sa.select(sa.func.count()).select_from(api_keys_table)
            if connection.execute(count).scalar_one() != 1:
                raise AssertionError("the key was not stored")
        return key
    finally:
        manager.close()


@contextlib.contextmanager
def serving(
    framework: str,
    environment: Mapping[str, str],
    *,
    python: str = sys.executable,
    prefix: Sequence[str] = (),
    timeout: float = 30,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Serve ``framework`` (:data:`SERVERS`) on a free loopback port; yield the process and port.

    ``prefix`` goes before the Python command line (``taskset``, ``valgrind``).
    The server is stopped on the way out, killed if it does not stop.
    """
    port = _free_port()
    arguments = [part.replace("{port}", str(port)) for part in SERVERS[framework]]
    server = subprocess.Popen(
        [*prefix, python, *arguments],
        cwd=ROOT,
        env=dict(environment),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_serving(port, server, timeout=timeout)
        yield server, port
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        server.kill()  # nothing to do if it has stopped
        server.wait()


def measure_http(
    *,
    duration: int = 4,
    rounds: int = 3,
    connections: int = 16,
    frameworks: tuple[str, ...] = tuple(SERVERS),
    python: str = sys.executable,
) -> list[HttpResult]:
    """Serve each framework in turn and load both routes, alternating, ``rounds`` times."""
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk; make bench does it)")
    server_prefix, wrk_prefix = _pinning()
    wrk = [*wrk_prefix, wrk_path]
    directory = Path(tempfile.mkdtemp(prefix="apikeys-http-"))
    results = []
    try:
        database = directory / "keys.sqlite3"
        key = issue_key(database)
        environment = {**os.environ, "APIKEYS_BENCH_BACKEND": f"sqlite:///{database}"}
        for framework in frameworks:
            with serving(framework, environment, python=python, prefix=server_prefix) as (
                server,
                port,
            ):
                check_answers(port, ROUTES[framework], key)
                # Untimed: the first validation (a cache miss: a read, argon2, a
                # last_used_at write) and the servers' own warm-up.
                _load(wrk, f"http://{HOST}:{port}/protected", key, 1, connections)
                routes = ROUTES[framework]
                figures: dict[str, list[tuple[float, ...]]] = {route: [] for route in routes}
                base = f"http://{HOST}:{port}/"
                for round_number in range(rounds):
                    # Every other round runs the routes in reverse, so no route is
                    # always the first (or the last) after a change of route.
                    for route in routes if round_number % 2 == 0 else routes[::-1]:
                        figures[route].append(
                            _measured_load(server, wrk, base + route, key, duration, connections)
                        )

                def median(route: str, index: int, figures: dict[str, Any] = figures) -> float:
                    return float(statistics.median(run[index] for run in figures[route]))

                def cpu(route: str, figures: dict[str, Any] = figures) -> float | None:
                    if route not in figures or math.isnan(median(route, 3)):
                        return None
                    return median(route, 3)

                results.append(
                    HttpResult(
                        framework=framework,
                        open_rps=median("open", 0),
                        protected_rps=median("protected", 0),
                        open_p50_us=median("open", 1),
                        open_p99_us=median("open", 2),
                        protected_p50_us=median("protected", 1),
                        protected_p99_us=median("protected", 2),
                        rounds=rounds,
                        duration_s=duration,
                        connections=connections,
                        noop_rps=median("noop", 0) if "noop" in routes else None,
                        noop_p50_us=median("noop", 1) if "noop" in routes else None,
                        open_cpu_us=cpu("open"),
                        protected_cpu_us=cpu("protected"),
                        noop_cpu_us=cpu("noop"),
                        pinned=bool(server_prefix),
                        protected_over_open=_ratios(figures, "protected", "open"),
                        protected_over_noop=_ratios(figures, "protected", "noop"),
                    )
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return results


__all__ = [
    "SERVERS",
    "HttpResult",
    "check_answers",
    "issue_key",
    "measure_http",
    "median_interval",
    "parse_wrk",
    "request_ok",
    "serving",
]


def _asgi_caller(app: Any, key: str, loop: Any) -> Any:

    def call(route: str) -> None:
        path = "/" + route
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", HOST.encode()), (b"authorization", f"Bearer {key}".encode())],
            "client": (HOST, 1),
            "server": (HOST, 80),
        }
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        loop.run_until_complete(app(scope, receive, send))
        if statuses != [200]:
            raise AssertionError(f"{path} answered {statuses}")

    return call


def _wsgi_caller(app: Any, key: str) -> Any:
    import io

    def call(route: str) -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/" + route,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": HOST,
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": HOST,
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "REMOTE_ADDR": HOST,
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        statuses: list[str] = []
        body = app(environ, lambda status, _headers, _exc=None: statuses.append(status))
        try:
            b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        if not statuses or not statuses[0].startswith("200"):
            raise AssertionError(f"/{route} answered {statuses}")

    return call


def measure_in_process(
    framework: str, *, requests: int = 2_000, rounds: int = 5
) -> dict[str, float]:
    """Per-request cost (µs) of each route, calling the app directly: no server, no socket.

    Run one framework per process (Django is configured once per process).
    The routes alternate in short batches (``rounds`` of ``requests`` each, so
    a burst of noise from other processes lands on every route); the best
    batch's mean is reported per route: noise only ever adds time, and on a
    shared machine the median of these short batches moved by half between runs.
    """
    directory = Path(tempfile.mkdtemp(prefix="apikeys-inproc-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        database = directory / "keys.sqlite3"
        key = issue_key(database)
        os.environ["APIKEYS_BENCH_BACKEND"] = f"sqlite:///{database}"
        from benchmarks import http_apps

        # The factory the server command line names: "benchmarks.http_apps:<factory>".
        (factory,) = (arg.partition(":")[2] for arg in SERVERS[framework] if ":" in arg)
        app = getattr(http_apps, factory)()
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        asgi = framework.startswith("fastapi")
        if asgi:
            stack.callback(loop.run_until_complete, app.state.apikeys_manager.close())
        call = _asgi_caller(app, key, loop) if asgi else _wsgi_caller(app, key)
        routes = ROUTES[framework]
        for route in routes:  # untimed: the first validation, imports, lazy setup
            for _ in range(200):
                call(route)
        costs: dict[str, list[float]] = {route: [] for route in routes}
        for _ in range(rounds):
            for route in routes:
                started = time.perf_counter()
                for _ in range(requests):
                    call(route)
                costs[route].append((time.perf_counter() - started) / requests * 1e6)
        return {route: min(values) for route, values in costs.items()}


if __name__ == "__main__":
    # python -m benchmarks.http_load FRAMEWORK: one framework's in-process costs, as JSON.
    import json

    print(json.dumps({sys.argv[1]: measure_in_process(sys.argv[1])}))

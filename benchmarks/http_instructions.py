"""Instructions per request of ``GET /protected`` against ``GET /open``, counted by callgrind.

``python -m benchmarks.http_instructions`` serves each framework with the
server command line :mod:`benchmarks.http_load` loads with ``wrk`` (uvicorn
for FastAPI, waitress for Flask and Django, on 127.0.0.1 only), but under
``valgrind --tool=callgrind``, which counts every instruction the server
process executes, in all its threads. After a warm-up of every route, each
round and route goes: zero the counters (``callgrind_control -z``), send
``requests`` sequential keep-alive requests with one valid key, dump the
counters (``callgrind_control -d``) and divide the dump's total by
``requests``. The routes alternate order from round to round, as in
:func:`benchmarks.http_load.measure_http`, and each figure is the median over
the rounds. Every answer must be a 200: a fast 401 would look like a cheap
protected endpoint.

Why next to ``wrk``: on a shared machine, loopback throughput moves between
runs of the same route by more than a 90 % line can settle (the figures are in
``docs/benchmarks.md``). An instruction
count does not depend on what else the machine does; it says how much work
protection adds, without the noise. It is not time: cache misses, branch
mispredictions, waiting on a socket and switching threads cost time and no
instructions (or few), so ``kept`` here (open over protected instructions) is
the share of throughput a server bound by executed instructions alone would
keep.

What is counted. callgrind counts each thread apart (``--separate-threads=yes``).
uvicorn serves everything from one thread, and the whole process is counted.
waitress parses and sends in its main thread and runs the app in worker
threads; the main thread's count is not repeatable under valgrind: while a
worker holds a response's output buffer, the main loop finds the connection
writable, cannot take the buffer's lock and goes round again, and under
valgrind a request lasts far longer than natively, so these idle turns come
several times per request, as many as the threads' interleaving allows: from
round to round the worker threads' sum repeats closely and the main thread's
does not (``docs/benchmarks.md`` gives both). So for waitress ``instructions``
are the worker threads' and ``total_instructions`` the whole process's. The work left out is the same for both routes (parse a
request, send a response), so ``kept`` on the workers alone is lower than on
the whole process: it errs on the side of protection looking dearer.

Why medians: Python's cyclic garbage collector runs after a number of
allocations, and a full collection (every generation) costs tens of millions
of instructions at once. It lands in whichever round reaches its threshold
and in no other. With three rounds or more, the median leaves such a round
out; ``spread`` shows it.

Under valgrind, wall-clock intervals inside the server also come far more
often per request: the verification cache's lifetime (10 s) would expire
once per round (a read and an argon2 verification, which natively come once
per tens of thousands of requests), and a ``last_used_at`` write once per 60 s.
The servers' environment (:data:`SERVER_ENVIRONMENT`) makes both an hour, so
the counts are of the steady state, cache hits, and sets ``PYTHONHASHSEED=0``
so strings hash, and dicts probe, alike in every run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.http_load import (
    HOST,
    ROOT,
    ROUTES,
    SERVERS,
    issue_key,
    request_ok,
    serving,
)
from benchmarks.report import git_commit_of

RESULTS_DIR = ROOT / "benchmarks" / "results"
RECORD_SCHEMA = 1
SERVER_ENVIRONMENT: Mapping[str, str] = {
    "PYTHONHASHSEED": "0",
    "APIKEYS_CACHE_TTL": "3600",
    "APIKEYS_LAST_USED_INTERVAL": "3600",
}
"""Set in every measured server's environment (the module docstring says why)."""
STARTUP_TIMEOUT_S = 300.0
"""How long a server may take to answer under valgrind, which starts it slowly."""
REQUEST_TIMEOUT_S = 120.0
VERSIONED = ("fastapi", "starlette", "uvicorn", "flask", "werkzeug", "django", "waitress")
"""Distributions whose versions go in the record, as the servers' interpreter sees them."""
_INSTALL_HINT = "apt-get install valgrind; make bench does it"


def _spreads(per_round: Mapping[str, tuple[float, ...]]) -> dict[str, float]:
    return {
        route: (max(values) - min(values)) / statistics.median(values)
        for route, values in per_round.items()
    }


@dataclass(frozen=True)
class InstructionResult:
    """One framework's instructions per request, per route.

    Attributes:
        framework: A key of :data:`benchmarks.http_load.SERVERS`.
        requests: Requests per route per round.
        per_round: For each route, each round's instructions per request, in
            round order: the whole process for uvicorn, the worker threads for
            waitress (the module docstring says why).
        per_round_total: The same for the whole process, in every server.
    """

    framework: str
    requests: int
    per_round: Mapping[str, tuple[float, ...]]
    per_round_total: Mapping[str, tuple[float, ...]]

    @property
    def rounds(self) -> int:
        """How many rounds each route was measured for."""
        return len(next(iter(self.per_round.values())))

    @property
    def instructions(self) -> dict[str, float]:
        """Each route's instructions per request: the median over the rounds."""
        return {route: statistics.median(values) for route, values in self.per_round.items()}

    @property
    def total_instructions(self) -> dict[str, float]:
        """Each route's instructions per request in the whole process: the median over the rounds."""
        return {route: statistics.median(values) for route, values in self.per_round_total.items()}

    @property
    def spread(self) -> dict[str, float]:
        """Each route's (largest - smallest) round over its median: 0 is fully repeatable."""
        return _spreads(self.per_round)

    @property
    def kept(self) -> float:
        """Open over protected instructions: the throughput share kept if bound by instructions."""
        medians = self.instructions
        return medians["open"] / medians["protected"]

    @property
    def kept_total(self) -> float:
        """:attr:`kept` on the whole process's counts (waitress's main thread included)."""
        totals = self.total_instructions
        return totals["open"] / totals["protected"]

    @property
    def kept_over_noop(self) -> float | None:
        """FastAPI's no-op dependency route over protected instructions; ``None`` without one."""
        medians = self.instructions
        return medians["noop"] / medians["protected"] if "noop" in medians else None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with the derived figures."""
        return {
            "framework": self.framework,
            "requests": self.requests,
            "rounds": self.rounds,
            "instructions": self.instructions,
            "per_round": {route: list(values) for route, values in self.per_round.items()},
            "spread": self.spread,
            "kept": self.kept,
            "kept_over_noop": self.kept_over_noop,
            "total_instructions": self.total_instructions,
            "per_round_total": {
                route: list(values) for route, values in self.per_round_total.items()
            },
            "kept_total": self.kept_total,
            "spread_total": _spreads(self.per_round_total),
        }


def _callgrind_tools() -> tuple[str, str]:
    """The paths of ``valgrind`` and ``callgrind_control``, or a RuntimeError saying how to get them."""
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        missing = "valgrind" if valgrind is None else "callgrind_control"
        raise RuntimeError(f"{missing} is not installed ({_INSTALL_HINT})")
    return valgrind, control


def valgrind_version() -> str | None:
    """``valgrind --version`` (e.g. ``valgrind-3.19.0``), or ``None`` when it is not installed."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    completed = subprocess.run(
        [valgrind, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return completed.stdout.strip() or None


def _control(control: str, option: str, pid: int) -> None:
    completed = subprocess.run(
        [control, option, str(pid)], capture_output=True, text=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"callgrind_control {option} failed: {completed.stdout}{completed.stderr}"
        )


def _dumps(output: Path) -> set[Path]:
    return set(output.parent.glob(output.name + ".*"))


def _thread_number(path: Path) -> int:
    """The thread of a per-thread dump file, ``callgrind.out.<dump>-<thread>``."""
    match = re.fullmatch(r".*\.\d+-(\d+)", path.name)
    if match is None:
        raise RuntimeError(f"unexpected callgrind dump file name {path.name}")
    return int(match.group(1))


def dump_total(text: str) -> int:
    """The instruction count of one callgrind dump: its ``summary:`` line.

    Not the ``totals:`` line at the end: on the first dump after a zeroing it
    sometimes exceeds the summary (87.1 against 72.8 million in one waitress
    worker thread), and the worker threads' sums agree from round to round on
    the summaries only.
    """
    match = re.search(r"^summary:\s+(\d+)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError("no summary line in the callgrind dump")
    return int(match.group(1))


def _dumped_threads(control: str, pid: int, output: Path) -> dict[int, int]:
    """Dump the counters since the last zeroing; each thread's count, by thread number (1: main).

    The files read are the ones this dump created (one per thread), found by
    comparing the directory before and after, not the newest by modification
    time; they are deleted once read.
    """
    before = _dumps(output)
    _control(control, "-d", pid)
    created = _dumps(output) - before
    counts: dict[int, int] = {}
    try:
        for path in created:
            counts[_thread_number(path)] = dump_total(
                path.read_text(encoding="utf-8", errors="replace")
            )
    finally:
        for path in created:
            path.unlink()
    if 1 not in counts:
        raise RuntimeError("callgrind_control -d wrote no dump of the main thread")
    return counts


def _server_under_callgrind(
    framework: str, python: str, environment: Mapping[str, str], output: Path
) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[bytes], int]]:
    """Serve ``framework`` under callgrind (see :func:`benchmarks.http_load.serving`)."""
    valgrind, _ = _callgrind_tools()
    prefix = [valgrind, "--tool=callgrind", "--separate-threads=yes",
              f"--callgrind-out-file={output}"]  # fmt: skip
    return serving(framework, environment, python=python, prefix=prefix, timeout=STARTUP_TIMEOUT_S)


def _measure_framework(
    framework: str,
    *,
    key: str,
    environment: Mapping[str, str],
    directory: Path,
    requests: int,
    rounds: int,
    warmup: int,
    python: str,
) -> InstructionResult:
    _, control = _callgrind_tools()
    output = directory / "callgrind.out"
    routes = ROUTES[framework]
    # waitress's main thread only moves bytes; its count is not repeatable (see above).
    workers_only = "waitress" in SERVERS[framework]
    per_round: dict[str, list[float]] = {route: [] for route in routes}
    per_round_total: dict[str, list[float]] = {route: [] for route in routes}
    with _server_under_callgrind(framework, python, environment, output) as (server, port):
        connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        try:
            # Uncounted: the first validation (a cache miss: a read, argon2, a
            # last_used_at write), imports and lazy setup on first use.
            for route in routes:
                for _ in range(warmup):
                    request_ok(connection, route, key)
            for round_number in range(rounds):
                # Every other round runs the routes in reverse, like measure_http.
                for route in routes if round_number % 2 == 0 else routes[::-1]:
                    _control(control, "-z", server.pid)
                    for _ in range(requests):
                        request_ok(connection, route, key)
                    threads = _dumped_threads(control, server.pid, output)
                    total = sum(threads.values())
                    counted = total - threads[1] if workers_only else total
                    per_round[route].append(counted / requests)
                    per_round_total[route].append(total / requests)
        finally:
            connection.close()
    for leftover in directory.glob(output.name + "*"):  # the final dump, written at exit
        leftover.unlink()
    return InstructionResult(
        framework=framework,
        requests=requests,
        per_round={route: tuple(values) for route, values in per_round.items()},
        per_round_total={route: tuple(values) for route, values in per_round_total.items()},
    )


def measure_instructions(
    *,
    frameworks: Sequence[str] = tuple(SERVERS),
    requests: int = 1_000,
    rounds: int = 3,
    warmup: int = 200,
    python: str = sys.executable,
) -> list[InstructionResult]:
    """Count each framework's instructions per request on every route, one server at a time.

    Args:
        frameworks: Keys of :data:`benchmarks.http_load.SERVERS`.
        requests: Sequential requests per route per round.
        rounds: Rounds per route (the routes alternate order between rounds).
        warmup: Uncounted requests per route before the first round.
        python: The interpreter that runs the servers.

    Raises:
        RuntimeError: valgrind is missing, a server did not start, or a request
            did not answer 200.
    """
    if requests < 1 or rounds < 1 or warmup < 1:
        raise ValueError("requests, rounds and warmup must be at least 1")
    unknown = [framework for framework in frameworks if framework not in SERVERS]
    if unknown:
        raise ValueError(f"unknown frameworks {unknown}; known: {sorted(SERVERS)}")
    _callgrind_tools()
    directory = Path(tempfile.mkdtemp(prefix="apikeys-instructions-"))
    try:
        database = directory / "keys.sqlite3"
        key = issue_key(database)  # natively: argon2 under valgrind would take long
        environment = {
            **os.environ,
            **SERVER_ENVIRONMENT,
            "APIKEYS_BENCH_BACKEND": f"sqlite:///{database}",
        }
        return [
            _measure_framework(
                framework,
                key=key,
                environment=environment,
                directory=directory,
                requests=requests,
                rounds=rounds,
                warmup=warmup,
                python=python,
            )
            for framework in frameworks
        ]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def library_versions(python: str) -> dict[str, str | None]:
    """The versions of :data:`VERSIONED` and of Python itself, as ``python`` sees them."""
    script = (
        "import json, platform\n"
        "from importlib import metadata\n"
        "def version(name):\n"
        "    try:\n"
        "        return metadata.version(name)\n"
        "    except metadata.PackageNotFoundError:\n"
        "        return None\n"
        f"names = {list(VERSIONED)!r}\n"
        "print(json.dumps({'python': platform.python_version(),"
        " **{name: version(name) for name in names}}))\n"
    )
    completed = subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    versions: dict[str, str | None] = json.loads(completed.stdout)
    return versions


def build_record(
    results: Sequence[InstructionResult],
    *,
    python: str,
    command: str,
    started_at: str,
    duration_s: float,
    warmup: int,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON-ready record of one run."""
    return {
        "schema": RECORD_SCHEMA,
        "kind": "instructions",
        "started_at": started_at,
        "duration_s": duration_s,
        "command": command,
        "git_commit": git_commit_of(ROOT),
        "config": {
            "requests": results[0].requests if results else None,
            "rounds": results[0].rounds if results else None,
            "warmup": warmup,
            "server_environment": dict(SERVER_ENVIRONMENT),
            "servers": {result.framework: SERVERS[result.framework] for result in results},
        },
        "versions": {**library_versions(python), "valgrind": valgrind_version()},
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
        "results": [result.as_dict() for result in results],
        "notes": list(notes),
    }


def render_table(results: Sequence[InstructionResult]) -> str:
    """A Markdown table: instructions per request for each route, kept, spread.

    ``spread`` is the largest of the routes' spreads; ``kept, whole process``
    counts waitress's main thread too (the same as ``kept`` for uvicorn).
    """
    lines = [
        "| Server | open | noop | protected | added | kept | kept over noop "
        "| kept, whole process | spread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        medians = result.instructions
        noop = f"{medians['noop']:,.0f}" if "noop" in medians else "-"
        over_noop = result.kept_over_noop
        lines.append(
            f"| {result.framework} | {medians['open']:,.0f} | {noop} "
            f"| {medians['protected']:,.0f} | {medians['protected'] - medians['open']:+,.0f} "
            f"| {result.kept:.1%} | {'-' if over_noop is None else f'{over_noop:.1%}'} "
            f"| {result.kept_total:.1%} | {max(result.spread.values()):.2%} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http_instructions",
        description="Count the instructions per request of /open and /protected under callgrind.",
    )
    parser.add_argument(
        "--framework",
        action="append",
        choices=sorted(SERVERS),
        help="a server to measure (repeatable; default: all)",
    )
    parser.add_argument("--requests", type=int, default=1_000, help="per route per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per route")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted requests per route")
    parser.add_argument(
        "--note", action="append", default=[], help="a line for the record (e.g. other load)"
    )
    parser.add_argument("--json", type=Path, help="write the record here (default: results/)")
    parser.add_argument("--no-write", action="store_true", help="write no file")
    return parser


def record_path(*, no_write: bool, asked: Path | None, started_at: datetime) -> Path | None:
    """Where :func:`main` writes the record: nowhere with ``--no-write``, else ``--json``'s
    path, else ``benchmarks/results/instructions-<UTC start time>.json``."""
    if no_write:
        return None
    return asked or RESULTS_DIR / f"instructions-{started_at.strftime('%Y%m%dT%H%M%SZ')}.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the record; see ``--help``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(arguments)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    results = measure_instructions(
        frameworks=tuple(options.framework or SERVERS),
        requests=options.requests,
        rounds=options.rounds,
        warmup=options.warmup,
    )
    record = build_record(
        results,
        python=sys.executable,
        command=shlex.join(["python", "-m", "benchmarks.http_instructions", *arguments]),
        started_at=started_at.strftime("%Y-%m-%d %H:%M UTC"),
        duration_s=time.perf_counter() - started,
        warmup=options.warmup,
        notes=options.note,
    )
    print(render_table(results))
    print(f"\nmeasured at {record['git_commit']}; instructions per request, median of rounds")
    path = record_path(no_write=options.no_write, asked=options.json, started_at=started_at)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "RECORD_SCHEMA",
    "SERVER_ENVIRONMENT",
    "InstructionResult",
    "build_record",
    "dump_total",
    "main",
    "measure_instructions",
    "record_path",
    "render_table",
    "request_ok",
]

"""What counting a call against a key's limits costs: ``python -m benchmarks.meter``.

Times one ``spend`` (the meter's whole work for one validation of a limited
key) for a key without limits, with a rate limit, with a quota, and with both,
on the in-process meter (``MemoryMeter``) and on the Redis meter (``RedisMeter``,
one Lua script per call), side by side in one run: every case runs through the
harness's interleaving runner, so machine noise lands on all of them alike.
Every timed call is accepted (the limits are far above what the run spends), so
each one charges its counters.

It also times ``validate_api_key`` itself, cache on, on a SQLite file, for a key
without limits, with a rate limit and with a quota: a manager counting rate limits
in memory (``validate-memory``) beside one counting them in Redis
(``validate-redis``). The quota is held by the database in both: one ``UPDATE``
per call.

For the Redis cases the record also counts the scripts Redis ran per call (its
``commandstats``): one for a limited key, none for a key without limits; the
meter sends Redis nothing else. A bare round trip to the same server (``PING``)
is timed alongside, for comparison. The record's targets: a validation of a
rate-limited key runs at most one script (one round trip), one of a key without
limits none.

Redis comes from ``--redis URL`` (or ``APIKEYS_BENCH_REDIS_URL``), else a
throwaway ``redis-server`` started on loopback; without one the Redis cases
are skipped and the record says so. ``--quick`` is a smoke run whose figures
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apikeys._keylimits import MAX_LIMIT, Quota, RateLimit
from apikeys._meter import KeyLimits, MemoryMeter, Meter
from benchmarks.harness import Case, CaseResult, run_interleaved, timer_overhead_ns
from benchmarks.report import format_figure, machine_info
from tests import redis_server

ROOT = Path(__file__).resolve().parent.parent
REDIS_ENV = "APIKEYS_BENCH_REDIS_URL"
RECORD_SCHEMA = 1

MEMORY = "memory"
REDIS = "redis"
SUBJECTS = (MEMORY, REDIS)

_RATE = RateLimit(limit=MAX_LIMIT, window=timedelta(days=1))
_QUOTA = Quota(limit=MAX_LIMIT, period=timedelta(days=30))
_ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
WORKLOADS = {
    "unlimited": KeyLimits(),
    "rate_limited": KeyLimits(rate_limit=_RATE),
    "quota_limited": KeyLimits(quota=_QUOTA, quota_anchor=_ANCHOR),
    "both": KeyLimits(rate_limit=_RATE, quota=_QUOTA, quota_anchor=_ANCHOR),
}
"""The key's limits per workload: high enough that no timed call is refused."""

VALIDATE_MEMORY = "validate-memory"
VALIDATE_REDIS = "validate-redis"
VALIDATED: dict[str, dict[str, Any]] = {
    "unlimited": {},
    "rate_limited": {"rate_limit": _RATE},
    "quota_limited": {"quota": _QUOTA},
}
"""The limits of the validated key per workload, as ``create_api_key`` takes them."""

ROUND_TRIP = "round_trip"
"""The Redis-only baseline: a ``PING``, the least any call to Redis costs."""


@dataclass(frozen=True)
class Profile:
    """How much to measure: timed calls per batch, batches, untimed warm-up calls."""

    ops: int
    repeats: int
    warmup: int


FULL = Profile(ops=5000, repeats=5, warmup=500)
QUICK = Profile(ops=20, repeats=2, warmup=5)


def scripts_run(client: Any) -> Callable[[], int]:
    """A reader of how many scripts (``EVALSHA``) the Redis server of ``client`` has run."""

    def count() -> int:
        stats: dict[str, Any] = client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    return count


def _case(subject: str, workload: str, meter: Meter, profile: Profile, io: Any) -> Case:
    limits, meter_id = WORKLOADS[workload], f"bench-{workload}"

    def spend(_index: int) -> object:
        return meter.spend(meter_id, limits)

    return Case(subject=subject, size=1, workload=workload, ops=profile.ops, op=spend, io_count=io)


def _validation_cases(
    stack: ExitStack, url: str | None, profile: Profile, io: Callable[[], int]
) -> list[Case]:
    """``validate_api_key`` of each :data:`VALIDATED` key, cache on, on a SQLite file,
    with rate limits counted in memory and, given ``url``, in Redis."""
    from argon2 import PasswordHasher

    from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

    directory = Path(tempfile.mkdtemp(prefix="apikeys-validate-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    database = f"sqlite:///{directory / 'keys.db'}"
    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # setup only
    subjects = (
        {VALIDATE_MEMORY: None} if url is None else {VALIDATE_MEMORY: None, VALIDATE_REDIS: url}
    )
    cases = []
    for subject, redis in subjects.items():
        manager = SQLAlchemyKeyManager(
            database, cache_ttl=3600, password_hasher=hasher, redis_url=redis
        )
        stack.callback(manager.close)
        for workload, limits in VALIDATED.items():
            secret = manager.create_api_key("bench", workload, **limits).secret
            manager.validate_api_key(secret)  # cached from here on

            def validate(
                _index: int, validate: Any = manager.validate_api_key, secret: str = secret
            ) -> object:
                return validate(secret)

            cases.append(
                Case(
                    subject=subject,
                    size=1,
                    workload=workload,
                    ops=profile.ops,
                    op=validate,
                    io_count=io if subject == VALIDATE_REDIS else None,
                )
            )
    return cases


@contextmanager
def redis_url(given: str | None, say: Callable[[str], None]) -> Iterator[str | None]:
    """``given`` if set; else a throwaway server on loopback if the binary exists; else ``None``."""
    if given:
        yield given
        return
    if redis_server.find_binary() is None:
        say("redis-server not found: measuring the memory meter only")
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="apikeys-meter-"))
    server = redis_server.RedisServer(directory / "redis")
    say("starting a throwaway redis-server on loopback ...")
    try:
        yield server.start().url
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def run(
    profile: Profile, *, redis: str | None, seed: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Measure every case and return the record (a JSON-ready dict)."""
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    notes = ["Every timed call is accepted and charges its counters."]
    with ExitStack() as stack:
        url = stack.enter_context(redis_url(redis, say))
        meters: dict[str, tuple[Meter, Callable[[], int]]] = {MEMORY: (MemoryMeter(), lambda: 0)}
        baseline: list[Case] = []
        if url is None:
            notes.append(f"Redis not measured (no server URL, set {REDIS_ENV}, and no binary).")
        else:
            import redis as redis_client

            from apikeys._redis_meter import RedisMeter

            redis_meter = RedisMeter(url)
            stack.callback(redis_meter.close)
            stats = redis_client.Redis.from_url(url)
            stack.callback(stats.close)
            meters[REDIS] = (redis_meter, scripts_run(stats))
            ping = stats.ping
            baseline.append(
                Case(
                    REDIS,
                    1,
                    ROUND_TRIP,
                    profile.ops,
                    lambda _index: ping(),
                    io_count=meters[REDIS][1],
                )
            )
        cases = [
            _case(subject, workload, meter, profile, io)
            for subject, (meter, io) in meters.items()
            for workload in WORKLOADS
        ]
        cases += baseline
        cases += _validation_cases(stack, url, profile, meters.get(REDIS, (None, lambda: 0))[1])
        say(f"timing {len(cases)} cases, interleaved ...")
        results = run_interleaved(
            cases, profile.repeats, seed=seed, warmup_ops=profile.warmup, progress=say
        )
    return {
        "schema": RECORD_SCHEMA,
        "kind": "meter",
        "started_at": started_at,
        "duration_s": time.perf_counter() - started,
        "command": "python -m benchmarks.meter",
        "config": {
            "ops": profile.ops,
            "repeats": profile.repeats,
            "warmup": profile.warmup,
            "seed": seed,
            "timer_overhead_ns": timer_overhead_ns(),
        },
        "machine": machine_info(ROOT, argon2_parameters={}),
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        "results": [result.as_dict() for result in results],
        "targets": round_trip_targets(results),
        "notes": notes,
    }


ROUND_TRIPS_ALLOWED = {"unlimited": 0, "rate_limited": 1}
"""Redis scripts (round trips) one cached validation may run, per key: none for
a key without limits, one for a rate-limited key."""


def round_trip_targets(results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """One check per :data:`ROUND_TRIPS_ALLOWED` workload of ``validate-redis``."""
    by_workload = {r.workload: r for r in results if r.subject == VALIDATE_REDIS}
    baseline = by_workload.get("unlimited")
    ping = next((r for r in results if r.workload == ROUND_TRIP), None)
    targets = []
    for workload, allowed in ROUND_TRIPS_ALLOWED.items():
        result = by_workload.get(workload)
        if result is None or result.io_calls_per_op is None:
            continue
        targets.append(
            {
                "workload": workload,
                "allowed": allowed,
                "scripts_per_call": result.io_calls_per_op,
                "passed": result.io_calls_per_op <= allowed,
                "p50_us": result.p50_us,
                "unlimited_p50_us": baseline.p50_us if baseline else None,
                "ping_p50_us": ping.p50_us if ping else None,
            }
        )
    return targets


def render_markdown(record: dict[str, Any]) -> str:
    """The record as a table: one row per workload, the meters side by side."""
    by_case = {(r["subject"], r["workload"]): r for r in record["results"]}
    lines = [
        "| key | memory p50 | memory calls/s | Redis p50 | Redis calls/s | Redis scripts per call |",
        "|---|---|---|---|---|---|",
    ]
    for workload in (*WORKLOADS, ROUND_TRIP):
        if workload == ROUND_TRIP and (REDIS, workload) not in by_case:
            continue
        cells = []
        for subject in SUBJECTS:
            result = by_case.get((subject, workload))
            if result is None:
                cells += ["-", "-"]
                continue
            cells += [f"{format_figure(result['p50_us'])} µs", f"{result['ops_per_s']:,.0f}"]
        redis_result = by_case.get((REDIS, workload))
        scripts = redis_result and redis_result["io_calls_per_op"]
        cells.append("-" if scripts is None else f"{scripts:g}")
        title = "Redis round trip (PING)" if workload == ROUND_TRIP else workload
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "validate_api_key, cache on, SQLite file (the quota is one UPDATE per call in both):",
        "",
        "| key | rate limits in memory: p50 | calls/s | in Redis: p50 | calls/s"
        " | Redis scripts per call |",
        "|---|---|---|---|---|---|",
    ]
    for workload in VALIDATED:
        cells = []
        for subject in (VALIDATE_MEMORY, VALIDATE_REDIS):
            result = by_case.get((subject, workload))
            if result is None:
                cells += ["-", "-"]
                continue
            cells += [f"{format_figure(result['p50_us'])} µs", f"{result['ops_per_s']:,.0f}"]
        redis_result = by_case.get((VALIDATE_REDIS, workload))
        scripts = redis_result and redis_result["io_calls_per_op"]
        cells.append("-" if scripts is None else f"{scripts:g}")
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.meter",
        description="Time counting one call against a key's rate limit and quota.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run; the figures mean nothing"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get(REDIS_ENV) or None,
        help=f"a Redis server (default: ${REDIS_ENV}, else one started for the run)",
    )
    parser.add_argument("--json", type=Path, help="write the record as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement; see ``python -m benchmarks.meter --help``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(arguments)
    record = run(QUICK if options.quick else FULL, redis=options.redis, seed=options.seed, say=_say)
    record["command"] = shlex.join(["python", "-m", "benchmarks.meter", *arguments])
    if options.quick:
        record["notes"].append("Quick mode: a smoke run; the figures mean nothing.")
    print(render_markdown(record))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

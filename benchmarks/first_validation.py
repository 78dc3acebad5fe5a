"""The first validation of a key, apikeys next to djangorestframework-api-key: ``python -m benchmarks.first_validation``.

A key's first validation in a process is a cache miss: one read, one argon2id
check, and the note of its use. ``last_used_at`` is written off the request path
by default (``last_used_interval=60``: a background flush); ``last_used_interval=0``
writes it, with a commit, inside the validation, as every validation did before
the flusher. The peer's ``APIKey.objects.is_valid`` reads the row and checks a
SHA-512 hash, and writes nothing.

Every subject gets fresh keys: each timed call presents a key no call has
presented before, so every apikeys call is a real first validation (its cache
holds nothing for it). Cases on SQLite (a file per subject) and on PostgreSQL
(``--postgres URL``, ``$APIKEYS_BENCH_POSTGRES_URL``, or a throwaway server
started on loopback when the server binaries are installed) run interleaved
in one run through the harness's runner. The target: apikeys' default at least
twice the peer's speed (its p50 at most half the peer's), on both databases.

The peer is an optional import: without it (outside ``benchmarks/.venv``) apikeys
is measured alone and the record says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apikeys._keyformat import parse_key
from apikeys.backends._sqlalchemy import api_keys_table
from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
from benchmarks.harness import Case, run_interleaved, timer_overhead_ns
from benchmarks.report import format_figure, machine_info

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "APIKEYS_BENCH_POSTGRES_URL"
RECORD_SCHEMA = 1

FLUSHED = "apikeys"
WRITTEN = "apikeys-write-in-validation"
DRF = "drf-api-key"
FLOOR = "floor"
SUBJECT_TITLES = {
    FLUSHED: "apikeys (default: last_used_at flushed in the background)",
    WRITTEN: "apikeys, last_used_interval=0 (last_used_at committed in the validation)",
    DRF: "djangorestframework-api-key `is_valid`",
    FLOOR: "floor: one driver round trip + one argon2id verify",
}
TARGET_RATIO = 2.0


@dataclass(frozen=True)
class Profile:
    """How much to measure: timed first validations per batch, batches, untimed warm-up."""

    ops: int
    repeats: int
    warmup: int

    @property
    def keys_needed(self) -> int:
        return self.warmup + self.ops * self.repeats


FULL = Profile(ops=200, repeats=5, warmup=20)
QUICK = Profile(ops=4, repeats=2, warmup=1)


def drf_available() -> bool:
    """Whether the peer is installed here."""
    return importlib.util.find_spec("rest_framework_api_key") is not None


def fresh_keys(keys: Sequence[str]) -> Callable[[int], object]:
    """An operation that validates the next key never presented before."""
    unused: Iterator[str] = iter(keys)

    def take(_index: int) -> str:
        return next(unused)

    return take


def _apikeys_case(url: str, database: str, subject: str, profile: Profile) -> tuple[Case, Any]:
    interval = 60.0 if subject == FLUSHED else 0.0
    manager = SQLAlchemyKeyManager(url, last_used_interval=interval, max_active_keys_per_owner=0)
    secrets = [
        manager.create_api_key(f"first-{subject}", f"k{n}").secret
        for n in range(profile.keys_needed)
    ]
    take = fresh_keys(secrets)

    def validate(index: int) -> object:
        return manager.validate_api_key(str(take(index)))

    return Case(
        subject=subject, size=profile.keys_needed, workload=database, ops=profile.ops, op=validate
    ), manager


def _floor_case(url: str, database: str, profile: Profile) -> tuple[Case, Any]:
    """The least any argon2id-hashed lookup costs: the stored hash read by primary key on
    an open driver connection (no pool, no SQLAlchemy, no decoy, no model), then one
    argon2id verify with the manager's parameters. apikeys cannot go below it."""
    manager = SQLAlchemyKeyManager(url, last_used_interval=60.0, max_active_keys_per_owner=0)
    secrets = [
        manager.create_api_key(f"first-{FLOOR}", f"k{n}").secret for n in range(profile.keys_needed)
    ]
    take = fresh_keys(secrets)
    connection = manager.engine.raw_connection()
    marker = "?" if database == "sqlite" else "%s"
    if database != "sqlite":
        connection.driver_connection.autocommit = True  # type: ignore[union-attr]
    table = api_keys_table.name
    statement = f"SELECT secret_hash FROM {table} WHERE id = {marker}"
    hasher = manager.hasher

    def validate(index: int) -> object:
        secret = str(take(index))
        cursor = connection.cursor()
        cursor.execute(statement, (parse_key(secret).id,))
        row = cursor.fetchone()
        cursor.close()
        return row is not None and hasher.verify(row[0], secret)

    def close() -> None:
        connection.close()
        manager.close()

    return Case(
        subject=FLOOR, size=profile.keys_needed, workload=database, ops=profile.ops, op=validate
    ), close


def _django_database(url: str) -> dict[str, Any]:
    """Django's settings for the server a SQLAlchemy PostgreSQL URL names."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.database,
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.host or "",
        "PORT": str(parsed.port or ""),
    }


def _drf_cases(
    directory: Path, postgres_url: str | None, profile: Profile, rng: random.Random
) -> list[Case]:
    from benchmarks.peers import drf_api_key

    databases: dict[str, Path | dict[str, Any]] = {"first_sqlite": directory / "drf.sqlite3"}
    if postgres_url:
        databases["first_postgresql"] = _django_database(postgres_url)
    drf_api_key.configure_django(databases)
    cases = []
    for alias in databases:
        subject = drf_api_key.open_subject(
            alias, profile.keys_needed, real_keys=profile.keys_needed, rng=rng
        )
        take = fresh_keys(subject.keys.valid)

        def validate(index: int, subject: Any = subject, take: Any = take) -> object:
            return subject.validate(str(take(index)))

        database = alias.removeprefix("first_")
        cases.append(
            Case(
                subject=DRF,
                size=profile.keys_needed,
                workload=database,
                ops=profile.ops,
                op=validate,
            )
        )
    return cases


@contextmanager
def postgres_server(
    url: str | None, wanted: bool, say: Callable[[str], None]
) -> Iterator[str | None]:
    """``url`` if given; else a throwaway server on loopback if the binaries exist; else ``None``."""
    if not wanted:
        yield None
        return
    if url:
        yield url
        return
    sys.path.insert(0, str(ROOT))
    from tests import postgres_server as server

    if server.find_binary("initdb") is None:
        say("PostgreSQL server binaries not found: measuring SQLite only")
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix="apikeys-first-pg-"))
    say("starting a throwaway PostgreSQL server on loopback ...")
    try:
        yield server.start(directory, server.free_port())
    finally:
        server.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def run(
    profile: Profile,
    *,
    postgres_url: str | None,
    use_postgres: bool = True,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Measure every case and return the record (a JSON-ready dict)."""
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    rng = random.Random(seed)
    directory = Path(tempfile.mkdtemp(prefix="apikeys-first-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        server_url = stack.enter_context(postgres_server(postgres_url, use_postgres, say))
        urls = {"sqlite": None, "postgresql": server_url}
        cases: list[Case] = []
        for database, url in urls.items():
            if database == "postgresql" and url is None:
                continue
            for subject in (FLUSHED, WRITTEN):
                say(f"issuing {profile.keys_needed:,} keys for {subject} on {database} ...")
                subject_url = url or f"sqlite:///{directory / f'{subject}.db'}"
                case, manager = _apikeys_case(subject_url, database, subject, profile)
                stack.callback(manager.close)
                cases.append(case)
            say(f"issuing {profile.keys_needed:,} keys for {FLOOR} on {database} ...")
            floor, close = _floor_case(
                url or f"sqlite:///{directory / 'floor.db'}", database, profile
            )
            stack.callback(close)
            cases.append(floor)
        peer = drf_available()
        if peer:
            say("seeding djangorestframework-api-key ...")
            cases += _drf_cases(directory, server_url, profile, rng)
        say("timing first validations, interleaved ...")
        results = run_interleaved(
            cases, profile.repeats, seed=seed, warmup_ops=profile.warmup, progress=say
        )
        probe = SQLAlchemyKeyManager("sqlite://")
        hasher = probe.hasher
        probe.close()
        machine = machine_info(
            ROOT,
            argon2_parameters={
                "time_cost": hasher.time_cost,
                "memory_cost": hasher.memory_cost,
                "parallelism": hasher.parallelism,
            },
        )
    p50 = {(result.subject, result.workload): result.p50_us for result in results}
    targets = []
    for database in ("sqlite", "postgresql"):
        ours, theirs = p50.get((FLUSHED, database)), p50.get((DRF, database))
        if ours is None or theirs is None:
            continue
        ratio = theirs / ours
        targets.append(
            {
                "database": database,
                "name": f"first validation at least {TARGET_RATIO:g}x the peer's speed ({database})",
                "ratio": ratio,
                "target": TARGET_RATIO,
                "passed": ratio >= TARGET_RATIO,
                "apikeys_p50_us": ours,
                "peer_p50_us": theirs,
                "written_in_validation_p50_us": p50.get((WRITTEN, database)),
                "floor_p50_us": p50.get((FLOOR, database)),
            }
        )
    notes = [
        "Every timed call presents a key never presented before: a first validation.",
        "The PostgreSQL server runs with fsync=off (a throwaway test server): a commit costs less than on a durable one.",
    ]
    if not peer:
        notes.append("djangorestframework-api-key is not installed here: apikeys measured alone.")
    if server_url is None:
        notes.append("PostgreSQL not measured (no server URL and no server binaries).")
    return {
        "schema": RECORD_SCHEMA,
        "kind": "first_validation",
        "started_at": started_at,
        "duration_s": time.perf_counter() - started,
        "command": "python -m benchmarks.first_validation",
        "config": {
            "ops": profile.ops,
            "repeats": profile.repeats,
            "warmup": profile.warmup,
            "seed": seed,
            "timer_overhead_ns": timer_overhead_ns(),
        },
        "machine": machine,
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        "results": [result.as_dict() for result in results],
        "targets": targets,
        "notes": notes,
    }


def render_markdown(record: dict[str, Any]) -> str:
    """The record as a table: one row per database, the subjects side by side."""
    p50 = {(r["subject"], r["workload"]): r["p50_us"] for r in record["results"]}
    lines = [
        "| database | "
        + " | ".join(SUBJECT_TITLES[s] for s in (FLUSHED, WRITTEN, DRF))
        + " | peer ÷ apikeys | target | "
        + SUBJECT_TITLES[FLOOR]
        + " | peer ÷ floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = {t["database"]: t for t in record["targets"]}
    for database in ("sqlite", "postgresql"):
        figures = [p50.get((subject, database)) for subject in (FLUSHED, WRITTEN, DRF)]
        if figures[0] is None:
            continue
        cells = [f"{format_figure(value)} µs" if value is not None else "-" for value in figures]
        verdict = verdicts.get(database)
        ratio = f"{verdict['ratio']:.2f}×" if verdict else "-"
        met = ("met" if verdict["passed"] else "**missed**") if verdict else "-"
        floor = p50.get((FLOOR, database))
        floor_cell = f"{format_figure(floor)} µs" if floor is not None else "-"
        floor_ratio = f"{figures[2] / floor:.2f}×" if floor is not None and figures[2] else "-"
        lines.append(
            f"| {database} | "
            + " | ".join(cells)
            + f" | {ratio} | ≥ {TARGET_RATIO:g}×: {met} | {floor_cell} | {floor_ratio} |"
        )
    return "\n".join(lines)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.first_validation",
        description="Time first validations of fresh keys against djangorestframework-api-key.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run; the figures mean nothing"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=os.environ.get(POSTGRES_ENV) or None,
        help=f"this PostgreSQL server (default: ${POSTGRES_ENV}, else a throwaway one if possible)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--json", type=Path, help="write the record as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement; see ``python -m benchmarks.first_validation --help``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(arguments)
    profile = QUICK if options.quick else FULL
    record = run(
        profile,
        postgres_url=options.postgres,
        use_postgres=not options.no_postgres,
        seed=options.seed,
        say=_say,
    )
    record["command"] = shlex.join(["python", "-m", "benchmarks.first_validation", *arguments])
    if options.quick:
        record["notes"].append("Quick mode: a smoke run; the figures mean nothing.")
    print(render_markdown(record))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

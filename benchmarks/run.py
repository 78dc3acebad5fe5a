"""Command line of the harness: ``python -m benchmarks [--quick]``.

A full run seeds one SQLite file per size (1,000 and 100,000 keys), measures
every workload on each, interleaved, checks the targets, prints a summary and
writes ``benchmarks/results/core-<UTC time>.json`` (git-ignored) and the generated block of
``docs/benchmarks.md``. ``--quick`` runs tiny sizes in a second or two and
writes nothing unless asked: a smoke test, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher

from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager
from benchmarks.apikeys_sqlite import COMPONENTS, ApikeysSQLiteSubject, open_subject
from benchmarks.harness import Case, run_interleaved, timer_overhead_ns
from benchmarks.report import RunRecord, machine_info, render_console, update_markdown, write_json
from benchmarks.targets import evaluate
from benchmarks.workloads import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
ALL_WORKLOADS = [*WORKLOADS, *COMPONENTS]


@dataclass(frozen=True)
class Profile:
    """How much to measure.

    Attributes:
        sizes: Stored-key counts, one SQLite file each.
        repeats: Timed batches per case (after one untimed warm-up batch).
        ops: Operations per batch, by workload: enough for a stable p99 of the
            fast workloads, about a second per batch for the slow ones.
        real_keys: Keys per database hashed from a known secret (the ones presented).
        filler_hash_pool: Real hashes reused by the other rows.
    """

    sizes: tuple[int, ...]
    repeats: int
    ops: dict[str, int] = field(default_factory=dict)
    real_keys: int = 512
    filler_hash_pool: int = 64
    argon2: dict[str, int] | None = None
    """argon2id ``time_cost``/``memory_cost`` overrides; ``None``: the backend's defaults."""


FULL = Profile(
    sizes=(1_000, 100_000),
    repeats=7,
    ops={
        "cache_hit": 20_000,
        "cache_miss": 512,
        "wrong_secret": 512,
        "unknown_id": 512,
        "garbage": 20_000,
        "bad_checksum": 20_000,
        "create": 40,
        "argon2_verify": 512,
        "row_lookup": 2_000,
        "row_lookup_prebuilt": 2_000,
    },
)
QUICK = Profile(
    sizes=(50, 200),
    repeats=2,
    ops={
        "cache_hit": 200,
        "cache_miss": 16,
        "wrong_secret": 16,
        "unknown_id": 16,
        "garbage": 200,
        "bad_checksum": 200,
        "create": 3,
        "argon2_verify": 16,
        "row_lookup": 16,
        "row_lookup_prebuilt": 16,
    },
    real_keys=16,
    filler_hash_pool=4,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure apikeys validation and creation on SQLite files.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, a second or two; writes nothing by default",
    )
    parser.add_argument("--sizes", help="comma-separated stored-key counts (e.g. 1000,100000)")
    parser.add_argument("--repeats", type=int, help="timed batches per case")
    parser.add_argument(
        "--workload",
        action="append",
        choices=ALL_WORKLOADS,
        help="measure only this workload (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="seeds filler ids, garbage, order")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="update the generated block of this page")
    parser.add_argument("--no-write", action="store_true", help="write no file, even in a full run")
    parser.add_argument(
        "--argon2-memory-cost",
        type=int,
        metavar="KIB",
        help="argon2id memory cost instead of the backend's default (explores a trade-off)",
    )
    parser.add_argument(
        "--argon2-time-cost",
        type=int,
        metavar="N",
        help="argon2id time cost instead of the backend's default",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        help="pin the run to this CPU (Linux): the CPUs of a shared VM need not be equal",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the SQLite files in this directory (default: temporary)"
    )
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit with status 1 if a target is missed"
    )
    return parser


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise SystemExit(f"--sizes must be comma-separated integers, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise SystemExit("--sizes must be positive")
    return sizes


def run_benchmarks(
    profile: Profile,
    *,
    workloads: Sequence[str] = tuple(ALL_WORKLOADS),
    seed: int = 2026,
    workdir: Path | None = None,
    command: str = "python -m benchmarks",
    log: bool = True,
) -> RunRecord:
    """Seed the databases, run every case interleaved, and return the record."""

    def say(message: str) -> None:
        if log:
            print(message, file=sys.stderr, flush=True)

    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    rng = random.Random(seed)
    own_workdir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="apikeys-bench-")) if workdir is None else workdir
    directory.mkdir(parents=True, exist_ok=True)
    subjects: list[ApikeysSQLiteSubject] = []
    hasher, default_argon2 = _password_hasher(profile.argon2)
    try:
        for size in profile.sizes:
            say(f"seeding {size:,} keys ...")
            subject = open_subject(
                directory / f"keys-{size}.sqlite3",
                size,
                real_keys=profile.real_keys,
                filler_hash_pool=profile.filler_hash_pool,
                rng=rng,
                password_hasher=hasher,
            )
            subjects.append(subject)
            say(f"  done in {subject.seed_report.seconds:.1f} s")
        cases: list[Case] = [
            WORKLOADS[name](subject, profile.ops[name])
            if name in WORKLOADS
            else COMPONENTS[name](subject, profile.ops[name])
            for subject in subjects
            for name in workloads
        ]
        overhead = timer_overhead_ns()
        used = subjects[0].manager.hasher
        machine = machine_info(
            ROOT,
            argon2_parameters={
                "time_cost": used.time_cost,
                "memory_cost": used.memory_cost,
                "parallelism": used.parallelism,
            },
        )
        say(f"running {len(cases)} cases x {profile.repeats} repeats, interleaved ...")
        results = run_interleaved(cases, profile.repeats, seed=seed, progress=say)
        return RunRecord(
            started_at=started_at,
            command=command,
            config={
                "sizes": list(profile.sizes),
                "repeats": profile.repeats,
                "ops": {name: profile.ops[name] for name in workloads},
                "real_keys": profile.real_keys,
                "filler_hash_pool": profile.filler_hash_pool,
                "seed": seed,
                "timer_overhead_ns": overhead,
                "default_argon2": default_argon2,
            },
            machine=machine,
            seeding=[subject.seed_report.as_dict() for subject in subjects],
            results=results,
            checks=evaluate(results, default_argon2=default_argon2),
            duration_s=time.perf_counter() - started,
        )
    finally:
        for subject in subjects:
            subject.close()
        if own_workdir:
            shutil.rmtree(directory, ignore_errors=True)


def _password_hasher(overrides: dict[str, int] | None) -> tuple[PasswordHasher | None, bool]:
    """The hasher for ``overrides`` (``None`` keeps the backend's), and whether it is the default."""
    if not overrides:
        return None, True
    probe = SQLAlchemyKeyManager("sqlite://")
    default = probe.hasher
    probe.close()
    hasher = PasswordHasher(
        time_cost=overrides.get("time_cost", default.time_cost),
        memory_cost=overrides.get("memory_cost", default.memory_cost),
        parallelism=default.parallelism,
        hash_len=default.hash_len,
        salt_len=default.salt_len,
        type=default.type,
    )
    same = all(
        getattr(hasher, name) == getattr(default, name) for name in ("time_cost", "memory_cost")
    )
    return hasher, same


def _pin(cpu: int) -> None:
    if not hasattr(os, "sched_setaffinity"):
        raise SystemExit("--cpu needs Linux (os.sched_setaffinity)")
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--cpu {cpu}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the harness; see ``python -m benchmarks --help``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(arguments)
    base = QUICK if options.quick else FULL
    profile = Profile(
        sizes=parse_sizes(options.sizes) if options.sizes else base.sizes,
        repeats=options.repeats or base.repeats,
        ops=base.ops,
        real_keys=base.real_keys,
        filler_hash_pool=base.filler_hash_pool,
        argon2={
            name: value
            for name, value in (
                ("memory_cost", options.argon2_memory_cost),
                ("time_cost", options.argon2_time_cost),
            )
            if value is not None
        }
        or None,
    )
    if profile.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    if options.cpu is not None:
        _pin(options.cpu)
    record = run_benchmarks(
        profile,
        workloads=options.workload or tuple(ALL_WORKLOADS),
        seed=options.seed,
        workdir=options.workdir,
        command=shlex.join(["python", "-m", "benchmarks", *arguments]),
    )
    if options.quick:
        record.notes.append("Quick mode: a smoke run of tiny sizes; the figures mean nothing.")
    print(render_console(record))
    json_path, markdown_path = options.json, options.markdown
    if not options.quick and not options.no_write:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        json_path = json_path or RESULTS_DIR / f"core-{stamp}.json"
        markdown_path = markdown_path or DOCS_PAGE
    if json_path is not None and not options.no_write:
        write_json(record, json_path)
        print(f"wrote {json_path}")
    if markdown_path is not None and not options.no_write:
        update_markdown(markdown_path, record)
        print(f"wrote {markdown_path}")
    if options.fail_on_miss and not all(check.passed for check in record.checks):
        return 1
    return 0


__all__ = ["ALL_WORKLOADS", "FULL", "QUICK", "Profile", "main", "parse_sizes", "run_benchmarks"]

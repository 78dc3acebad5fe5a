"""The summary table of ``docs/benchmarks.md`` (``python -m benchmarks.summary``).

The table must come from the records of a run, never from the page: a fixture
result set in a temporary folder goes in, its own figures and verdicts must
come out, and changing one figure of the records changes the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import compare, fleet, meter, report, run, summary, targets
from benchmarks.harness import CaseResult

ROOT = Path(__file__).resolve().parents[2]
PROSE_BEFORE = "# Benchmarks\n\nHand-written introduction.\n\n"
PROSE_AFTER = "\n\n## Details\n\nHand-written sections.\n"
SIZES = (1_000, 100_000)
APIKEYS = "apikeys-sqlalchemy"

# Figures no real run would produce to the digit, so the table can only hold them by reading them.
P50_US = {
    "cache_hit": 1.234,
    "cache_miss": 432.1,
    "wrong_secret": 401.0,
    "unknown_id": 402.0,
    "garbage": 3.456,
    "bad_checksum": 4.321,
    "create": 1_500.0,
    "argon2_verify": 71.7,
    "row_lookup": 150.0,
    "row_lookup_prebuilt": 250.0,
}
QUERIES = {"cache_hit": 0.0, "garbage": 0.0, "bad_checksum": 0.0, "argon2_verify": 0.0}
PEERS = {
    ("drf-api-key", "cache_hit"): (487.6, 2_051.0),
    ("drf-api-key", "cache_miss"): (499.9, 2_000.5),
    ("drf-api-key", "garbage"): (444.4, 2_250.0),
    ("keyshield-cached", "cache_hit"): (2_999.0, 333.0),
    ("keyshield", "cache_miss"): (155_555.0, 6.43),
    ("keyshield", "garbage"): (377.0, 31.0),
}


def _result(subject: str, workload: str, size: int, p50_us: float, ops_per_s: float) -> CaseResult:
    queries = QUERIES.get(workload, 1.0) if subject == APIKEYS else 1.0
    return CaseResult(subject, size, workload, 8, p50_us, p50_us * 2, ops_per_s, queries)


def _own_results(scale: dict[str, float] | None = None) -> list[CaseResult]:
    scale = scale or {}
    return [
        _result(
            APIKEYS,
            workload,
            size,
            p50 * scale.get(workload, 1.0),
            1e6 / (p50 * scale.get(workload, 1.0)),
        )
        for size in SIZES
        for workload, p50 in P50_US.items()
    ]


def _command(module: str) -> str:
    return f"python -m {module}"


def _fleet_arm(label: str, cache_ttl: float, p50: float, p99: float, top: float) -> dict[str, Any]:
    store, channel, flavour = label.split("-")
    return {
        "label": label,
        "store": store,
        "channel": channel,
        "flavour": flavour,
        "workers": 4,
        "trials": 120 if channel != "none" else 20,
        "cache_ttl": cache_ttl,
        "missed": 0,
        "every_worker": {"p50_ms": p50, "p99_ms": p99, "max_ms": top},
    }


def fixture_records(*, cache_hit_scale: float = 1.0) -> dict[str, dict[str, Any]]:
    """One run's records, as the six harnesses write them, with made-up figures."""
    own = _own_results({"cache_hit": cache_hit_scale})
    core = {
        "started_at": "2026-12-01 09:00 UTC",
        "command": _command("benchmarks"),
        "machine": {"git_commit": "abc1234"},
        "results": [result.as_dict() for result in own],
        "targets": [check.as_dict() for check in targets.evaluate(own)],
    }
    peers = [
        _result(subject, workload, size, p50, ops)
        for size in SIZES
        for (subject, workload), (p50, ops) in PEERS.items()
    ]
    compared = [result for result in own if result.workload != "bad_checksum"] + peers
    fleet_arms = [
        _fleet_arm("postgresql-notify-sync", 60.0, 1.71, 8.86, 11.3),
        _fleet_arm("sqlite-redis-sync", 60.0, 1.96, 9.46, 123.4),
        _fleet_arm("sqlite-none-sync", 1.0, 580.4, 979.5, 987.6),
    ]
    clerk = {
        "hot_keys": 100,
        "validations": 10_000,
        "hot_calls": 100,
        "hot_calls_allowed": 100,
        "concurrency": 100,
        "cold_calls": 1,
        "garbage_inputs": 700,
        "garbage_calls": 0,
        "shaped_unknown_inputs": 300,
        "shaped_unknown_calls": 300,
    }
    memory = {
        "cache": {
            "validated": 1_000_000,
            "cache_entries": 10_000,
            "cache_max_entries": 10_000,
            "peak_rss_kib": 48_000,
            "checkpoints": [{"validated": 100_000, "rss_kib": 47_000}],
        }
    }
    http = [
        {
            "framework": "flask (waitress)",
            "open_rps": 4_111.0,
            "protected_rps": 3_777.0,
            "noop_rps": None,
            "kept": 0.917,
            "kept_interval": [0.88, 0.95],
            "kept_over_noop": None,
        }
    ]
    return {
        "core": core,
        "compare": {
            "started_at": "2026-12-01 09:01 UTC",
            "command": _command("benchmarks.compare"),
            "machine": {"git_commit": "abc1234"},
            "results": [result.as_dict() for result in compared],
            "clerk": clerk,
            "memory": memory,
            "http": http,
            "targets": [
                check.as_dict() for check in compare.ratio_checks(compared, clerk, memory, http)
            ],
        },
        "timing": {
            "started_at": "2026-12-01 09:12 UTC",
            "command": _command("benchmarks.timing"),
            "targets": [
                {
                    "label": "sqlite-sync",
                    "verdict": {
                        "same_status_and_body": True,
                        "median_difference_us": 3.3,
                        "noise_floor_us": 12.9,
                        "within_noise": True,
                    },
                    "delete_verdict": {
                        "same_status_and_body": True,
                        "median_difference_us": -0.7,
                        "noise_floor_us": 14.4,
                        "within_noise": True,
                    },
                }
            ],
        },
        "abuse": {
            "started_at": "2026-12-01T09:20:00+00:00",
            "command": _command("benchmarks.abuse"),
            "targets": [
                {
                    "label": "sqlite-sync",
                    "cases": {
                        "victim": {"cpu_us_median": 266.6},
                        "random": {"cpu_us_median": 255.5},
                        "valid_miss": {"cpu_us_median": 288.8},
                    },
                }
            ],
            "flood": {"holder_refused": 0, "holder_calls": 200, "forged_requests": 913},
            "problems": [],
        },
        "instructions": {
            "started_at": "2026-12-01 09:25 UTC",
            "command": _command("benchmarks.http_instructions"),
            "git_commit": "abc1234",
            "results": [{"framework": "flask (waitress)", "kept": 0.9363}],
        },
        "first_validation": {
            "started_at": "2026-12-01 09:30 UTC",
            "command": _command("benchmarks.first_validation"),
            "targets": [
                {
                    "database": "sqlite",
                    "ratio": 2.5,
                    "target": 2.0,
                    "passed": True,
                    "apikeys_p50_us": 200.0,
                    "peer_p50_us": 500.0,
                    "written_in_validation_p50_us": 1400.0,
                },
                {
                    "database": "postgresql",
                    "ratio": 1.5,
                    "target": 2.0,
                    "passed": False,
                    "apikeys_p50_us": 400.0,
                    "peer_p50_us": 600.0,
                    "written_in_validation_p50_us": None,
                },
            ],
        },
        "fleet": {
            "started_at": "2026-12-01T09:30:00+00:00",
            "command": _command("benchmarks.fleet"),
            "arms": fleet_arms,
            "targets": fleet.target_checks(fleet_arms),
        },
        "meter": {
            "started_at": "2026-12-01 09:40 UTC",
            "command": _command("benchmarks.meter"),
            "targets": meter.round_trip_targets(
                [
                    _meter_result(meter.VALIDATE_REDIS, "unlimited", 2.3, 0.0),
                    _meter_result(meter.VALIDATE_REDIS, "rate_limited", 205.0, 1.0),
                    _meter_result(meter.REDIS, meter.ROUND_TRIP, 74.0, 0.0),
                ]
            ),
        },
    }


def _meter_result(subject: str, workload: str, p50: float, scripts: float) -> CaseResult:
    return CaseResult(
        subject=subject,
        size=1,
        workload=workload,
        ops=1,
        p50_us=p50,
        p99_us=p50,
        ops_per_s=1e6 / p50,
        io_calls_per_op=scripts,
    )


def write_run(directory: Path, records: dict[str, dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for kind, record in records.items():
        (directory / f"{kind}.json").write_text(json.dumps(record), encoding="utf-8")
    return directory


def page_with_markers(path: Path) -> Path:
    path.write_text(
        PROSE_BEFORE + summary.BEGIN_MARKER + "\nold table\n" + summary.END_MARKER + PROSE_AFTER,
        encoding="utf-8",
    )
    return path


def table_rows(page: str) -> dict[str, list[str]]:
    """The generated table of ``page``, by target: the other cells of each row."""
    block = page[page.index(summary.BEGIN_MARKER) : page.index(summary.END_MARKER)]
    rows = [line.strip("|").split(" | ") for line in block.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}


@pytest.fixture
def generated(tmp_path: Path) -> str:
    """The page after ``python -m benchmarks.summary`` read the fixture run's folder."""
    run_folder = write_run(tmp_path / "results" / "20261201T090000Z", fixture_records())
    page = page_with_markers(tmp_path / "benchmarks.md")
    assert summary.main([str(run_folder), "--markdown", str(page)]) == 0
    return page.read_text(encoding="utf-8")


def test_the_table_holds_the_fixture_runs_figures_side_by_side(generated: str) -> None:
    rows = table_rows(generated)
    measured, compared, met, day = rows["Cache hit p50 ≤ 5 µs"]
    assert measured == "1.23 µs (1,000-100,000 keys)"
    assert compared == ("djangorestframework-api-key 488 µs; keyshield's cached service 2,999 µs")
    assert (met, day) == ("met", "2026-12-01")
    assert rows["Cache miss p50 ≤ 1 ms (default argon2id)"][:2] == [
        "432 µs (1,000-100,000 keys)",
        "djangorestframework-api-key 500 µs; keyshield 155,555 µs",
    ]
    assert rows["Typo (bad checksum only) p50 ≤ 5 µs"][:2] == [
        "4.32 µs (1,000-100,000 keys)",
        "the garbage mix 3.46 µs",
    ]
    assert rows["Garbage: no database query"][:2] == [
        "0 per operation",
        "djangorestframework-api-key 1; keyshield 1 per operation",
    ]
    assert rows["Bound: argon2id verify alone ≤ 1× djangorestframework-api-key's whole cache miss"][
        1
    ] == ("argon2id 71.7 µs, djangorestframework-api-key's miss 500 µs")
    flask = rows["HTTP flask (waitress): protected ≥ 90 % of the open route's throughput"]
    assert flask == [
        "92 % [88-95]",
        "open 4,111 req/s, protected 3,777 req/s; by instructions 93.6 % kept",
        "met",
        "2026-12-01",
    ]
    assert rows["A flood of forged keys for one id refuses its holder 0 times"][0] == (
        "0 of 200 refused, 913 forged keys sent"
    )
    assert rows["First validation ≥ 2× djangorestframework-api-key's speed (sqlite)"][:3] == [
        "2.50× (p50 200 µs)",
        "djangorestframework-api-key 500 µs; committing last_used_at in the validation 1,400 µs",
        "met",
    ]
    assert rows["First validation ≥ 2× djangorestframework-api-key's speed (postgresql)"][:3] == [
        "1.50× (p50 400 µs)",
        "djangorestframework-api-key 600 µs",
        "**not met**",
    ]
    redis = rows[
        "Revocation, SQLite with Redis: every one of 4 worker processes refuses "
        "within p99 ≤ 100 ms, max ≤ 1 s"
    ]
    assert redis == [
        "sync: p50 1.96, p99 9.46, max 123 ms (120 revocations)",
        "no channel (sync, cache ttl 1 s): p50 580 ms, max 988 ms",
        "met",
        "2026-12-01",
    ]
    assert rows["Rate-limited key, cache on: at most one Redis round trip per validation"] == [
        "1 Redis scripts per call (p50 205 µs)",
        "no limits 2.30 µs; Redis PING 74.0 µs",
        "met",
        "2026-12-01",
    ]
    assert rows["Key without limits, cache on: no Redis round trip per validation"][2] == "met"
    timing = rows["Wrong secret for a known id against unknown id: same answer, time within noise"]
    assert timing[:3] == [
        "median difference sqlite-sync +3.3 µs",
        "A/A noise floor sqlite-sync 12.9 µs",
        "met",
    ]


def test_every_target_of_the_run_has_a_row_with_a_verdict(generated: str) -> None:
    rows = table_rows(generated)
    assert all(cells[2] in ("met", "**not met**") for cells in rows.values()), rows
    names = set(rows)
    assert {
        "Cache hit p50 ≤ 5 µs",
        "Cache miss p50 ≤ 1 ms (default argon2id)",
        "Garbage p50 ≤ 5 µs",
        "Cache hit: no database query",
        "Size does not matter: p50 at the largest size ≤ 1.5× p50 at the smallest",
        "Cache hit, throughput against djangorestframework-api-key ≥ 100×",
        "Cache miss, throughput against keyshield ≥ 100×",
        "Clerk: no upstream call for malformed keys",
        "Memory: the verification cache holds no more than its bound",
    } <= names
    # Every record of the run is named with its time, and the prose around the block is kept.
    assert "- `python -m benchmarks.compare`: 2026-12-01 09:01 UTC at commit `abc1234`" in generated
    assert "- `python -m benchmarks.abuse`: 2026-12-01 09:20 UTC" in generated
    assert generated.startswith(PROSE_BEFORE + summary.BEGIN_MARKER + "\n")
    assert generated.endswith(summary.END_MARKER + PROSE_AFTER)
    assert "old table" not in generated


def test_a_changed_figure_changes_the_table(tmp_path: Path) -> None:
    slower = write_run(tmp_path / "slower", fixture_records(cache_hit_scale=5.0))
    block = summary.render_summary(summary.load_records([slower]))
    rows = table_rows(summary.BEGIN_MARKER + "\n" + block + "\n" + summary.END_MARKER)
    measured, _, met, _ = rows["Cache hit p50 ≤ 5 µs"]
    assert (measured, met) == ("6.17 µs (1,000-100,000 keys)", "**not met**")


def test_a_run_without_a_harness_says_what_was_not_measured(tmp_path: Path) -> None:
    records = fixture_records()
    only_core = write_run(tmp_path / "core-only", {"core": records["core"]})
    block = summary.render_summary(summary.load_records([only_core]))
    rows = table_rows(summary.BEGIN_MARKER + "\n" + block + "\n" + summary.END_MARKER)
    assert rows["Cache hit p50 ≤ 5 µs"][1] == "no peer in this run"
    assert rows["Cache miss, throughput against keyshield"][:3] == [
        "not measured",
        "",
        "not measured",
    ]
    assert "- `python -m benchmarks.timing`: no record in this run" in block


def test_the_newest_record_of_a_kind_counts(tmp_path: Path) -> None:
    records = fixture_records()
    older = dict(records["core"], started_at="2026-11-30 09:00 UTC", results=[], targets=[])
    folder = write_run(tmp_path / "run", {"core": records["core"]})
    (folder / "core-older.json").write_text(json.dumps(older), encoding="utf-8")
    (folder / "notes.json").write_text(json.dumps({"not": "a record"}), encoding="utf-8")
    loaded = summary.load_records([folder])
    assert loaded["core"]["started_at"] == "2026-12-01 09:00 UTC"
    assert set(loaded) == {"core"}


def test_a_quick_run_of_the_harness_feeds_the_table(tmp_path: Path) -> None:
    folder = tmp_path / "results" / "run"
    assert run.main(["--quick", "--json", str(folder / "core.json")]) == 0
    record = json.loads((folder / "core.json").read_text(encoding="utf-8"))
    hit = [t for t in record["targets"] if t["target"] == "cache_hit p50"]
    block = summary.render_summary(summary.load_records([folder]))
    rows = table_rows(summary.BEGIN_MARKER + "\n" + block + "\n" + summary.END_MARKER)
    low = min(t["measured"] for t in hit)
    assert rows["Cache hit p50 ≤ 5 µs"][0].startswith(report.format_figure(low))


def test_nothing_to_read_is_an_error_and_a_page_without_markers_is_left_alone(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert summary.main([str(empty), "--no-write"]) == 1
    page = tmp_path / "page.md"
    page.write_text("# Benchmarks\n\nNo markers.\n", encoding="utf-8")
    folder = write_run(tmp_path / "run", fixture_records())
    with pytest.raises(ValueError, match="lacks the summary markers"):
        summary.main([str(folder), "--markdown", str(page)])
    assert page.read_text(encoding="utf-8") == "# Benchmarks\n\nNo markers.\n"


def test_the_docs_page_opens_with_the_generated_summary() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert summary.BEGIN_MARKER in page and summary.END_MARKER in page
    first_section = page.index("\n## ")
    assert page.index(summary.BEGIN_MARKER) < page.index("\n## ", first_section + 1)

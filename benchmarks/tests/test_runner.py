"""The benchmark harness, run end to end in its quick mode so it cannot rot.

These tests check the shape of what the harness reports and the database
query counts (garbage and cache hits must issue none; the other workloads
must issue some, which proves the counter counts). They never assert a
timing: figures on a shared CI machine mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from apikeys import KEY_PATTERN, InvalidKeyError, generate_key, parse_key
from apikeys.backends.sqlalchemy import api_keys_table
from benchmarks import (
    abuse,
    clerk_flood,
    compare,
    first_validation,
    fleet,
    harness,
    http_instructions,
    meter,
    report,
    run,
    summary,
    timing,
)
from benchmarks.apikeys_sqlite import garbage_keys, open_subject
from benchmarks.workloads import NO_IO_WORKLOADS, wrong_secret

pytestmark = pytest.mark.sqlalchemy

ROOT = Path(__file__).resolve().parents[2]
PROSE_BEFORE = "# Benchmarks\n\nHand-written introduction.\n\n"
PROSE_AFTER = "\n\nHand-written method notes.\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``--quick`` run through the command line: its JSON record and its page."""
    directory = tmp_path_factory.mktemp("bench")
    json_path, page = directory / "results" / "run.json", directory / "benchmarks.md"
    page.write_text(
        PROSE_BEFORE + report.BEGIN_MARKER + "\nold\n" + report.END_MARKER + PROSE_AFTER
    )
    exit_code = run.main(["--quick", "--json", str(json_path), "--markdown", str(page)])
    assert exit_code == 0
    return json.loads(json_path.read_text()), page.read_text()


def test_quick_mode_measures_every_workload_at_every_size(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    record = quick_run[0]
    measured = {(result["workload"], result["size"]) for result in record["results"]}
    assert measured == {(name, size) for name in run.ALL_WORKLOADS for size in run.QUICK.sizes}
    for result in record["results"]:
        assert 0 < result["p50_us"] <= result["p99_us"]
        assert result["ops_per_s"] > 0
        assert result["ops"] == run.QUICK.ops[result["workload"]]
        assert len(result["samples"]) == run.QUICK.repeats


def test_garbage_and_cache_hits_issue_no_query_and_the_rest_do(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    for result in quick_run[0]["results"]:
        if result["workload"] in (*NO_IO_WORKLOADS, "argon2_verify"):
            assert result["io_calls_per_op"] == 0, result["workload"]
            assert all(sample["io_calls"] == 0 for sample in result["samples"])
        else:
            # One SELECT per read or validation, one INSERT per creation: a counter that
            # counted nothing would make the zeros above meaningless.
            assert result["io_calls_per_op"] >= 1, result["workload"]


def test_the_record_names_the_machine_the_command_and_the_seeding(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    record = quick_run[0]
    assert record["schema"] == report.RECORD_SCHEMA
    assert record["command"].startswith("python -m benchmarks --quick")
    machine = record["machine"]
    for field in ("cpu", "cores", "python", "sqlalchemy", "argon2-cffi", "sqlite"):
        assert machine[field], field
    assert set(machine["argon2_parameters"]) == {"time_cost", "memory_cost", "parallelism"}
    assert [seeding["size"] for seeding in record["seeding"]] == list(run.QUICK.sizes)
    assert all(
        seeding["real_keys"] == min(run.QUICK.real_keys, seeding["size"])
        for seeding in record["seeding"]
    )


def test_every_target_is_reported_with_a_verdict(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    targets = quick_run[0]["targets"]
    names = {target["target"] for target in targets}
    assert {"cache_hit p50", "cache_miss p50", "garbage p50"} <= names
    assert {"cache_hit database queries", "garbage database queries"} <= names
    scaling = [target for target in targets if target["unit"] == "×"]
    assert {target["workload"] for target in scaling} == set(run.ALL_WORKLOADS)
    assert all(isinstance(target["passed"], bool) for target in targets)


def test_the_page_keeps_its_prose_and_gets_both_tables(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    page = quick_run[1]
    assert page.startswith(PROSE_BEFORE + report.BEGIN_MARKER)
    assert page.endswith(report.END_MARKER + PROSE_AFTER)
    assert "\nold\n" not in page
    assert "| Workload | Keys stored | p50 (µs) |" in page
    assert "| Target | Keys stored | Measured | Target | Result |" in page
    assert "python -m benchmarks --quick" in page


def test_a_page_without_markers_is_refused_not_overwritten(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nNo markers here.\n")
    record = report.RunRecord("now", "cmd", {"repeats": 1}, {}, [], [], [])
    with pytest.raises(ValueError, match="markers"):
        report.update_markdown(page, record)
    assert page.read_text() == "# Benchmarks\n\nNo markers here.\n"


def test_the_module_entry_point_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--quick" in completed.stdout


def test_an_unknown_cpu_is_refused_with_a_message() -> None:
    with pytest.raises(SystemExit, match="--cpu"):
        run.main(["--quick", "--cpu", "4096", "--no-write"])


@pytest.mark.parametrize("sizes", ["ten", "0", "5,-1"])
def test_bad_sizes_are_refused_with_a_message(sizes: str) -> None:
    with pytest.raises(SystemExit, match="--sizes"):
        run.main(["--quick", "--sizes", sizes, "--no-write"])


def test_a_workload_that_accepts_what_it_must_refuse_stops_the_run(tmp_path: Path) -> None:
    subject = open_subject(
        tmp_path / "keys.sqlite3", 4, real_keys=2, filler_hash_pool=1, rng=random.Random(1)
    )
    try:
        # Present valid keys as "wrong secrets": the workload must notice.
        keys = subject.keys
        subject.keys = dataclasses.replace(keys, wrong_secret=keys.valid)
        case = wrong_secret(subject, 2)
        with pytest.raises(AssertionError, match="accepted") as caught:
            case.op(0)
        assert keys.valid[0] not in str(caught.value)  # never print a secret
    finally:
        subject.close()


def test_garbage_is_refused_by_the_key_format() -> None:
    valid = [generate_key().key for _ in range(3)]
    inputs = garbage_keys(valid, random.Random(7), count=40)
    assert len(set(inputs)) > 30
    for value in inputs:
        with pytest.raises(InvalidKeyError):
            parse_key(value)


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([5], 0.5, 5),
        ([1, 2, 3, 4], 0.5, 2),
        (list(range(1, 101)), 0.99, 99),
        (list(range(1, 101)), 0.29, 29),
        (list(range(1, 1001)), 0.99, 990),
        ([1, 2], 1.0, 2),
    ],
)
def test_percentile_is_nearest_rank(values: list[int], fraction: float, expected: int) -> None:
    assert harness.percentile(values, fraction) == expected


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        harness.percentile([], 0.5)


def test_the_runner_interleaves_slices_and_takes_the_median() -> None:
    calls: list[tuple[str, int]] = []

    def recording(name: str) -> harness.Op:
        return lambda index: calls.append((name, index))

    cases = [harness.Case("s", 1, name, 3, recording(name)) for name in ("a", "b")]
    results = harness.run_interleaved(cases, 4, seed=3, slices=3, warmup_ops=0)
    assert len(calls) == 2 * 3 * 4
    rounds = [calls[start : start + 2] for start in range(0, len(calls), 2)]
    # Every round runs the next operation of every case, in an order that changes.
    for number, round_ in enumerate(rounds):
        assert sorted(round_) == [("a", number % 3), ("b", number % 3)]
    assert len({tuple(name for name, _ in round_) for round_ in rounds}) == 2
    assert [result.workload for result in results] == ["a", "b"]
    for result in results:
        assert result.io_calls_per_op is None
        assert len(result.samples) == 4
        assert result.p50_us == statistics.median(sample.p50_us for sample in result.samples)
        assert result.p99_us == statistics.median(sample.p99_us for sample in result.samples)


def test_a_case_with_fewer_operations_than_slices_runs_each_once() -> None:
    seen: list[int] = []
    case = harness.Case("s", 1, "few", 2, seen.append)
    harness.run_interleaved([case], 1, slices=10, warmup_ops=0)
    assert seen == [0, 1]


def test_the_runner_refuses_zero_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        harness.run_interleaved([], 0)
    with pytest.raises(ValueError, match="slices"):
        harness.run_interleaved([], 1, slices=0)


def test_every_option_the_page_names_exists() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(--[a-z0-9-]+)", page))
    # The page documents nine harnesses and the summary; each option it names must exist in one.
    parsers = [run._parser(), compare._parser(), timing._parser(), http_instructions._parser()]
    parsers += [abuse._parser(), summary._parser(), fleet._parser(), first_validation._parser()]
    parsers += [meter._parser(), clerk_flood._parser()]
    known = {option for parser in parsers for option in parser._option_string_actions}
    assert "--quick" in named
    assert named <= known
    assert "python -m benchmarks" in page
    assert report.BEGIN_MARKER in page and report.END_MARKER in page


def test_other_argon2_parameters_are_recorded_and_lift_the_default_only_target(
    tmp_path: Path,
) -> None:
    json_path = tmp_path / "run.json"
    arguments = ["--quick", "--sizes", "20", "--workload", "cache_miss"]
    arguments += ["--workload", "garbage", "--argon2-memory-cost", "256", "--json", str(json_path)]
    assert run.main(arguments) == 0
    record = json.loads(json_path.read_text())
    assert record["machine"]["argon2_parameters"]["memory_cost"] == 256
    assert record["config"]["default_argon2"] is False
    targets = {target["target"] for target in record["targets"]}
    assert "cache_miss p50" not in targets  # the issue sets it for the defaults only
    assert "garbage p50" in targets
    assert {result["workload"] for result in record["results"]} == {"cache_miss", "garbage"}


def test_the_key_sets_hold_what_their_names_say(tmp_path: Path) -> None:
    subject = open_subject(
        tmp_path / "keys.sqlite3", 40, real_keys=8, filler_hash_pool=2, rng=random.Random(5)
    )
    try:
        keys = subject.keys
        assert len(keys.valid) == 8
        for key in keys.valid:
            subject.validate(key)  # stored with a real hash
        stored_ids = {parse_key(key).id for key in keys.valid}
        for key in keys.wrong_secret:
            assert parse_key(key).id in stored_ids  # well-formed, known id
        for key in keys.unknown_id:
            assert parse_key(key).id not in stored_ids  # well-formed, unknown id
        for typo, key in zip(keys.bad_checksum, keys.valid, strict=True):
            # Right shape, one character off: only the checksum can refuse it.
            assert re.fullmatch(KEY_PATTERN, typo)
            assert sum(a != b for a, b in zip(typo, key, strict=True)) == 1
            with pytest.raises(InvalidKeyError):
                parse_key(typo)
        with subject.manager.engine.connect() as connection:
            count = connection.execute(
                sa.select(sa.func.count()).select_from(api_keys_table)
            ).scalar_one()
        assert count == 40
    finally:
        subject.close()

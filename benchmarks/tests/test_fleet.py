"""The fleet benchmark (``python -m benchmarks.fleet``), run in its quick mode so it cannot rot.

No figure is asserted (timings on a shared machine mean nothing). What is
checked: the record's shape -- every arm asked for measured (or skipped with a
note when its server is missing), every trial answered by every worker with a
revoked key's refusal, the figures and targets derived from the trials -- and
the page's prose kept around the regenerated block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import fleet

pytestmark = pytest.mark.sqlalchemy

PROSE_BEFORE = "# Benchmarks\n\nHand-written prose.\n\n"
PROSE_AFTER = "\n\n## Next\n\nMore prose.\n"
ARMS = ["postgresql-notify-sync", "sqlite-redis-async", "sqlite-none-sync"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``--quick`` run of three arms through the command line: its record and its page."""
    directory = tmp_path_factory.mktemp("fleet")
    record_path, page = directory / "fleet.json", directory / "benchmarks.md"
    page.write_text(
        PROSE_BEFORE + fleet.BEGIN_MARKER + "\nold figures\n" + fleet.END_MARKER + PROSE_AFTER,
        encoding="utf-8",
    )
    arguments = ["--quick", "--json", str(record_path), "--markdown", str(page), "--note", "hi"]
    for arm in ARMS:
        arguments += ["--arm", arm]
    assert fleet.main(arguments) == 0
    return json.loads(record_path.read_text()), page.read_text(encoding="utf-8")


def test_every_arm_asked_for_is_measured_or_noted(quick_run: tuple[dict[str, Any], str]) -> None:
    record = quick_run[0]
    assert record["kind"] == "fleet" and record["schema"] == fleet.RECORD_SCHEMA
    measured = [arm["label"] for arm in record["arms"]]
    skipped = [label for label in ARMS if any(note.startswith(label) for note in record["notes"])]
    assert sorted(measured + skipped) == sorted(ARMS)
    assert "sqlite-none-sync" in measured  # needs no server
    assert record["problems"] == []


def test_every_worker_refuses_every_revoked_key(quick_run: tuple[dict[str, Any], str]) -> None:
    profile = fleet.QUICK
    for arm in quick_run[0]["arms"]:
        baseline = arm["channel"] == "none"
        assert arm["trials"] == (profile.baseline_trials if baseline else profile.trials)
        assert arm["workers"] == profile.workers
        assert arm["cache_ttl"] == (profile.baseline_ttl if baseline else profile.cache_ttl)
        trials = arm["trials_detail"]
        assert [t["operation"] for t in trials] == [
            fleet.OPERATIONS[i % len(fleet.OPERATIONS)] for i in range(len(trials))
        ]
        for trial in trials:
            assert len(trial["lags_us"]) == profile.workers and None not in trial["lags_us"]
            expected = "invalid_api_key" if trial["operation"] == "delete" else "revoked_api_key"
            assert trial["outcomes"] == [expected] * profile.workers
        assert arm["missed"] == 0
        every, each = arm["every_worker"], arm["each_worker"]
        assert every["max_ms"] * 1000 == max(max(t["lags_us"]) for t in trials)
        assert each["p50_ms"] <= each["p99_ms"] <= each["max_ms"] == every["max_ms"]
        assert set(arm["by_operation"]) <= set(fleet.OPERATIONS)
        assert ("every_worker_over_ttl" in arm) == baseline


def test_only_the_arms_with_a_channel_have_targets(quick_run: tuple[dict[str, Any], str]) -> None:
    record = quick_run[0]
    with_channel = [arm["label"] for arm in record["arms"] if arm["channel"] != "none"]
    assert [check["arm"] for check in record["targets"]] == [
        label for label in with_channel for _ in ("p99", "max")
    ]
    for check in record["targets"]:
        assert check["limit"] in (fleet.TARGET_P99_MS, fleet.TARGET_MAX_MS)
        assert isinstance(check["passed"], bool)


def test_the_page_keeps_its_prose_and_gets_the_table(quick_run: tuple[dict[str, Any], str]) -> None:
    page = quick_run[1]
    assert page.startswith(PROSE_BEFORE + fleet.BEGIN_MARKER + "\n")
    assert page.endswith(fleet.END_MARKER + PROSE_AFTER)
    assert "old figures" not in page
    assert "| sqlite-none-sync | no channel (cache ttl) |" in page
    assert "- hi" in page


def test_a_worker_that_never_refused_is_a_problem() -> None:
    arm = {"label": "sqlite-redis-sync", "missed": 2, "outcomes": {"missed": 2, "rate_limited": 1}}
    problems = fleet.problems_of({"arms": [arm]})
    assert len(problems) == 2
    assert "2 workers never refused" in problems[0]
    assert "rate_limited" in problems[1]
    arm.update(channel="redis", every_worker={"p99_ms": 1.0, "max_ms": 2.0})
    assert [check["passed"] for check in fleet.target_checks([arm])] == [False, False]


def test_a_page_without_markers_is_refused_not_overwritten(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    with pytest.raises(ValueError, match="lacks the fleet markers"):
        fleet.update_markdown(page, "block\n")
    assert page.read_text() == "no markers here\n"

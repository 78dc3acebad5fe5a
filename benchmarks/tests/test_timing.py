"""The timing harness (``python -m benchmarks.timing``), run in its quick mode so it cannot rot.

No timing is asserted (figures on a shared machine mean nothing, and a timed
test is a flaky test). What is checked: the record's structure, every case on
every target measured as often as asked, the caller-visible outcome of (a)
wrong secret, (b) unknown id and (c) garbage one and the same ``InvalidKeyError``
(403, same code, same message, no key id), (d) accepted, the comparisons and
verdict present, the page's prose kept around the regenerated block, and the
statistics right on inputs whose answer is known.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from apikeys import BackendUnavailableError, InvalidKeyError, RateLimitedError
from benchmarks import timing

pytestmark = pytest.mark.sqlalchemy

ROOT = Path(__file__).resolve().parents[2]
PROSE_BEFORE = "# Security\n\nHand-written threat model.\n\n"
PROSE_AFTER = "\n\n## Keys and hashing\n\nMore prose.\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``--quick`` run through the command line: its JSON record and its page."""
    directory = tmp_path_factory.mktemp("timing")
    record_path, page = directory / "results" / "timing.json", directory / "security.md"
    page.write_text(
        PROSE_BEFORE + timing.BEGIN_MARKER + "\nold figures\n" + timing.END_MARKER + PROSE_AFTER,
        encoding="utf-8",
    )
    arguments = ["--quick", "--json", str(record_path), "--markdown", str(page), "--note", "hi"]
    assert timing.main(arguments) == 0
    return json.loads(record_path.read_text()), page.read_text(encoding="utf-8")


def test_every_case_is_measured_on_the_sync_and_async_managers(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    record = quick_run[0]
    assert record["kind"] == "timing" and record["schema"] == timing.RECORD_SCHEMA
    labels = [target["label"] for target in record["targets"]]
    # PostgreSQL joins only when APIKEYS_BENCH_POSTGRES_URL names a server.
    assert labels[:2] == ["sqlite-sync", "sqlite-async"]
    assert set(labels[2:]) <= {"postgresql-sync", "postgresql-async"}
    samples = timing.QUICK.samples
    for target in record["targets"]:
        if target["backend"] == "sqlite":
            assert target["stored_keys"] == timing.QUICK.stored
        assert target["key_ids"] == timing.QUICK.key_ids
        assert set(target["cases"]) == set(timing.CASES)
        for name, case in target["cases"].items():
            wanted = 2 * samples if name in timing.SPLIT_CASES else samples
            assert case["samples"] == wanted == sum(o["count"] for o in case["outcomes"])
            assert 0 < case["p10_us"] <= case["p50_us"] <= case["p90_us"] <= case["p99_us"]
            assert case["mean_us"] > 0


def test_a_wrong_secret_an_unknown_id_and_garbage_look_the_same_to_the_caller(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    refusal = InvalidKeyError()
    for target in quick_run[0]["targets"]:
        seen = []
        for name in timing.REFUSED_CASES:
            outcomes = target["cases"][name]["outcomes"]
            assert len(outcomes) == 1, (target["label"], name, outcomes)
            outcome = {key: value for key, value in outcomes[0].items() if key != "count"}
            seen.append(outcome)
        assert seen[0] == {
            "exception": "InvalidKeyError",
            "status": refusal.status_code,
            "code": refusal.code,
            "message": refusal.message,
            "names_key_id": False,
        }
        assert seen[1] == seen[0] and seen[2] == seen[0]
        assert target["verdict"]["same_status_and_body"] is True
        accepted = target["cases"]["cache_miss"]["outcomes"]
        assert [outcome["exception"] for outcome in accepted] == ["accepted"]
    assert quick_run[0]["problems"] == []


def test_delete_of_another_owners_id_and_of_an_unknown_id_answer_alike(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    for target in quick_run[0]["targets"]:
        seen = []
        for name in timing.DELETE_CASES:
            outcomes = target["cases"][name]["outcomes"]
            assert len(outcomes) == 1, (target["label"], name, outcomes)
            seen.append({key: value for key, value in outcomes[0].items() if key != "count"})
        assert (
            seen[0]
            == seen[1]
            == {
                "exception": "response",
                "status": 404,
                "code": "api_key_not_found",
                "message": "API key not found",
                "names_key_id": False,
            }
        )
        assert target["delete_verdict"]["same_status_and_body"] is True
        for comparison in ("e_minus_f", "e_minus_e"):
            assert set(target[comparison]) == set(timing.COMPARED)


def test_the_comparisons_and_the_verdict_are_recorded(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    for target in quick_run[0]["targets"]:
        assert target["halves"] == timing.QUICK.samples
        for comparison in ("a_minus_b", "a_minus_a"):
            assert set(target[comparison]) == set(timing.COMPARED)
            for difference in target[comparison].values():
                assert difference["low_us"] <= difference["high_us"]
        verdict = target["verdict"]
        assert verdict["median_difference_us"] == target["a_minus_b"]["p50"]["estimate_us"]
        aa = target["a_minus_a"]["p50"]
        assert verdict["noise_floor_us"] == max(abs(aa["low_us"]), abs(aa["high_us"]))
        assert isinstance(verdict["within_noise"], bool)


def test_the_record_names_the_machine_and_the_command(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    record = quick_run[0]
    assert record["command"].startswith("python -m benchmarks.timing --quick")
    for field in ("cpu", "cores", "python", "sqlalchemy", "sqlite", "load_average_at_start"):
        assert record["machine"][field], field
    assert record["config"]["samples"] == timing.QUICK.samples
    assert record["notes"][0] == "hi"
    assert any("Quick mode" in note for note in record["notes"])


def test_the_page_keeps_its_prose_and_gets_the_tables(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    page = quick_run[1]
    assert page.startswith(PROSE_BEFORE + timing.BEGIN_MARKER + "\n")
    assert page.endswith(timing.END_MARKER + PROSE_AFTER)
    assert "old figures" not in page
    assert "| Target | Case | Calls | p50 (µs) | p90 (µs) | mean (µs) | Caller sees |" in page
    assert "| sqlite-async | (b) unknown id, right checksum |" in page
    assert "| Target | A/B median | A/A median |" in page
    assert "**sqlite-sync**:" in page and "python -m benchmarks.timing --quick" in page


def test_rerunning_replaces_the_block_instead_of_adding_one(tmp_path: Path) -> None:
    page = tmp_path / "security.md"
    page.write_text(PROSE_BEFORE + timing.BEGIN_MARKER + timing.END_MARKER + PROSE_AFTER)
    timing.update_markdown(page, "first\n")
    timing.update_markdown(page, "second\n")
    text = page.read_text()
    assert (
        text == PROSE_BEFORE + timing.BEGIN_MARKER + "\nsecond\n" + timing.END_MARKER + PROSE_AFTER
    )


def test_a_page_without_markers_is_refused_not_overwritten(tmp_path: Path) -> None:
    page = tmp_path / "security.md"
    page.write_text("# Security\n\nNo markers.\n")
    with pytest.raises(ValueError, match="markers"):
        timing.update_markdown(page, "block\n")
    assert page.read_text() == "# Security\n\nNo markers.\n"


def test_a_wrong_outcome_is_reported_as_a_problem(quick_run: tuple[dict[str, Any], str]) -> None:
    record = copy.deepcopy(quick_run[0])
    unknown = record["targets"][0]["cases"]["unknown_id"]
    unknown["outcomes"].append({**unknown["outcomes"][0], "exception": "RateLimitedError"})
    record["targets"][0]["verdict"]["same_status_and_body"] = False
    problems = timing.expected_outcomes_held(record)
    assert len(problems) == 2
    assert "sqlite-sync unknown_id" in problems[0] and "RateLimitedError" in problems[0]
    assert "not refused alike" in problems[1]


def test_the_caller_visible_outcome_of_each_result() -> None:
    assert timing.outcome_of(None) == timing.ACCEPTED
    assert timing.outcome_of(InvalidKeyError()) == (
        "InvalidKeyError",
        403,
        "invalid_api_key",
        InvalidKeyError().message,
        False,
    )
    limited = timing.outcome_of(RateLimitedError(retry_after=1))
    assert limited[:3] == ("RateLimitedError", 429, "rate_limited")
    assert timing.outcome_of(BackendUnavailableError(key_id="abc"))[4] is True
    assert timing.outcome_of(ValueError("boom"))[:2] == ("ValueError", 500)


def test_a_known_shift_is_found_and_a_sample_against_itself_is_not() -> None:
    rng = random.Random(3)
    base = [rng.randrange(90_000, 110_000) for _ in range(400)]
    shifted = [value + 20_000 for value in base]  # +20 µs on every call
    difference = timing.compare(shifted, base, random.Random(4), resamples=200)
    assert difference["p50"].estimate_us == pytest.approx(20.0)
    assert not difference["p50"].contains_zero and difference["p50"].low_us > 10
    assert difference["mean"].estimate_us == pytest.approx(20.0)
    same = timing.compare(base, list(base), random.Random(5), resamples=200)
    assert same["p50"].estimate_us == 0 and same["p50"].contains_zero
    assert timing.noise_floor_us(same["p50"]) < timing.noise_floor_us(difference["p50"])


def test_too_few_resamples_are_refused() -> None:
    with pytest.raises(ValueError, match="resamples"):
        timing.compare([1, 2], [1, 2], random.Random(1), resamples=10)


def test_the_module_entry_point_runs() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.timing", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--quick" in completed.stdout and timing.POSTGRES_ENV in completed.stdout

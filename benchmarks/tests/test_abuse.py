"""The abuse benchmark (``python -m benchmarks.abuse``), run in its quick mode so it cannot rot.

No figure is asserted (timings on a shared machine mean nothing). What is
checked: every case measured on the sync and async managers with the expected
outcome, the flood run with the holder never refused, a refusal of the holder
reported as a problem (exit status 1), and the page's prose kept around the
regenerated block.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import abuse

pytestmark = pytest.mark.sqlalchemy

PROSE_BEFORE = "# Benchmarks\n\nHand-written prose.\n\n"
PROSE_AFTER = "\n\n## Next\n\nMore prose.\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One ``--quick`` run through the command line: its JSON record and its page."""
    directory = tmp_path_factory.mktemp("abuse")
    record_path, page = directory / "abuse.json", directory / "benchmarks.md"
    page.write_text(
        PROSE_BEFORE + abuse.BEGIN_MARKER + "\nold figures\n" + abuse.END_MARKER + PROSE_AFTER,
        encoding="utf-8",
    )
    arguments = ["--quick", "--json", str(record_path), "--markdown", str(page), "--note", "hi"]
    assert abuse.main(arguments) == 0
    return json.loads(record_path.read_text()), page.read_text(encoding="utf-8")


def test_every_case_is_measured_on_both_managers_with_its_expected_outcome(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    record = quick_run[0]
    assert record["kind"] == "abuse" and record["schema"] == abuse.RECORD_SCHEMA
    assert [target["label"] for target in record["targets"]] == ["sqlite-sync", "sqlite-async"]
    calls = abuse.QUICK.rounds * abuse.QUICK.batch
    for target in record["targets"]:
        assert list(target["cases"]) == list(abuse.CASES)
        for case, figures in target["cases"].items():
            assert figures["outcomes"] == {abuse.EXPECTED[case]: calls}
            assert figures["cpu_us_min"] <= figures["cpu_us_median"] <= figures["cpu_us_max"]
    assert record["problems"] == []


def test_the_flood_ran_and_never_refused_the_holder(quick_run: tuple[dict[str, Any], str]) -> None:
    flood = quick_run[0]["flood"]
    assert flood["forged_requests"] >= abuse.QUICK.head_start
    assert set(flood["forged_outcomes"]) == {"invalid_api_key"}
    assert flood["holder_outcomes"] == {"accepted": abuse.QUICK.holder_calls}
    assert flood["holder_refused"] == 0
    assert flood["cpu_us_per_request"] > 0


def test_the_page_keeps_its_prose_and_gets_the_table(quick_run: tuple[dict[str, Any], str]) -> None:
    page = quick_run[1]
    assert page.startswith(PROSE_BEFORE + abuse.BEGIN_MARKER + "\n")
    assert page.endswith(abuse.END_MARKER + PROSE_AFTER)
    assert "old figures" not in page
    assert "| sqlite-async | forged key, the victim's id |" in page
    assert "**0 of 10 refused**" in page
    assert "- hi" in page


def test_a_refused_holder_is_a_problem(quick_run: tuple[dict[str, Any], str]) -> None:
    record = copy.deepcopy(quick_run[0])
    record["flood"]["holder_refused"] = 3
    record["flood"]["holder_outcomes"] = {"accepted": 7, "rate_limited": 3}
    record["targets"][0]["cases"]["victim"]["outcomes"] = {"rate_limited": 15}
    problems = abuse.problems_of(record)
    assert len(problems) == 2
    assert "sqlite-sync victim" in problems[0] and "rate_limited" in problems[0]
    assert "refused 3 of 10" in problems[1]


def test_a_page_without_markers_is_refused_not_overwritten(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    with pytest.raises(ValueError, match="lacks the abuse markers"):
        abuse.update_markdown(page, "block\n")
    assert page.read_text() == "no markers here\n"

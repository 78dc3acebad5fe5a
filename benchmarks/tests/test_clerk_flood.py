"""The Clerk flood harness runs end to end, and says when a known key was refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import clerk_flood

pytestmark = pytest.mark.clerk


def test_a_quick_run_writes_its_record_and_its_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"before\n{clerk_flood.BEGIN_MARKER}\n{clerk_flood.END_MARKER}\nafter\n")
    record_path = tmp_path / "flood.json"
    arguments = ["--quick", "--json", str(record_path), "--markdown", str(page)]
    assert clerk_flood.main(arguments) == 0
    record = json.loads(record_path.read_text())
    assert record["problems"] == []
    budgeted = [phase for phase in record["phases"] if phase["budget"] != "off"]
    assert budgeted and all(phase["flood_calls"] <= 20 for phase in budgeted)
    assert "| FakeClerk | sync | 20/10s |" in page.read_text()


def test_a_refused_known_key_is_a_problem() -> None:
    phase = {
        "target": "FakeClerk",
        "flavour": "sync",
        "budget": "20/10s",
        "clients": 1,
        "seconds": 0.1,
        "flood_calls": 21,
        "known_outcomes": ["accepted", "verification_budget_spent"],
    }
    problems = clerk_flood.problems_of([phase])
    assert len(problems) == 2
    assert "known key was refused" in problems[0] and "past the budget" in problems[1]
    assert clerk_flood.problems_of([{**phase, "budget": "off"}]) == []

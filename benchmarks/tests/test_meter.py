"""The meter benchmark (``python -m benchmarks.meter``), run in its quick mode so it cannot rot.

No timing is asserted (figures on a shared machine mean nothing). What is
checked: every workload measured on the memory meter and, when a Redis server
can be started, on the Redis meter, with one script per call for a limited key
and none for a key without limits; and the table shows the meters side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import meter
from tests import redis_server


def test_a_quick_run_times_every_workload_on_each_meter(tmp_path: Path) -> None:
    record_path = tmp_path / "meter.json"
    assert meter.main(["--quick", "--json", str(record_path)]) == 0
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["kind"] == "meter" and record["schema"] == meter.RECORD_SCHEMA
    assert record["command"] == "python -m benchmarks.meter --quick --json " + str(record_path)
    subjects = meter.SUBJECTS if redis_server.find_binary() else (meter.MEMORY,)
    cases = {(result["subject"], result["workload"]) for result in record["results"]}
    expected = {(subject, workload) for subject in subjects for workload in meter.WORKLOADS}
    validators: tuple[str, ...] = (meter.VALIDATE_MEMORY,)
    if meter.REDIS in subjects:
        expected.add((meter.REDIS, meter.ROUND_TRIP))
        validators += (meter.VALIDATE_REDIS,)
    expected |= {(subject, workload) for subject in validators for workload in meter.VALIDATED}
    assert cases == expected
    for result in record["results"]:
        assert result["ops"] == meter.QUICK.ops
        assert len(result["samples"]) == meter.QUICK.repeats
        assert 0 < result["p50_us"] <= result["p99_us"]
        if result["subject"] == meter.REDIS:
            # One round trip per limited call; a key without limits never reaches Redis.
            scripts = 0 if result["workload"] in ("unlimited", meter.ROUND_TRIP) else 1
            assert result["io_calls_per_op"] == scripts, result["workload"]
        if result["subject"] == meter.VALIDATE_REDIS:
            # Only the rate limit reaches Redis: the database holds the quota.
            scripts = 1 if result["workload"] == "rate_limited" else 0
            assert result["io_calls_per_op"] == scripts, result["workload"]
    if meter.REDIS in subjects:
        verdicts = {target["workload"]: target["passed"] for target in record["targets"]}
        assert verdicts == {"unlimited": True, "rate_limited": True}
    table = meter.render_markdown(record).splitlines()
    assert table[0].startswith("| key | memory p50 |")
    assert [row.split(" | ")[0] for row in table[2:6]] == [f"| {name}" for name in meter.WORKLOADS]
    validated = [row.split(" | ")[0] for row in table if row.startswith("| ")][-3:]
    assert validated == [f"| {name}" for name in meter.VALIDATED]


def test_without_redis_the_memory_meter_is_measured_alone_and_the_record_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_server, "find_binary", lambda: None)
    record = meter.run(meter.QUICK, redis=None, seed=1, say=lambda _message: None)
    assert {result["subject"] for result in record["results"]} == {
        meter.MEMORY,
        meter.VALIDATE_MEMORY,
    }
    assert any("Redis not measured" in note for note in record["notes"])
    assert "| unlimited | " in meter.render_markdown(record)

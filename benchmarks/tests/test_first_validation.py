"""The first-validation harness (``python -m benchmarks.first_validation``) in its quick mode.

No timing is asserted: every timed call must be a first validation that
succeeded, each subject on each database gets its case, and the table shows
the subjects side by side. The peer lives in ``benchmarks/.venv`` only; here
apikeys is measured alone, and the record says so.
"""

from __future__ import annotations

import pytest

from benchmarks import first_validation

pytestmark = pytest.mark.sqlalchemy


def test_a_quick_run_times_both_apikeys_settings_and_the_floor_on_fresh_keys() -> None:
    messages: list[str] = []
    record = first_validation.run(
        first_validation.QUICK, postgres_url=None, use_postgres=False, seed=1, say=messages.append
    )
    cases = {(result["subject"], result["workload"]) for result in record["results"]}
    assert {
        (first_validation.FLUSHED, "sqlite"),
        (first_validation.WRITTEN, "sqlite"),
        (first_validation.FLOOR, "sqlite"),
    } <= cases
    for result in record["results"]:
        assert result["ops"] == first_validation.QUICK.ops
        assert len(result["samples"]) == first_validation.QUICK.repeats
        assert result["p50_us"] > 0
    if not first_validation.drf_available():
        assert record["targets"] == []
        assert any("apikeys measured alone" in note for note in record["notes"])
    assert any("PostgreSQL not measured" in note for note in record["notes"])
    table = first_validation.render_markdown(record)
    assert table.splitlines()[2].startswith("| sqlite | ")


def test_the_keys_run_out_rather_than_repeat() -> None:
    # A key presented twice would be a cache hit, not a first validation.
    take = first_validation.fresh_keys(["a", "b"])
    assert [take(0), take(0)] == ["a", "b"]
    with pytest.raises(StopIteration):
        take(0)

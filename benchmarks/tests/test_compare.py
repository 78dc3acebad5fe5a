"""The peer comparison (``python -m benchmarks.compare``) run in its quick mode so it cannot rot.

No timing is asserted. What is checked: every workload is measured at every
size, IO counts tell garbage and cache hits (none) from the rest, the Clerk
counts are the ones the backend promises, the memory run stays within the
cache bound, every target gets a verdict, and the page keeps its prose. The
peers live in ``benchmarks/.venv`` only (``make bench`` creates it); their
smoke test runs there, in a child process, and is skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import compare
from benchmarks.apikeys_sqlite import COMPONENTS
from benchmarks.harness import CaseResult
from benchmarks.http_load import (
    ROUTES,
    SERVERS,
    HttpResult,
    _ratios,
    check_answers,
    issue_key,
    measure_in_process,
    median_interval,
    parse_wrk,
    serving,
)

pytestmark = pytest.mark.sqlalchemy

ROOT = Path(__file__).resolve().parents[2]
BENCH_PYTHON = ROOT / "benchmarks" / ".venv" / "bin" / "python"
PROSE = "# Benchmarks\n\nHand-written text.\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One quick run through the command line, HTTP included when wrk is installed."""
    directory = tmp_path_factory.mktemp("compare")
    page, record = directory / "benchmarks.md", directory / "run.json"
    page.write_text(PROSE)
    arguments = ["--quick", "--json", str(record), "--markdown", str(page)]
    if shutil.which("wrk") is None:
        arguments.append("--no-http")
    assert compare.main(arguments) == 0
    return json.loads(record.read_text()), page.read_text()


def test_every_workload_is_measured_for_apikeys_at_every_size(
    quick: tuple[dict[str, Any], str],
) -> None:
    ours = [r for r in quick[0]["results"] if r["subject"] == compare.APIKEYS]
    workloads = (*compare.PEER_WORKLOADS, *COMPONENTS)
    assert {(r["workload"], r["size"]) for r in ours} == {
        (name, size) for name in workloads for size in compare.QUICK.sizes
    }
    for result in ours:
        assert 0 < result["p50_us"] <= result["p99_us"]
        no_io = result["workload"] in ("cache_hit", "garbage", "argon2_verify")
        assert (result["io_calls_per_op"] == 0) is no_io, result["workload"]


def test_clerk_counts_are_the_backends_promises(quick: tuple[dict[str, Any], str]) -> None:
    clerk = quick[0]["clerk"]
    assert clerk["hot_calls"] == clerk["hot_keys"]  # one call per hot key, then the cache
    assert clerk["cold_calls"] == 1
    assert clerk["garbage_inputs"] > 0 and clerk["garbage_calls"] == 0
    # Strings of a Clerk secret's shape can only be refused by Clerk: one call each.
    assert clerk["shaped_unknown_calls"] == clerk["shaped_unknown_inputs"] > 0


def test_memory_runs_stay_within_the_cache_bound(quick: tuple[dict[str, Any], str]) -> None:
    memory = quick[0]["memory"]
    assert set(memory) == {"cache", "manager"}
    for mode, run in memory.items():
        assert run["validated"] == compare.QUICK.memory[mode]
        assert 0 < run["cache_entries"] <= run["cache_max_entries"]
        assert run["peak_rss_kib"] > 0
        assert run["checkpoints"][-1]["validated"] == run["validated"]


def test_targets_get_verdicts_and_the_page_its_block(quick: tuple[dict[str, Any], str]) -> None:
    record, page = quick
    names = {target["target"] for target in record["targets"]}
    assert "cache hit p50" in names
    assert any(name.startswith("Clerk: calls for") for name in names)
    assert all(isinstance(target["passed"], bool) for target in record["targets"])
    assert page.startswith(PROSE.rstrip("\n"))
    assert compare.BEGIN_MARKER in page and page.rstrip().endswith(compare.END_MARKER)
    assert "| Workload | Keys stored | Subject |" in page
    if record["http"] is not None:
        assert {served["framework"] for served in record["http"]} == {
            "fastapi (uvicorn)",
            "fastapi middleware (uvicorn)",
            "flask (waitress)",
            "django (waitress)",
        }
        assert all(served["open_rps"] > 0 < served["protected_rps"] for served in record["http"])
        if sys.platform == "linux":  # the server's CPU time comes from /proc
            for served in record["http"]:
                assert served["open_cpu_us"] > 0 < served["protected_cpu_us"]
                assert (served["noop_cpu_us"] is None) is (served["noop_rps"] is None)
        assert "Server CPU per request" in page


def test_a_second_run_replaces_the_block_and_broken_markers_are_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PROSE)
    compare.update_markdown(page, "first\n")
    compare.update_markdown(page, "second\n")
    text = page.read_text()
    assert "first" not in text and text.count(compare.BEGIN_MARKER) == 1 and "second" in text
    page.write_text(PROSE + compare.END_MARKER + "\n" + compare.BEGIN_MARKER)
    with pytest.raises(ValueError, match="markers"):
        compare.update_markdown(page, "third\n")


def _result(subject: str, workload: str, size: int, ops_per_s: float, p50: float) -> CaseResult:
    return CaseResult(subject, size, workload, 10, p50, p50 * 2, ops_per_s, 0.0)


def test_ratios_are_computed_from_the_same_runs_figures() -> None:
    results = [
        _result(compare.APIKEYS, "cache_hit", 1000, 500_000, 2.0),
        _result(compare.DRF, "cache_hit", 1000, 1_000, 900.0),
        _result(compare.APIKEYS, "cache_miss", 1000, 400, 2_000.0),
        _result(compare.DRF, "cache_miss", 1000, 800, 1_100.0),
        _result(compare.APIKEYS, "cache_hit", 10_000, 400_000, 4.0),
    ]
    checks = {(c.target, c.size): c for c in compare.ratio_checks(results, None, None)}
    hit = checks[("cache hit, throughput vs djangorestframework-api-key", 1000)]
    assert hit.measured == 500 and hit.passed
    miss = checks[("cache miss, throughput vs djangorestframework-api-key", 1000)]
    assert miss.measured == 0.5 and not miss.passed
    scaling = checks[("cache_hit p50 at 10,000 / at 1,000 keys", None)]
    assert scaling.measured == 2.0 and not scaling.passed
    # A peer that was not measured yields no ratio rather than a made-up one.
    assert ("cache hit, throughput vs keyshield's cached service", 1000) not in checks


WRK_OUTPUT = """Running 4s test @ http://127.0.0.1:8000/open
  1 threads and 16 connections
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.52ms
     99%    3.21ms
  12000 requests in 4.00s, 1.71MB read
Requests/sec:   2999.50
Transfer/sec:    437.90KB
"""


def test_wrk_output_is_parsed_and_failed_requests_refused() -> None:
    assert parse_wrk(WRK_OUTPUT) == (2999.5, 812.0, 3210.0)
    with pytest.raises(ValueError, match="failed requests"):
        parse_wrk(WRK_OUTPUT + "  Non-2xx or 3xx responses: 12000\n")
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("nothing useful")


@pytest.mark.skipif(
    not BENCH_PYTHON.exists(),
    reason="benchmarks/.venv (the peers' environment) is absent: `make bench` creates it",
)
def test_peers_run_in_the_bench_environment(tmp_path: Path) -> None:
    record_path = tmp_path / "peers.json"
    only_peers = ["--no-clerk", "--no-memory", "--no-http", "--sizes", "30", "--repeats", "1"]
    command = [str(BENCH_PYTHON), "-m", "benchmarks.compare", "--quick", *only_peers]
    completed = subprocess.run(
        [*command, "--json", str(record_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    record = json.loads(record_path.read_text())
    measured = {(r["subject"], r["workload"]) for r in record["results"]}
    for peer in (compare.DRF, compare.KEYSHIELD):
        assert (peer, "cache_miss") in measured
    assert (compare.KEYSHIELD_CACHED, "cache_hit") in measured
    by_key = {(r["subject"], r["workload"]): r for r in record["results"]}
    # The peers read the database for every garbage string they are given: no checksum.
    assert by_key[(compare.DRF, "garbage")]["io_calls_per_op"] > 0
    assert by_key[(compare.APIKEYS, "garbage")]["io_calls_per_op"] == 0
    versions = record["peer_versions"]
    assert versions["djangorestframework-api-key"] != "not installed"
    assert versions["keyshield"] != "not installed"
    assert any("response delay is switched off" in note for note in record["notes"])


@pytest.mark.parametrize("framework", sorted(ROUTES))
def test_in_process_costs_cover_every_route(
    framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # measure_in_process points the app at its database through the environment.
    monkeypatch.setenv("APIKEYS_BENCH_BACKEND", "unused")
    costs = measure_in_process(framework, requests=3, rounds=2)
    assert set(costs) == set(ROUTES[framework])
    assert all(cost > 0 for cost in costs.values())


@pytest.mark.parametrize("framework", sorted(SERVERS))
def test_every_server_answers_each_route_and_keeps_its_connection(
    framework: str, tmp_path: Path
) -> None:
    # The server and command line wrk loads, on loopback: a 200 on every route
    # with a key, over one kept-alive connection (a server that closes it would
    # have the benchmark measure new connections instead of the routes).
    database = tmp_path / "keys.sqlite3"
    key = issue_key(database)
    environment = {**os.environ, "APIKEYS_BENCH_BACKEND": f"sqlite:///{database}"}
    with serving(framework, environment) as (server, port):
        check_answers(port, ROUTES[framework], key)
        assert server.poll() is None
    assert server.poll() is not None  # stopped on the way out


def test_kept_is_the_median_of_the_rounds_own_ratios() -> None:
    figures: dict[str, list[tuple[float, ...]]] = {
        "open": [(1000.0, 1, 2, 3), (500.0, 1, 2, 3), (2000.0, 1, 2, 3)],
        "protected": [(900.0, 1, 2, 3), (450.0, 1, 2, 3), (1200.0, 1, 2, 3)],
    }
    ratios = _ratios(figures, "protected", "open")
    assert ratios == (0.9, 0.9, 0.6)
    assert _ratios(figures, "protected", "noop") == ()
    paired = HttpResult("x", 1000.0, 900.0, 1, 2, 3, 4, 3, 2, 16, protected_over_open=ratios)
    # The medians of the routes (1000 and 900) would say 0.9 too; a drift that halves
    # both routes of one round moves neither the ratio nor the result.
    assert paired.kept == 0.9
    assert paired.kept_over_noop is None
    unpaired = HttpResult("x", 1000.0, 800.0, 1, 2, 3, 4, 1, 2, 16, noop_rps=1600.0)
    assert unpaired.kept == 0.8 and unpaired.kept_over_noop == 0.5
    assert paired.as_dict()["kept"] == 0.9


def test_the_interval_of_kept_brackets_the_median_and_narrows_with_rounds() -> None:
    assert median_interval([0.9, 0.8]) is None  # too few rounds to say anything
    few = [0.8, 0.95, 0.9, 1.0, 0.85]
    interval = median_interval(few)
    assert interval is not None
    low, high = interval
    assert min(few) <= low <= statistics.median(few) <= high <= max(few)
    assert median_interval(few) == interval  # seeded: the same rounds, the same interval
    many = few * 8
    many_low, many_high = median_interval(many) or (0.0, 1.0)
    assert many_high - many_low < high - low
    assert median_interval([0.9] * 5) == (0.9, 0.9)


def test_a_result_carries_its_intervals_into_the_record_and_the_page() -> None:
    ratios = (0.95, 0.91, 0.93, 0.97, 0.92)
    served = HttpResult("x", 1000.0, 930.0, 1, 2, 3, 4, 5, 2, 16, protected_over_open=ratios)
    record = served.as_dict()
    assert record["kept_interval"] == served.kept_interval == median_interval(ratios)
    assert record["kept_over_noop_interval"] is None
    low, high = record["kept_interval"]
    cell = compare._kept(record)
    assert cell.startswith(f"{served.kept:.0%} [") and f"{low:.0%}–{high:.0%}" in cell
    assert compare._kept({**record, "kept_interval": None}) == f"{served.kept:.0%}"
    checks = compare.ratio_checks([], None, None, [record])
    assert [check.measured for check in checks] == [served.kept]
    assert f"95% interval {low:.0%}–{high:.0%}" in checks[0].target

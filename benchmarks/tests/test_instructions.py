"""The instruction-count harness (``python -m benchmarks.http_instructions``), run small so it cannot rot.

One real run of the Flask server under callgrind (a few seconds of requests
after 15-20 s of startup), through the command line, writing its record. No
count is pinned (they move with every change of the code measured); what is
checked is that they are counts of the real thing: positive, the protected
route above the open one, every status checked, the record complete.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import io
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks import http_instructions, http_load
from benchmarks.http_instructions import InstructionResult

pytestmark = [pytest.mark.sqlalchemy, pytest.mark.e2e, pytest.mark.flask, pytest.mark.slow]

FLASK = "flask (waitress)"
SMALL_RUN = ["--framework", FLASK, "--requests", "20", "--rounds", "1", "--warmup", "10"]
needs_valgrind = pytest.mark.skipif(
    shutil.which("valgrind") is None or shutil.which("callgrind_control") is None,
    reason="valgrind is not installed (apt-get install valgrind; .ci/run installs it)",
)


def _main(arguments: list[str]) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = http_instructions.main(arguments)
    return status, printed.getvalue()


@pytest.fixture(scope="module")
def written_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One small run through the command line that writes its record: the record and the output."""
    record_path = tmp_path_factory.mktemp("instructions") / "results" / "record.json"
    status, printed = _main([*SMALL_RUN, "--json", str(record_path), "--note", "smoke"])
    assert status == 0
    return json.loads(record_path.read_text(encoding="utf-8")), printed


@needs_valgrind
def test_a_small_run_counts_instructions_for_both_routes(
    written_run: tuple[dict[str, Any], str],
) -> None:
    (result,) = written_run[0]["results"]
    assert result["framework"] == FLASK
    assert result["requests"] == 20 and result["rounds"] == 1
    assert set(result["per_round"]) == set(result["instructions"]) == {"open", "protected"}
    for route, values in result["per_round"].items():
        assert len(values) == 1 and values[0] == result["instructions"][route]
    opened, protected = result["instructions"]["open"], result["instructions"]["protected"]
    # A Python web request is hundreds of thousands of instructions; anything
    # near zero would be a dump of the wrong process or an empty one. Which route
    # costs more is not asked of 20 requests in one round: one collection of the
    # garbage collector (about 2 million instructions) lands in one of the two
    # rounds or in neither, depending on what the process allocated before.
    assert opened > 10_000
    assert protected > 10_000
    assert result["kept"] == pytest.approx(opened / protected)
    assert result["kept_over_noop"] is None
    assert result["spread"] == {"open": 0.0, "protected": 0.0}  # one round: nothing to spread
    assert result["spread_total"] == result["spread"]
    # waitress: the counted figures are its worker threads', within the whole process's.
    for route, whole in result["total_instructions"].items():
        assert result["instructions"][route] < whole
    assert result["kept_total"] == pytest.approx(
        result["total_instructions"]["open"] / result["total_instructions"]["protected"]
    )


@needs_valgrind
def test_the_record_says_what_was_measured_with_what(
    written_run: tuple[dict[str, Any], str],
) -> None:
    record, printed = written_run
    assert record["schema"] == http_instructions.RECORD_SCHEMA
    assert record["kind"] == "instructions"
    assert record["command"].startswith("python -m benchmarks.http_instructions --framework")
    assert record["notes"] == ["smoke"]
    assert record["config"]["requests"] == 20 and record["config"]["rounds"] == 1
    assert record["config"]["warmup"] == 10
    assert record["config"]["server_environment"]["PYTHONHASHSEED"] == "0"
    assert record["config"]["servers"] == {FLASK: http_load.SERVERS[FLASK]}
    versions = record["versions"]
    assert versions["valgrind"].startswith("valgrind-")
    assert versions["python"] and versions["flask"] and versions["waitress"]
    assert record["git_commit"] is None or len(record["git_commit"]) >= 7
    assert printed.startswith("| Server | open | noop | protected |")
    assert f"| {FLASK} |" in printed
    assert "wrote " in printed


def test_the_record_goes_where_asked_and_nowhere_with_no_write(tmp_path: Path) -> None:
    started_at = datetime(2026, 11, 28, 5, 6, 7, tzinfo=UTC)
    asked = tmp_path / "asked.json"
    assert http_instructions.record_path(no_write=False, asked=asked, started_at=started_at) == (
        asked
    )
    assert http_instructions.record_path(no_write=False, asked=None, started_at=started_at) == (
        http_instructions.RESULTS_DIR / "instructions-20261128T050607Z.json"
    )
    for where in (asked, None):
        assert (
            http_instructions.record_path(no_write=True, asked=where, started_at=started_at) is None
        )


def test_a_missing_valgrind_is_named_with_its_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no valgrind on it
    monkeypatch.setattr(http_instructions, "RESULTS_DIR", tmp_path / "results")
    with pytest.raises(RuntimeError, match=r"valgrind is not installed \(apt-get install valgrind"):
        http_instructions.measure_instructions(frameworks=(FLASK,), requests=1, rounds=1)
    with pytest.raises(RuntimeError, match="apt-get install valgrind"):
        _main(SMALL_RUN)
    assert not (tmp_path / "results").exists()
    assert http_instructions.valgrind_version() is None


@contextlib.contextmanager
def _answering(status: int, *, content_length: bool = True) -> Iterator[http.client.HTTPConnection]:
    """A real loopback HTTP/1.1 server answering every GET with ``status``; a connection to it.

    Without ``content_length`` it closes the connection after each answer, as
    waitress does for a response with no length.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(status)
            if content_length:
                self.send_header("Content-Length", "0")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        yield connection
    finally:
        connection.close()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("status", [401, 403, 500, 503, 204])
def test_an_answer_other_than_200_is_refused_without_the_key(status: int) -> None:
    key = "sk_test_secret_never_shown"
    with _answering(status) as connection, pytest.raises(RuntimeError) as refused:
        http_instructions.request_ok(connection, "protected", key)
    assert str(refused.value) == f"/protected answered {status}, not 200"
    assert key not in str(refused.value)


def test_a_200_is_accepted() -> None:
    with _answering(200) as connection:
        for _ in range(3):  # keep-alive: the same connection serves them all
            http_instructions.request_ok(connection, "open", "sk_test_key")
        assert connection.sock is not None  # still the first connection, open


def test_a_server_that_closes_each_connection_is_refused() -> None:
    key = "sk_test_secret_never_shown"
    with (
        _answering(200, content_length=False) as connection,
        pytest.raises(RuntimeError) as refused,
    ):
        http_instructions.request_ok(connection, "protected", key)
    assert "/protected closed the connection" in str(refused.value)
    assert key not in str(refused.value)


def test_the_total_is_read_from_the_dump_summary() -> None:
    dump = "# callgrind format\nversion: 1\nevents: Ir\nsummary: 123456789\n\nfn=(1) f\n0 5\n"
    assert http_instructions.dump_total(dump + "totals: 123456789\n") == 123_456_789
    with pytest.raises(ValueError, match="no summary line"):
        http_instructions.dump_total("# callgrind format\nevents: Ir\ntotals: 5\n")


def test_medians_ratios_and_spread_of_a_result() -> None:
    per_round = {
        "open": (900.0, 1000.0, 1100.0),
        "noop": (1000.0, 1000.0, 1000.0),
        "protected": (1300.0, 1250.0, 1200.0),
    }
    result = InstructionResult("fastapi (uvicorn)", 10, per_round, per_round_total=per_round)
    assert result.rounds == 3
    assert result.instructions == {"open": 1000.0, "noop": 1000.0, "protected": 1250.0}
    assert result.kept == pytest.approx(0.8)
    assert result.kept_over_noop == pytest.approx(0.8)
    assert result.spread == pytest.approx({"open": 0.2, "noop": 0.0, "protected": 0.08})
    assert result.kept_total == result.kept
    assert result.as_dict()["spread_total"] == pytest.approx(result.spread)
    workers = InstructionResult(
        FLASK, 10, {"open": (1.0,), "protected": (2.0,)}, {"open": (3.0,), "protected": (4.0,)}
    )
    assert workers.kept_over_noop is None
    assert workers.as_dict()["kept"] == 0.5 and workers.as_dict()["kept_total"] == 0.75
    table = http_instructions.render_table([result, workers])
    assert (
        "| fastapi (uvicorn) | 1,000 | 1,000 | 1,250 | +250 | 80.0% | 80.0% | 80.0% | 20.00% |"
        in table
    )
    assert f"| {FLASK} | 1 | - | 2 | +1 | 50.0% | - | 75.0% | 0.00% |" in table


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"requests": 0}, "at least 1"),
        ({"rounds": 0}, "at least 1"),
        ({"warmup": 0}, "at least 1"),
        ({"frameworks": ("tornado",)}, "unknown frameworks"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        http_instructions.measure_instructions(**options)

"""``python -m apikeys`` runs the same command as the ``apikeys`` script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("APIKEYS_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "apikeys", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_python_dash_m_apikeys_runs_the_cli(tmp_path: Path) -> None:
    database = tmp_path / "keys.db"
    created = _run(
        "--backend", f"sqlite:///{database}", "create", "user_1", "ci", "--json", tmp_path=tmp_path
    )
    assert created.returncode == 0, created.stderr
    listed = _run("--backend", f"sqlite:///{database}", "list", "user_1", tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "ci" in listed.stdout


def test_python_dash_m_apikeys_reports_usage_errors_as_the_script_does(tmp_path: Path) -> None:
    result = _run("no-such-command", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "apikeys" in result.stderr

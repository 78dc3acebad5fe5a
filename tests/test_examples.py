"""Each integration page's "Run the example" commands, run as written, in a fresh folder.

A new user copies the two bash blocks: the install, the server command, then (in a second
terminal) ``apikeys create``, ``export KEY=…`` and the ``curl`` lines, each with the status its
comment promises. This test does exactly that against a copy of ``examples/`` in a temporary
folder, with only the port changed (and ``apikeys``/``python`` run from this environment).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.postgres_server import free_port

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "integrations"
DOCUMENTED_PORT = "8000"
STARTUP_SECONDS = 60.0

_SECTION_RE = re.compile(r"^## Run the example\n(?P<body>.*?)(?=^## )", re.S | re.M)
_BASH_RE = re.compile(r"^```bash\n(?P<body>.*?)^```$", re.S | re.M)
_STATUS_RE = re.compile(r"#\s*(?P<status>[1-5]\d\d)\b")


@dataclass
class Curl:
    headers: dict[str, str]
    url: str
    status: int
    body_keys: set[str] = field(default_factory=set)


@dataclass
class RunTheExample:
    install: str
    server: str
    create: str
    curls: list[Curl]


def _without_comment(line: str) -> str:
    return shlex.join(shlex.split(line, comments=True))


def _parse_curl(line: str) -> Curl:
    words = shlex.split(line, comments=True)
    assert words[0] == "curl", line
    headers, url = {}, ""
    iterator = iter(words[1:])
    for word in iterator:
        if word == "-H":
            name, _, value = next(iterator).partition(":")
            headers[name.strip()] = value.strip()
        elif not word.startswith("-"):
            url = word
    status = _STATUS_RE.search(line)
    assert status, f"the curl line does not say what it answers: {line}"
    return Curl(headers, url, int(status["status"]))


def read_page(page: str) -> RunTheExample:
    """The commands of ``page``'s "Run the example" section, in the order they are given."""
    section = _SECTION_RE.search((DOCS / page).read_text(encoding="utf-8"))
    assert section, f"{page} has no 'Run the example' section"
    lines = [
        line.strip()
        for block in _BASH_RE.finditer(section["body"])
        for line in block["body"].splitlines()
        if line.strip()
    ]
    install = server = create = ""
    curls: list[Curl] = []
    for line in lines:
        if line.startswith("pip install"):
            install = _without_comment(line)
        elif line.startswith("python "):
            server = _without_comment(line)
        elif line.startswith("apikeys create"):
            create = _without_comment(line)
        elif line.startswith("curl "):
            curls.append(_parse_curl(line))
        elif line.startswith("# {") and curls:
            curls[-1].body_keys = set(json.loads(line[2:].replace("2026-…", "x")))
        else:
            assert line.startswith("export KEY="), (
                f"{page}: a command this test does not run: {line}"
            )
    assert install and server and create and curls, f"{page}: a step is missing"
    return RunTheExample(install, server, create, curls)


def _accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serving(command: str, folder: Path, port: int) -> Iterator[None]:
    """Run the documented server command in ``folder``; stop it and its children afterwards."""
    argv = shlex.split(command.replace(DOCUMENTED_PORT, str(port)))
    argv[0] = sys.executable
    env = {**os.environ, "PORT": str(port), "PYTHONPATH": str(folder)}
    env.pop("APIKEYS_BACKEND", None)
    process = subprocess.Popen(
        argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _accepting(port):
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                output = process.communicate()[0].decode(errors="replace")
                pytest.fail(f"{command!r} did not start on port {port}:\n{output}")
            time.sleep(0.05)  # waiting for another process to listen: there is no clock to inject
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def _extra_of(install: str) -> str:
    match = re.fullmatch(r"pip install -e '\.\[(?P<extra>\w+)\]'", install)
    assert match, f"not an install from the checkout: {install}"
    return match["extra"]


PAGES = [
    pytest.param("fastapi.md", marks=pytest.mark.fastapi, id="fastapi"),
    pytest.param("flask.md", marks=pytest.mark.flask, id="flask"),
    pytest.param("django.md", marks=pytest.mark.django, id="django"),
]


@pytest.mark.e2e
@pytest.mark.parametrize("page", PAGES)
def test_the_example_runs_as_its_page_says(page: str, tmp_path: Path) -> None:
    steps = read_page(page)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert _extra_of(steps.install) in extras

    shutil.copytree(REPO / "examples", tmp_path / "examples")
    port = free_port()
    with serving(steps.server, tmp_path, port):
        created = subprocess.run(
            [sys.executable, "-m", "apikeys", *shlex.split(steps.create)[1:]],
            cwd=tmp_path, capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = created.stdout.strip().splitlines()[-1]
        assert key.startswith("apk_1"), created.stdout
        with httpx.Client(timeout=10) as http:
            for curl in steps.curls:
                headers = {name: value.replace("$KEY", key) for name, value in curl.headers.items()}
                url = curl.url.replace(DOCUMENTED_PORT, str(port))
                response = http.get(url, headers=headers)
                assert response.status_code == curl.status, (curl, response.text)
                assert curl.body_keys <= set(response.json()), (curl, response.text)


def test_a_page_without_the_status_of_a_curl_line_is_refused() -> None:
    with pytest.raises(AssertionError, match="does not say what it answers"):
        _parse_curl("curl http://127.0.0.1:8000/protected")

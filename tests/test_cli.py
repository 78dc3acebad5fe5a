"""The ``apikeys`` command line, run in-process and as the installed console script.

Every test works on a real SQLite file in ``tmp_path``; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import apikeys
from apikeys._cli import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_code_for,
    main,
    parse_duration,
    parse_expiration_arg,
    parse_grace_arg,
    redact_password,
    sqlite_file_of,
    terminal_safe,
)

pytestmark = pytest.mark.sqlalchemy

SECRET_LINE = "Secret (shown only this once; store it now):"


@dataclass
class Run:
    """What one ``apikeys`` invocation produced."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.err)["error"]
        return payload


CLI = Callable[..., Run]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own APIKEYS_* settings must not leak into these tests.
    for name in list(os.environ):
        if name.startswith("APIKEYS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def url(database: Path) -> str:
    return f"sqlite:///{database}"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str) -> CLI:
    """Run ``apikeys --backend <url> ARGS`` in-process; ``stdin=`` feeds standard input."""

    def run(*args: str, stdin: str = "", backend: str | None = url) -> Run:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        argv = ([f"--backend={backend}"] if backend is not None else []) + list(args)
        code = main(argv)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        return Run(code, captured.out, captured.err)

    return run


def secret_of(run: Run) -> str:
    """The secret a human-readable create/rotate printed: the line after the notice."""
    lines = run.out.splitlines()
    return lines[lines.index(SECRET_LINE) + 1]


def row_count(database: Path) -> int:
    if not database.exists():
        return 0
    # sqlite3's own context manager only commits; closing() closes the connection too.
    with contextlib.closing(sqlite3.connect(database)) as connection:
        (count,) = connection.execute("SELECT count(*) FROM apikeys_keys").fetchone()
    return int(count)


def create(cli: CLI, *args: str, user: str = "user_1", name: str = "CI") -> dict[str, Any]:
    run = cli("create", user, name, "--json", *args)
    assert run.code == EXIT_OK, run.err
    created: dict[str, Any] = run.json()
    return created


# --- create ------------------------------------------------------------------------


def test_create_prints_a_working_secret_exactly_once(cli: CLI, url: str) -> None:
    run = cli("create", "user_1", "CI pipeline", "--scope", "read:data", "--scope", "write:data")

    assert run.code == EXIT_OK
    secret = secret_of(run)
    assert re.fullmatch(apikeys.KEY_PATTERN, secret)
    assert run.out.count(secret) == 1
    assert "CI pipeline" in run.out
    with contextlib.closing(apikeys.create_key_manager(url)) as manager:
        verified = manager.validate_api_key(secret, required_scopes=["write:data"])
    assert verified.user_id == "user_1"
    assert verified.scopes == ("read:data", "write:data")
    assert verified.id in run.out


def test_create_json_has_every_field_and_the_secret(cli: CLI) -> None:
    before = datetime.now(UTC)
    created = create(
        cli, "--scope", "read:data data:*", "--expires", "30d", "--metadata", '{"team": "infra"}'
    )

    assert created["userId"] == "user_1"
    assert created["name"] == "CI"
    assert created["scopes"] == ["read:data", "data:*"]
    assert created["status"] == "active"
    assert created["metadata"] == {"team": "infra"}
    assert re.fullmatch(apikeys.KEY_PATTERN, created["secret"])
    assert created["secret"].startswith(created["hint"].split("…")[0])
    expires = datetime.fromisoformat(created["expiresAt"].replace("Z", "+00:00"))
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)


def test_create_gives_a_key_its_limits_in_short_form(cli: CLI, url: str) -> None:
    created = create(cli, "--rate-limit", "100/1m", "--quota", "100000/30d")
    assert created["rateLimit"] == {"limit": 100, "window": 60}
    assert created["quota"] == {"limit": 100_000, "period": 30 * 86400}
    once = create(cli, "--quota", "500")
    assert once["rateLimit"] is None
    assert once["quota"] == {"limit": 500, "period": None}

    shown = cli("show", created["id"])
    assert re.search(r"^rate limit +100/1m$", shown.out, re.MULTILINE)
    assert re.search(r"^quota +100000/30d$", shown.out, re.MULTILINE)
    assert re.search(r"^rate limit +-$", cli("show", once["id"]).out, re.MULTILINE)
    with contextlib.closing(apikeys.create_key_manager(url)) as manager:
        stored = manager.get_api_key(created["id"])
    assert str(stored.rate_limit) == "100/1m"
    assert str(stored.quota) == "100000/30d"


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--rate-limit", "100", "rate_limit"),
        ("--rate-limit", "100/1y", "rate_limit"),
        ("--rate-limit", "0/1m", "rate_limit"),
        ("--quota", "100000/400d", "quota"),
        ("--quota", "lots", "quota"),
    ],
)
def test_a_bad_limit_is_refused_and_writes_nothing(
    cli: CLI, database: Path, flag: str, value: str, field: str
) -> None:
    run = cli("create", "user_1", "CI", "--json", flag, value)
    assert run.code == EXIT_USAGE
    assert run.out == ""
    assert run.error()["code"] == "invalid_input"
    assert run.error()["message"].startswith(field)
    assert row_count(database) == 0


def test_limits_sets_changes_keeps_and_removes(cli: CLI) -> None:
    key = create(cli, "--rate-limit", "10/1s", "--quota", "500")
    changed = cli("limits", key["id"], "--rate-limit", "20/1s", "--json").json()
    assert changed["rateLimit"] == {"limit": 20, "window": 1}
    assert changed["quota"] == {"limit": 500, "period": None}  # kept: not named

    removed = cli("limits", key["id"], "--quota", "none", "--json").json()
    assert removed["rateLimit"] == {"limit": 20, "window": 1}
    assert removed["quota"] is None

    text = cli("limits", key["id"], "--rate-limit", "None", "--quota", "1000/1d")
    assert text.code == EXIT_OK
    assert re.search(r"^rate limit +-$", text.out, re.MULTILINE)
    assert re.search(r"^quota +1000/1d$", text.out, re.MULTILINE)


def test_limits_of_a_bad_form_or_an_unknown_key_change_nothing(cli: CLI) -> None:
    key = create(cli, "--rate-limit", "10/1s")
    refused = cli("limits", key["id"], "--rate-limit", "ten a second", "--json")
    assert refused.code == EXIT_USAGE
    assert refused.error()["message"].startswith("rate_limit 'ten a second' is not of the form")
    assert cli("show", key["id"], "--json").json()["rateLimit"] == {"limit": 10, "window": 1}
    unknown = cli("limits", "0" * len(key["id"]), "--quota", "5", "--json")
    assert unknown.code != EXIT_OK
    assert unknown.error()["code"] == "api_key_not_found"


@pytest.mark.parametrize(
    ("expires", "expected"),
    [
        ("2099-12-31", datetime(2100, 1, 1, tzinfo=UTC)),
        ("2099-06-01T12:00:00Z", datetime(2099, 6, 1, 12, tzinfo=UTC)),
        ("2099-06-01T14:00:00+02:00", datetime(2099, 6, 1, 12, tzinfo=UTC)),
    ],
)
def test_create_accepts_dates_and_datetimes(cli: CLI, expires: str, expected: datetime) -> None:
    created = create(cli, "--expires", expires)
    assert datetime.fromisoformat(created["expiresAt"].replace("Z", "+00:00")) == expected


def test_create_without_expiry_never_expires(cli: CLI) -> None:
    assert create(cli)["expiresAt"] is None
    assert create(cli, "--expires", "never")["expiresAt"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires", "2001-01-01"], "--expires is in the past"),
        (["--expires", "tomorrow"], "is not a duration (90d, 12h, 2w, 1h30m), a date"),
        (["--expires", "0d"], "positive duration"),
        (["--expires", ""], "is not a duration"),
        (["--expires", "-5d"], "a duration counts forward from now; write it without a sign"),
        (["--expires=+5d"], "write it without a sign"),
        (["--expires", "-2027-12-31"], "is not a duration"),
        (["--expires", "99999999w"], "100 years"),
        (["--scope", "read data!"], "malformed scope 'data!'"),
        (["--scope", "*"], "malformed scope '*'"),
        (["--metadata", "[1, 2]"], "--metadata must be a JSON object"),
        (["--metadata", "{nope"], "--metadata must be a JSON object"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(
    cli: CLI, database: Path, args: list[str], message: str
) -> None:
    create(cli)  # the database exists and holds one key
    run = cli("create", "user_1", "second", *args)

    assert run.code == EXIT_USAGE
    assert message in run.err
    assert run.err.startswith("apikeys: error: ")
    assert len(run.err.strip().splitlines()) == 1
    assert run.out == ""
    assert row_count(database) == 1


@pytest.mark.parametrize(("user", "name"), [("user_1", "   "), ("", "CI"), ("user_1", "a\x00b")])
def test_create_refuses_bad_owner_or_name_without_touching_the_database(
    cli: CLI, database: Path, user: str, name: str
) -> None:
    run = cli("create", user, name)

    assert run.code == EXIT_USAGE
    assert "must be" in run.err
    assert not database.exists()


def test_bad_input_as_json_is_an_error_object_on_stderr(cli: CLI) -> None:
    run = cli("create", "user_1", "CI", "--expires", "yesterday", "--json")

    assert run.code == EXIT_USAGE
    assert run.out == ""
    error = run.error()
    assert error["code"] == "invalid_input"
    assert error["statusCode"] == 422
    assert error["exitCode"] == EXIT_USAGE
    assert "yesterday" in error["message"]


# --- list and show ---------------------------------------------------------------------


def test_list_shows_active_keys_and_never_a_secret(cli: CLI) -> None:
    first = create(cli, "--scope", "read:data", name="first")
    second = create(cli, name="second")
    cli("revoke", second["id"])
    create(cli, user="someone_else")

    run = cli("list", "user_1")

    assert run.code == EXIT_OK
    assert first["id"] in run.out
    assert second["id"] not in run.out
    assert first["secret"] not in run.out
    assert "read:data" in run.out
    assert "1-1 of 1 key(s)" in run.out
    header = run.out.splitlines()[0].split()
    assert header[:3] == ["ID", "NAME", "SCOPES"]


def test_list_and_show_name_the_key_that_created_a_key(cli: CLI, url: str) -> None:
    parent = create(cli, name="parent")
    manager = apikeys.create_key_manager(url)
    try:
        child = manager.create_api_key("user_1", "child", created_by=parent["id"])
    finally:
        manager.close()
    assert parent["createdBy"] is None

    table = cli("list", "user_1").out.splitlines()
    assert "CREATED BY" in table[0]
    (child_row,) = [line for line in table if line.startswith(child.id)]
    assert parent["id"] in child_row.split()
    listed = {
        key["id"]: key["createdBy"] for key in cli("list", "user_1", "--json").json()["items"]
    }
    assert listed == {parent["id"]: None, child.id: parent["id"]}
    shown_lines = cli("show", child.id).out.splitlines()
    assert any(
        line.split()[:2] == ["created", "by"] and line.split()[-1] == parent["id"]
        for line in shown_lines
    )
    assert cli("show", child.id, "--json").json()["createdBy"] == parent["id"]

    revoked = cli("revoke", parent["id"])
    assert revoked.code == EXIT_OK
    shown = cli("show", child.id, "--json").json()
    assert shown["status"] == "revoked"
    assert shown["revocationReason"] == f"creator {parent['id']} revoked"


def test_list_all_includes_revoked_keys_with_their_status(cli: CLI) -> None:
    kept = create(cli, name="kept")
    revoked = create(cli, name="gone")
    cli("revoke", revoked["id"])

    run = cli("list", "user_1", "--all")

    rows = {line.split()[0]: line for line in run.out.splitlines()[1:] if line.strip()}
    assert "revoked" in rows[revoked["id"]]
    assert "active" in rows[kept["id"]]


def test_list_json_pages_and_has_no_secrets(cli: CLI) -> None:
    created = [create(cli, name=f"key {n}") for n in range(3)]

    first_page = cli("list", "user_1", "--json", "--limit", "2").json()
    second_page = cli("list", "user_1", "--json", "--limit", "2", "--offset", "2").json()

    assert first_page["total"] == 3
    assert first_page["hasMore"] is True
    assert second_page["hasMore"] is False
    listed = [item["id"] for item in first_page["items"] + second_page["items"]]
    assert sorted(listed) == sorted(key["id"] for key in created)
    for item in first_page["items"]:
        assert "secret" not in item
        assert item["status"] == "active"
    text = json.dumps([first_page, second_page])
    assert not any(key["secret"] in text for key in created)


def test_list_human_output_points_to_the_next_page(cli: CLI) -> None:
    create(cli, name="a")
    create(cli, name="b")

    run = cli("list", "user_1", "--limit", "1")

    assert "1-1 of 2 key(s); next page: --offset 1" in run.out


def test_list_of_a_user_without_keys(cli: CLI) -> None:
    create(cli, user="someone_else")
    run = cli("list", "nobody")
    assert run.code == EXIT_OK
    assert "No active keys for nobody" in run.out
    assert "--all" in run.out


def test_list_refuses_a_page_size_out_of_range(cli: CLI) -> None:
    create(cli)
    run = cli("list", "user_1", "--limit", "1000")
    assert run.code == EXIT_USAGE
    assert "limit must be an integer from 1 to 100" in run.err


def test_show_one_key_without_its_secret(cli: CLI) -> None:
    created = create(cli, "--metadata", '{"env": "prod"}', name="deploy bot")

    human = cli("show", created["id"])
    as_json = cli("show", created["id"], "--json").json()

    assert human.code == EXIT_OK
    assert "deploy bot" in human.out
    assert '{"env": "prod"}' in human.out
    assert created["secret"] not in human.out
    assert as_json["id"] == created["id"]
    assert as_json["metadata"] == {"env": "prod"}
    assert "secret" not in as_json


# --- revoke, delete, rotate -----------------------------------------------------------


def test_revoke_keeps_the_reason_and_stops_the_key(cli: CLI) -> None:
    created = create(cli)

    run = cli("revoke", created["id"], "--reason", "laptop lost")
    shown = cli("show", created["id"], "--json").json()
    verify = cli("verify", "--json", stdin=created["secret"])

    assert run.code == EXIT_OK
    assert f"Revoked API key {created['id']}" in run.out
    assert "laptop lost" in run.out
    assert shown["status"] == "revoked"
    assert shown["revocationReason"] == "laptop lost"
    assert verify.code == EXIT_REFUSED
    assert verify.json()["error"]["code"] == "revoked_api_key"


def test_text_from_the_store_cannot_drive_the_terminal(cli: CLI, database: Path) -> None:
    created = create(cli)
    hostile = "\x1b[2J\x1b[31mall good\rok\x07"

    refused = cli("revoke", created["id"], "--reason", hostile)
    assert refused.code != EXIT_OK  # control characters never reach the store this way
    assert cli("show", created["id"], "--json").json()["status"] == "active"
    # ...but a store written by other means may hold them.
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "UPDATE apikeys_keys SET revoked_at = '2030-01-01 00:00:00.000000',"
            " revocation_reason = ? WHERE id = ?",
            (hostile, created["id"]),
        )
    revoked = cli("revoke", created["id"])
    shown = cli("show", created["id"])
    as_json = cli("show", created["id"], "--json")

    for output in (revoked.out, shown.out):
        assert "\x1b" not in output and "\r" not in output and "\x07" not in output
        assert "\\x1b[2J\\x1b[31mall good\\rok\\x07" in output
    assert as_json.json()["revocationReason"] == hostile  # JSON escapes it, losslessly
    assert "\x1b" not in as_json.out


@given(st.text())
def test_terminal_safe_leaves_only_printable_text_and_newlines(text: str) -> None:
    safe = terminal_safe(text)
    assert all(char.isprintable() or char == "\n" for char in safe)
    if text.isprintable():
        assert safe == text
    assert safe.count("\n") == text.count("\n")


def test_revoke_json_and_idempotence(cli: CLI) -> None:
    created = create(cli)
    first = cli("revoke", created["id"], "--json").json()
    second = cli("revoke", created["id"], "--json")

    assert first["status"] == "revoked"
    assert second.code == EXIT_OK
    assert second.json()["revokedAt"] == first["revokedAt"]


def test_delete_removes_the_key(cli: CLI, database: Path) -> None:
    created = create(cli)

    run = cli("delete", created["id"])
    again = cli("delete", created["id"], "--json")

    assert run.code == EXIT_OK
    assert f"Deleted API key {created['id']}" in run.out
    assert row_count(database) == 0
    assert again.code == EXIT_NOT_FOUND
    assert again.error()["code"] == "api_key_not_found"


def test_delete_json(cli: CLI) -> None:
    created = create(cli)
    assert cli("delete", created["id"], "--json").json() == {"deleted": created["id"]}


def test_rotate_without_grace_retires_the_old_key_now(cli: CLI) -> None:
    old = create(cli, "--scope", "read:data", "--expires", "2099-01-01")

    run = cli("rotate", old["id"])
    new_secret = secret_of(run)

    assert run.code == EXIT_OK
    assert "stops working now" in run.out
    assert run.out.count(new_secret) == 1
    assert cli("verify", stdin=new_secret).code == EXIT_OK
    assert cli("verify", stdin=old["secret"]).code == EXIT_REFUSED
    listed = cli("list", "user_1", "--json").json()["items"]
    assert len(listed) == 1
    assert listed[0]["scopes"] == ["read:data"]
    assert listed[0]["expiresAt"] == old["expiresAt"]


def test_rotate_with_grace_keeps_the_old_key_for_a_while(cli: CLI) -> None:
    old = create(cli)
    before = datetime.now(UTC)

    rotated = cli("rotate", old["id"], "--grace", "1h", "--expires", "90d", "--json").json()

    assert rotated["replaces"]["id"] == old["id"]
    assert rotated["replaces"]["status"] == "active"
    old_expiry = datetime.fromisoformat(rotated["replaces"]["expiresAt"].replace("Z", "+00:00"))
    assert before + timedelta(hours=1) <= old_expiry <= before + timedelta(hours=1, minutes=1)
    assert rotated["name"] == old["name"]
    assert rotated["id"] != old["id"]
    assert cli("verify", stdin=old["secret"]).code == EXIT_OK
    assert cli("verify", stdin=rotated["secret"]).code == EXIT_OK


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grace", "soon"], "--grace 'soon' is not a duration"),
        (["--grace", "-5"], "--grace '-5' is not a duration"),
        (["--grace", "nan"], "is not a duration"),
        (["--expires", "1999-01-01"], "--expires is in the past"),
    ],
)
def test_rotate_refuses_bad_input_and_writes_nothing(
    cli: CLI, database: Path, args: list[str], message: str
) -> None:
    old = create(cli)

    run = cli("rotate", old["id"], *args)

    assert run.code == EXIT_USAGE
    assert message in run.err
    assert row_count(database) == 1
    assert cli("verify", stdin=old["secret"]).code == EXIT_OK


def test_rotate_of_a_revoked_key_is_refused(cli: CLI) -> None:
    old = create(cli)
    cli("revoke", old["id"])

    run = cli("rotate", old["id"])

    assert run.code == EXIT_USAGE
    assert "a revoked key cannot be rotated" in run.err


@pytest.mark.parametrize("command", ["show", "revoke", "delete", "rotate"])
def test_unknown_key_id_is_not_found(cli: CLI, command: str) -> None:
    create(cli)
    run = cli(command, "NoSuchKey123")

    assert run.code == EXIT_NOT_FOUND
    assert run.err == "apikeys: error: API key not found (key NoSuchKey123)\n"


# --- a whole key where an id is expected ------------------------------------------------


def assert_not_shown(run: Run, secret: str) -> None:
    """Neither the key nor its secret part appears anywhere in the output."""
    shown = run.out + run.err
    assert secret not in shown
    assert secret.rpartition("_")[2][13:] not in shown  # the 33 secret characters and checksum


def test_revoke_takes_a_leaked_key_as_an_argument(cli: CLI) -> None:
    created = create(cli)
    run = cli("revoke", created["secret"], "--reason", "leaked")

    assert run.code == EXIT_OK, run.err
    assert f"Revoked API key {created['id']}" in run.out
    assert "shows in ps and shell history" in run.err  # the usual warning, without the key
    assert_not_shown(run, created["secret"])
    assert cli("verify", stdin=created["secret"]).code == EXIT_REFUSED


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["text", "json"])
def test_revoke_takes_a_leaked_key_on_stdin(cli: CLI, output: list[str]) -> None:
    created = create(cli)
    run = cli("revoke", "-", *output, stdin=created["secret"] + "\n")

    assert run.code == EXIT_OK, run.err
    assert run.err == ""
    assert_not_shown(run, created["secret"])
    if output:
        assert run.json()["id"] == created["id"]
        assert run.json()["status"] == "revoked"
    shown = cli("show", created["id"], "--json").json()
    assert shown["status"] == "revoked"
    assert shown["revocationReason"] is None


def test_every_command_taking_an_id_takes_the_whole_key(cli: CLI) -> None:
    created = create(cli, "--scope", "read:data")
    secret = created["secret"]

    shown = cli("show", secret, "--json")
    assert shown.code == EXIT_OK
    assert shown.json()["id"] == created["id"]
    assert_not_shown(shown, secret)

    rotated = cli("rotate", "-", "--json", stdin=secret)
    assert rotated.code == EXIT_OK, rotated.err
    assert rotated.json()["replaces"]["id"] == created["id"]
    assert_not_shown(rotated, secret)  # the new secret is printed; the old one never
    new_secret = rotated.json()["secret"]

    deleted = cli("delete", "-", "--json", stdin=new_secret)
    assert deleted.code == EXIT_OK, deleted.err
    assert deleted.json() == {"deleted": rotated.json()["id"]}
    assert_not_shown(deleted, new_secret)
    assert cli("show", rotated.json()["id"]).code == EXIT_NOT_FOUND


def test_a_key_with_another_prefix_is_read_by_its_own_prefix(cli: CLI, url: str) -> None:
    manager = apikeys.create_key_manager(url, key_prefix="acme_live")
    try:
        new = manager.create_api_key("user_1", "other prefix")
    finally:
        manager.close()
    run = cli("revoke", new.secret, "--json")  # the CLI itself runs with the default prefix
    assert run.code == EXIT_OK, run.err
    assert run.json()["id"] == new.id
    assert_not_shown(run, new.secret)


def test_an_unknown_whole_key_is_not_found_by_its_id_only(cli: CLI) -> None:
    create(cli)
    unknown = apikeys.generate_key()
    for output in ([], ["--json"]):
        run = cli("revoke", unknown.key, *output)
        assert run.code == EXIT_NOT_FOUND
        assert unknown.id in run.err
        assert_not_shown(run, unknown.key)


def _damaged(key: str) -> list[str]:
    position = len(key) - 10
    swapped = BASE62[(BASE62.index(key[position]) + 1) % 62]
    return [
        key[:position] + swapped + key[position + 1 :],  # a typo: the checksum fails
        key[:-1],  # cut short
        key + "x",  # one too many
        f"'{key}'",  # pasted with its quotes
        key.replace("_", "-", 1),  # the separator mangled
        key[:30] + " " + key[30:],  # split by a space
    ]


@pytest.mark.parametrize("command", ["show", "revoke", "delete", "rotate"])
def test_a_damaged_key_is_a_clear_error_that_does_not_repeat_it(cli: CLI, command: str) -> None:
    created = create(cli)
    before = cli("show", created["id"], "--json").json()
    for damaged in _damaged(created["secret"]):
        for output in ([], ["--json"]):
            run = cli(command, damaged, *output)
            assert run.code == EXIT_USAGE, (damaged, run.err)
            assert "looks like an API key" in run.err
            assert damaged not in run.out + run.err
            assert_not_shown(run, created["secret"])
            piped = cli(command, "-", *output, stdin=damaged)
            assert piped.code == EXIT_USAGE
            assert damaged not in piped.out + piped.err
    assert cli("show", created["id"], "--json").json() == before  # nothing was changed


def test_no_key_on_stdin_is_a_usage_error(cli: CLI) -> None:
    create(cli)
    run = cli("revoke", "-", stdin="  \n")
    assert run.code == EXIT_USAGE
    assert "no key id given" in run.err


BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_KEYISH = st.one_of(
    # Keys of any prefix, whole (never stored here) or with characters changed, cut or added.
    st.builds(
        lambda prefix, cut, noise: apikeys.generate_key(prefix).key[: 60 - cut] + noise,
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(lambda p: p != "ak"),
        st.integers(0, 20),
        st.text(alphabet=BASE62 + "_-'\" ./+=", max_size=4),
    ),
    # Clerk-shaped secrets: ak_ and base64-like text.
    st.from_regex(r"ak_[A-Za-z0-9+/=_\-]{16,80}", fullmatch=True),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(presented=_KEYISH, command=st.sampled_from(["show", "revoke", "delete", "rotate"]),
       via_stdin=st.booleans(), as_json=st.booleans())  # fmt: skip
def test_key_like_arguments_are_never_repeated(
    tmp_path_factory: pytest.TempPathFactory,
    presented: str,
    command: str,
    via_stdin: bool,
    as_json: bool,
) -> None:
    database = tmp_path_factory.getbasetemp() / "fuzzed-keys.db"
    database.touch()
    argv = [f"--backend=sqlite:///{database}", command, "-" if via_stdin else presented]
    run = _run_quietly(argv + (["--json"] if as_json else []), stdin=presented)

    assert run.code in (EXIT_USAGE, EXIT_NOT_FOUND), run.err
    assert "Traceback" not in run.err
    assert presented.strip() not in run.out + run.err
    body = presented.rpartition("_")[2]
    if len(body) > 20:
        assert body[13:] not in run.out + run.err


# --- verify ------------------------------------------------------------------------------


def test_verify_from_stdin(cli: CLI) -> None:
    created = create(cli, "--scope", "read:data")

    run = cli("verify", stdin=created["secret"] + "\n")

    assert run.code == EXIT_OK
    assert run.out.startswith(f"valid: key {created['id']} (CI) of user_1")
    assert created["secret"] not in run.out


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_verify_refuses_a_blank_scope_instead_of_requiring_none(cli: CLI, blank: str) -> None:
    created = create(cli, "--scope", "read:data")

    run = cli("verify", "--scope", "read:data", "--scope", blank, stdin=created["secret"])

    assert run.code == EXIT_USAGE
    assert "--scope is blank" in run.err
    assert created["secret"] not in run.out + run.err


def test_verify_from_stdin_with_a_dash(cli: CLI) -> None:
    created = create(cli)
    assert cli("verify", "-", stdin=created["secret"]).code == EXIT_OK


def test_verify_from_an_environment_variable(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    created = create(cli)
    monkeypatch.setenv("MY_API_KEY", created["secret"])

    run = cli("verify", "--key-env", "MY_API_KEY", "--json")

    assert run.code == EXIT_OK
    assert run.json() == {
        "valid": True,
        "key": {
            "keyId": created["id"],
            "userId": "user_1",
            "name": "CI",
            "scopes": [],
            "expiresAt": None,
            "metadata": {},
        },
    }


def test_verify_from_an_argument_works_but_warns(cli: CLI) -> None:
    created = create(cli)

    run = cli("verify", created["secret"])

    assert run.code == EXIT_OK
    assert "shows in ps and shell history" in run.err
    assert created["secret"] not in run.err


def test_verify_from_stdin_does_not_warn(cli: CLI) -> None:
    created = create(cli)
    assert cli("verify", stdin=created["secret"]).err == ""


def test_verify_checks_required_scopes(cli: CLI) -> None:
    created = create(cli, "--scope", "data:*")

    held = cli("verify", "--scope", "data:read", stdin=created["secret"])
    lacking = cli("verify", "--scope", "admin:users", "--json", stdin=created["secret"])

    assert held.code == EXIT_OK
    assert lacking.code == EXIT_REFUSED
    error = lacking.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert error["statusCode"] == 403
    assert "admin:users" in error["message"]


def test_verify_refuses_a_wrong_key_without_echoing_it(cli: CLI) -> None:
    created = create(cli)
    wrong = apikeys.generate_key(id=created["id"]).key

    human = cli("verify", stdin=wrong)
    as_json = cli("verify", "--json", stdin=wrong)

    assert human.code == EXIT_REFUSED
    assert human.out == "refused: Invalid API key [invalid_api_key, HTTP 403]\n"
    assert as_json.code == EXIT_REFUSED
    assert as_json.json()["valid"] is False
    assert as_json.json()["error"]["code"] == "invalid_api_key"
    for output in (human.out, human.err, as_json.out, as_json.err):
        assert wrong not in output


def test_verify_refuses_an_expired_key(cli: CLI, database: Path) -> None:
    created = create(cli, "--expires", "1d")
    # Move the expiry into the past directly in the file: no sleeping.
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "UPDATE apikeys_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
            (created["id"],),
        )

    run = cli("verify", "--json", stdin=created["secret"])

    assert run.code == EXIT_REFUSED
    assert run.json()["error"]["code"] == "expired_api_key"
    assert run.json()["error"]["keyId"] == created["id"]


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        ([], "", "no API key given"),
        ([], "  \n", "no API key given"),
        (["--key-env", "UNSET_VARIABLE_FOR_TEST"], "", "UNSET_VARIABLE_FOR_TEST is not set"),
        (["apk_1x", "--key-env", "X"], "", "not both"),
        (["--scope", "admin:*"], "k", "malformed scope 'admin:*'"),
    ],
)
def test_verify_usage_errors(cli: CLI, args: list[str], stdin: str, message: str) -> None:
    create(cli)  # some of these are refused by the backend, which needs a database
    run = cli("verify", *args, stdin=stdin)
    assert run.code == EXIT_USAGE
    assert message in run.err


# --- backends and configuration -------------------------------------------------------


def test_backend_from_the_environment(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, url: str, database: Path
) -> None:
    monkeypatch.setenv("APIKEYS_BACKEND", url)

    run = cli("create", "user_1", "from env", backend=None)

    assert run.code == EXIT_OK
    assert row_count(database) == 1


def test_backend_option_wins_over_the_environment(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database: Path
) -> None:
    monkeypatch.setenv("APIKEYS_BACKEND", f"sqlite:///{tmp_path / 'other.db'}")

    assert cli("create", "user_1", "explicit").code == EXIT_OK
    assert row_count(database) == 1
    assert not (tmp_path / "other.db").exists()


def test_global_options_go_before_or_after_the_command(cli: CLI, url: str) -> None:
    created = create(cli)
    # ``cli`` puts --backend first; here it comes after the command instead.
    after = cli("show", created["id"], "--backend", url, "--json", backend=None)

    assert after.code == EXIT_OK
    assert after.json()["id"] == created["id"]
    assert cli("--json", "show", created["id"]).json()["id"] == created["id"]


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("nonsense", "neither a URL"),
        ("gopher://somewhere", "no apikeys backend for 'gopher' URLs"),
        ("no_such_module_here:Manager", "backend module 'no_such_module_here' not found"),
        ("postgresql://admin:hunter2@127.0.0.1:notaport/db", "invalid database URL"),
        ("postgresql+nosuchdriver://admin:hunter2@127.0.0.1/db", "invalid database URL"),
        ("sqlite://admin:hunter2@host/x.db", "invalid database URL"),
        ("json:JSONDecoder", "has no from_settings"),
    ],
)
def test_bad_backend_is_a_configuration_error(cli: CLI, backend: str, message: str) -> None:
    run = cli("list", "user_1", backend=backend)

    assert run.code == EXIT_UNAVAILABLE
    assert message in run.err
    assert "hunter2" not in run.err
    assert len(run.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "url", "expected"),
    [
        (
            "cannot reach postgresql://admin:hunter2@db/keys",
            "postgresql://admin:hunter2@db/keys",
            "cannot reach postgresql://admin:***@db/keys",
        ),
        ("no password here", "sqlite:///keys.db", "no password here"),
        ("unparseable [", "postgresql://u:p@[::1/db", "unparseable ["),
        ("anything", None, "anything"),
    ],
)
def test_redact_password(text: str, url: str | None, expected: str) -> None:
    assert redact_password(text, url) == expected


def test_unreachable_database_is_backend_unavailable(cli: CLI, tmp_path: Path) -> None:
    # create may start a database, but not in a directory that does not exist.
    backend = f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
    run = cli("create", "user_1", "CI", "--json", backend=backend)

    assert run.code == EXIT_UNAVAILABLE
    assert run.error()["code"] == "backend_unavailable"
    assert run.error()["statusCode"] == 503


# --- a SQLite file that does not exist ------------------------------------------------

# Every command but create (and demo, which never takes --backend) needs an existing database.
_COMMANDS_NEEDING_A_DATABASE = [
    ["list", "user_1"],
    ["show", "NoSuchKey123"],
    ["revoke", "NoSuchKey123"],
    ["delete", "NoSuchKey123"],
    ["rotate", "NoSuchKey123"],
    ["verify"],  # the key comes on stdin
]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("command", _COMMANDS_NEEDING_A_DATABASE, ids=lambda argv: argv[0])
def test_a_missing_sqlite_file_is_refused_and_not_created(
    cli: CLI, tmp_path: Path, command: list[str], as_json: bool
) -> None:
    missing = tmp_path / "typo.db"

    run = cli(
        *command,
        *(["--json"] if as_json else []),
        stdin=apikeys.generate_key().key,
        backend=f"sqlite:///{missing}?timeout=5",
    )

    assert run.code == EXIT_UNAVAILABLE
    assert run.out == ""
    message = run.error()["message"] if as_json else run.err
    assert f"no SQLite database at {missing}: the file does not exist" in message
    assert "apikeys create" in message
    assert "sqlite:" not in message  # the path, not the URL
    assert "timeout" not in message
    if as_json:
        assert run.error()["code"] == "configuration_error"
        assert run.error()["exitCode"] == EXIT_UNAVAILABLE
    else:
        assert run.err.startswith("apikeys: error: ")
        assert run.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no database, no journal


def test_a_missing_sqlite_file_from_the_environment_is_refused(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, database: Path
) -> None:
    monkeypatch.setenv("APIKEYS_BACKEND", f"sqlite:///{database}")

    run = cli("list", "user_1", backend=None)

    assert run.code == EXIT_UNAVAILABLE
    assert f"no SQLite database at {database}" in run.err
    assert not database.exists()


def test_a_missing_directory_is_refused_like_a_missing_file(cli: CLI, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "keys.db"

    run = cli("show", "NoSuchKey123", backend=f"sqlite:///{missing}")

    assert run.code == EXIT_UNAVAILABLE
    assert f"no SQLite database at {missing}" in run.err
    assert not (tmp_path / "missing").exists()


def test_create_starts_a_new_sqlite_file(cli: CLI, database: Path) -> None:
    assert not database.exists()

    created = create(cli)

    assert database.exists()
    listed = cli("list", "user_1", "--json").json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]


def test_an_existing_empty_file_is_used_as_before(cli: CLI, database: Path) -> None:
    # Only a missing file is refused; an existing one (here empty) gets its tables.
    database.touch()

    run = cli("list", "user_1")

    assert run.code == EXIT_OK, run.err
    assert "No active keys for user_1" in run.out
    assert row_count(database) == 0


@pytest.mark.parametrize(
    ("template", "file_name"),
    [
        ("sqlite:///keys.db", "keys.db"),  # relative to the working directory
        ("sqlite:///{directory}/keys.db", "keys.db"),  # absolute: four slashes
        ("sqlite+pysqlite:///{directory}/keys.db", "keys.db"),
        ("sqlite+aiosqlite:///{directory}/keys.db", "keys.db"),  # the sync CLI swaps the driver
        ("sqlite:///{directory}/keys.db?timeout=5", "keys.db"),
        ("sqlite:///file:keys.db?uri=true", "keys.db"),
        ("sqlite:///file:{directory}/keys.db?mode=rwc&uri=true", "keys.db"),
        ("sqlite:///file://{directory}/keys.db?uri=true", "keys.db"),
        ("sqlite:///file://localhost{directory}/keys.db?uri=true", "keys.db"),
        # %25 is the URL's escape of %; SQLite unescapes the %20 that remains.
        ("sqlite:///file:{directory}/my%2520keys.db?uri=true", "my keys.db"),
        ("sqlite:///file:keys.db", "file:keys.db"),  # without uri=true, a plain file name
    ],
)
def test_sqlite_url_forms_are_refused_missing_and_work_once_created(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: str, file_name: str
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = template.format(directory=tmp_path)
    expected = tmp_path / file_name
    assert str(tmp_path).startswith("/")  # so "sqlite:///{directory}" has four slashes

    refused = cli("list", "user_1", backend=backend)
    assert refused.code == EXIT_UNAVAILABLE
    assert f"no SQLite database at {expected}:" in refused.err
    assert list(tmp_path.iterdir()) == []

    # The path the check computed is the file SQLite itself opens: create makes it there.
    created = cli("create", "user_1", "CI", "--json", backend=backend)
    assert created.code == EXIT_OK, created.err
    assert [path.name for path in tmp_path.iterdir()] == [file_name]
    listed = cli("list", "user_1", "--json", backend=backend)
    assert listed.code == EXIT_OK, listed.err
    assert listed.json()["items"][0]["id"] == created.json()["id"]


def test_a_read_only_uri_works_on_an_existing_file_and_refuses_a_missing_one(
    cli: CLI, tmp_path: Path, database: Path
) -> None:
    created = create(cli)
    read_only = f"sqlite:///file:{database}?mode=ro&uri=true"

    listed = cli("list", "user_1", "--json", backend=read_only)
    verified = cli("verify", stdin=created["secret"], backend=read_only)
    missing = tmp_path / "typo.db"
    refused = cli("list", "user_1", backend=f"sqlite:///file:{missing}?mode=ro&uri=true")

    assert listed.code == EXIT_OK, listed.err
    assert listed.json()["items"][0]["id"] == created["id"]
    assert verified.code == EXIT_OK, verified.err
    assert refused.code == EXIT_UNAVAILABLE
    assert f"no SQLite database at {missing}:" in refused.err
    assert not missing.exists()


@pytest.mark.parametrize("backend", ["sqlite://", "sqlite:///:memory:", "sqlite+pysqlite://"])
def test_in_memory_sqlite_urls_are_left_alone(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.chdir(tmp_path)

    run = cli("list", "user_1", backend=backend)

    assert run.code == EXIT_OK, run.err
    assert "No active keys for user_1" in run.out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///keys.db", "keys.db"),
        ("sqlite:////srv/keys.db", "/srv/keys.db"),
        ("sqlite+aiosqlite:///keys.db", "keys.db"),
        ("sqlite:///keys.db?mode=ro", "keys.db"),  # not a URI: the driver ignores mode
        ("sqlite:///keys.db?uri=true", "keys.db"),  # a URI flag, but a plain file name
        ("sqlite:///file:keys.db?uri=false", "file:keys.db"),
        ("sqlite:///file:keys.db?uri=1&mode=ro", "keys.db"),
        ("sqlite:///file:keys.db?uri=false&uri=true", "keys.db"),  # the last one counts
        ("sqlite:///file:/srv/keys.db?uri=TRUE", "/srv/keys.db"),
        ("sqlite:///file:///srv/a%2520b.db?uri=yes", "/srv/a b.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file::memory:?cache=shared&uri=true", None),
        ("sqlite:///file:shared?mode=memory&cache=shared&uri=true", None),
        ("sqlite:///file:/shared?vfs=memdb&uri=true", None),
        ("sqlite:///file:?uri=true", None),  # SQLite's private temporary database
        ("postgresql+psycopg://admin:hunter2@127.0.0.1/keys", None),
        ("mysql://127.0.0.1/keys.db", None),
        ("clerk://", None),
        ("tests.test_cli:FakeClerkBackend", None),
        ("nonsense", None),
        ("postgresql://admin:hunter2@127.0.0.1:notaport/db", None),
    ],
)
def test_sqlite_file_of(url: str, expected: str | None) -> None:
    assert sqlite_file_of(url) == expected


def test_sqlite_file_of_without_sqlalchemy(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes an import fail, as it would without the extra.
    for name in [name for name in sys.modules if name.partition(".")[0] == "sqlalchemy"]:
        monkeypatch.setitem(sys.modules, name, None)
    # Nor could the backend have been imported.
    for name in ("apikeys.backends._sqlalchemy", "apikeys.backends.sqlalchemy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(ImportError):
        from sqlalchemy.engine import make_url  # noqa: F401

    assert sqlite_file_of("sqlite:///keys.db") is None
    assert sqlite_file_of("clerk://") is None


def test_no_backend_configured_says_what_was_tried(cli: CLI) -> None:
    run = cli("list", "user_1", backend=None)

    assert run.code == EXIT_UNAVAILABLE
    assert "clerk" in run.err


def test_invalid_settings_in_the_environment(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIKEYS_KEY_PREFIX", "ak")

    run = cli("list", "user_1")

    assert run.code == EXIT_UNAVAILABLE
    assert "reserved for Clerk keys" in run.err


class FakeClerkBackend:
    """``--backend tests.test_cli:FakeClerkBackend``: the real Clerk manager over the
    project's stateful fake of Clerk's API, shared by every CLI run of one test."""

    fake: ClassVar[Any] = None

    @classmethod
    def from_settings(cls, url: str, settings: apikeys.Settings) -> apikeys.KeyManager:
        assert cls.fake is not None, "set FakeClerkBackend.fake first"
        manager: apikeys.KeyManager = cls.fake.key_manager()
        return manager


@pytest.mark.clerk
def test_every_command_on_the_clerk_backend(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, database: Path
) -> None:
    testing = pytest.importorskip("apikeys.testing", exc_type=ImportError)
    monkeypatch.setattr(FakeClerkBackend, "fake", testing.FakeClerk())
    backend = "tests.test_cli:FakeClerkBackend"
    user = testing.FakeClerk.new_user_id()

    def run(*args: str, stdin: str = "") -> Run:
        return cli(*args, stdin=stdin, backend=backend)

    created = run(
        "create", user, "CI pipeline", "--scope", "read:data", "--expires", "30d", "--json"
    )
    assert created.code == EXIT_OK, created.err
    key = created.json()
    assert key["id"].startswith("ak_")
    assert run("list", user, "--json").json()["items"][0]["id"] == key["id"]
    assert run("show", key["id"], "--json").json()["scopes"] == ["read:data"]
    assert run("verify", "--scope", "read:data", stdin=key["secret"]).code == EXIT_OK

    rotated = run("rotate", key["id"], "--json")
    assert rotated.code == EXIT_OK, rotated.err
    new_secret = rotated.json()["secret"]
    assert run("verify", stdin=new_secret).code == EXIT_OK
    assert run("verify", stdin=key["secret"]).code == EXIT_REFUSED

    new_id = rotated.json()["id"]
    assert run("revoke", new_id, "--reason", "done").code == EXIT_OK
    assert run("verify", stdin=new_secret).code == EXIT_REFUSED
    assert run("delete", new_id).code == EXIT_OK
    assert run("show", new_id).code == EXIT_NOT_FOUND
    not_clerk_user = run("create", "user_1", "CI pipeline")
    assert not_clerk_user.code == EXIT_USAGE
    assert "Clerk id" in not_clerk_user.err
    assert not database.exists()  # nothing went to the SQLite default


@pytest.mark.clerk
def test_a_leaked_clerk_key_is_revoked_by_its_secret(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    testing = pytest.importorskip("apikeys.testing", exc_type=ImportError)
    monkeypatch.setattr(FakeClerkBackend, "fake", testing.FakeClerk())
    backend = "tests.test_cli:FakeClerkBackend"
    user = testing.FakeClerk.new_user_id()
    key = cli("create", user, "CI pipeline", "--json", backend=backend).json()
    secret = key["secret"]
    assert secret.startswith("ak_")

    shown = cli("show", secret, "--json", backend=backend)
    assert shown.code == EXIT_OK, shown.err
    assert shown.json()["id"] == key["id"]
    revoked = cli("revoke", "-", "--json", stdin=secret, backend=backend)
    assert revoked.code == EXIT_OK, revoked.err
    assert revoked.json()["id"] == key["id"]
    assert cli("verify", stdin=secret, backend=backend).code == EXIT_REFUSED
    # Clerk no longer verifies a revoked secret, so only its id can name it now.
    again = cli("revoke", secret, backend=backend)
    assert again.code == EXIT_USAGE
    assert "give the key id instead" in again.err
    unknown = cli("revoke", "ak_" + "Zm9vYmFyYmF6cXV4" * 3, "--json", backend=backend)
    assert unknown.code == EXIT_USAGE
    assert "does not accept this key" in unknown.err
    for run in (shown, revoked, again, unknown):
        assert secret not in run.out + run.err
        assert "Zm9vYmFyYmF6cXV4" not in run.out + run.err


class ReadBackFailsAfterRotation:
    """``--backend tests.test_cli:ReadBackFailsAfterRotation``: the SQLAlchemy manager on
    ``database_url``, whose every read fails once a rotation has been done (a backend
    going down at the worst moment)."""

    database_url: ClassVar[str] = ""

    @classmethod
    def from_settings(cls, url: str, settings: apikeys.Settings) -> apikeys.KeyManager:
        from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

        class Manager(SQLAlchemyKeyManager):
            rotated = False

            def rotate_api_key(self, *args: Any, **kwargs: Any) -> apikeys.NewAPIKey:
                new = super().rotate_api_key(*args, **kwargs)
                self.rotated = True
                return new

            def get_api_key(self, key_id: str, *, user_id: str | None = None) -> apikeys.APIKey:
                if self.rotated:
                    raise apikeys.BackendUnavailableError()
                return super().get_api_key(key_id, user_id=user_id)

        return Manager(cls.database_url)


@pytest.mark.parametrize("as_json", [False, True])
def test_rotate_prints_the_new_secret_even_if_reading_back_fails(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, url: str, as_json: bool
) -> None:
    old = create(cli)
    monkeypatch.setattr(ReadBackFailsAfterRotation, "database_url", url)

    run = cli(
        "rotate",
        old["id"],
        *(["--json"] if as_json else []),
        backend="tests.test_cli:ReadBackFailsAfterRotation",
    )

    assert run.code == EXIT_OK, run.err
    secret = run.json()["secret"] if as_json else secret_of(run)
    if as_json:
        assert run.json()["replaces"] is None
    else:
        assert "its state could not be read back" in run.out
    assert cli("verify", stdin=secret).code == EXIT_OK


# --- exit codes and usage -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (apikeys.InvalidKeyError(), EXIT_REFUSED),
        (apikeys.ExpiredKeyError(), EXIT_REFUSED),
        (apikeys.RevokedKeyError(), EXIT_REFUSED),
        (apikeys.InsufficientScopeError(), EXIT_REFUSED),
        (apikeys.MissingKeyError(), EXIT_REFUSED),
        (apikeys.InvalidInputError(), EXIT_USAGE),
        (apikeys.KeyNotFoundError(), EXIT_NOT_FOUND),
        (apikeys.ConfigurationError(), EXIT_UNAVAILABLE),
        (apikeys.MissingDependencyError("sqlalchemy", "sqlalchemy"), EXIT_UNAVAILABLE),
        (apikeys.BackendUnavailableError(), EXIT_UNAVAILABLE),
        (apikeys.RateLimitedError(), EXIT_UNAVAILABLE),
        (apikeys.APIKeysError(), EXIT_UNAVAILABLE),
    ],
)
def test_exit_code_of_every_error(error: apikeys.APIKeysError, code: int) -> None:
    assert exit_code_for(error) == code


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["create", "only_user"], ["list", "u", "--limit", "ten"], ["show"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "usage: apikeys" in err
    assert "Traceback" not in err


def test_help_lists_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    for command in ("create", "list", "show", "revoke", "delete", "rotate", "verify", "demo"):
        assert command in out
    assert "3    no key with that id" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"apikeys {apikeys.__version__}"


# --- value parsers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("2w", timedelta(weeks=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 45s ", timedelta(seconds=45)),
        ("1d12h", timedelta(days=1, hours=12)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "d", "1.5d", "10", "1 d", "-1d", "1y", "2027-01-01"])
def test_parse_duration_rejects_other_text(text: str) -> None:
    assert parse_duration(text) is None


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("wdhms")), min_size=1, max_size=4)
)
def test_parse_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    seconds = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == timedelta(seconds=sum(n * seconds[u] for n, u in parts))


def test_parse_grace_accepts_seconds_and_durations() -> None:
    assert parse_grace_arg("0") == timedelta(0)
    assert parse_grace_arg("90") == timedelta(seconds=90)
    assert parse_grace_arg("1.5") == timedelta(seconds=1.5)
    assert parse_grace_arg("30m") == timedelta(minutes=30)


@given(st.text(max_size=60))
def test_value_parsers_raise_only_invalid_input(text: str) -> None:
    # Anything else (ValueError, OverflowError, ...) would escape main() as a traceback.
    for parse in (parse_expiration_arg, parse_grace_arg, parse_duration):
        with contextlib.suppress(apikeys.InvalidInputError):
            parse(text)


# --- untrusted input through main() --------------------------------------------------


def _run_quietly(argv: list[str], stdin: str = "") -> Run:
    """Run main() capturing output without pytest fixtures (for hypothesis)."""
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        sys.stdin = saved_stdin
    return Run(code, out.getvalue(), err.getvalue())


_ARG_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user=_ARG_TEXT, name=_ARG_TEXT, scope=_ARG_TEXT, expires=_ARG_TEXT, metadata=_ARG_TEXT)
def test_create_with_arbitrary_arguments_succeeds_or_refuses_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
    user: str,
    name: str,
    scope: str,
    expires: str,
    metadata: str,
) -> None:
    database = tmp_path_factory.getbasetemp() / "fuzzed-create.db"
    backend = f"--backend=sqlite:///{database}"
    before = row_count(database)
    options = ["--scope", scope, "--expires", expires, "--metadata", metadata]
    argv = [backend, "create", *options, "--", user, name]

    run = _run_quietly(argv)

    assert "Traceback" not in run.err
    if run.code == EXIT_OK:
        assert row_count(database) == before + 1
        assert SECRET_LINE in run.out
    else:
        assert run.code == EXIT_USAGE, (argv, run)
        assert row_count(database) == before
        assert run.out == ""
        # Either our one-line error, or argparse's usage (an option value like "-x").
        one_line = run.err.startswith("apikeys: error: ") and run.err.count("\n") == 1
        assert one_line or run.err.startswith("usage: apikeys create"), run.err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(presented=st.text(st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_verify_of_arbitrary_input_is_refused_without_echo(
    tmp_path_factory: pytest.TempPathFactory, presented: str
) -> None:
    database = tmp_path_factory.getbasetemp() / "fuzzed-verify.db"
    database.touch()  # an existing empty file: the manager creates the tables in it
    argv = [f"--backend=sqlite:///{database}", "verify", "--json"]
    run = _run_quietly(argv, stdin=presented)

    assert run.code in (EXIT_REFUSED, EXIT_USAGE)
    assert "Traceback" not in run.err
    if run.code == EXIT_REFUSED:
        assert run.json()["error"]["code"] == "invalid_api_key"
        # Word for word what any other refused input gets: nothing of this one is echoed
        # (a substring check alone would flag an input such as "nvalid A", which the
        # refusal's own message contains).
        other = _run_quietly(argv, stdin="0" * 12)
        assert (run.out, run.err) == (other.out, other.err)
    elif len(presented.strip()) >= 8:
        assert presented.strip() not in run.out + run.err


# --- the demo --------------------------------------------------------------------------


def test_demo_in_a_temporary_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == EXIT_OK
    out = capsys.readouterr().out

    assert "HTTP 200" in out
    for refused in (
        "HTTP 403  InsufficientScopeError",
        "HTTP 403  InvalidKeyError",
        "HTTP 403  ExpiredKeyError",
        "HTTP 403  RevokedKeyError",
        "HTTP 503  BackendUnavailableError",
    ):
        assert refused in out
    shown = re.search(r"database: (\S+)", out)
    assert shown is not None
    database = Path(shown.group(1))
    assert not database.exists()
    assert "deleted" in out


def test_demo_keeps_a_database_it_was_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    database = tmp_path / "demo.db"

    assert main(["demo", "--database", str(database)]) == EXIT_OK
    out = capsys.readouterr().out

    with contextlib.closing(apikeys.create_key_manager(f"sqlite:///{database}")) as manager:
        page = manager.list_api_keys("user_123", include_invalid=True)
    by_name: dict[str, list[apikeys.APIKey]] = {}
    for key in page.items:
        by_name.setdefault(key.name, []).append(key)
    assert sorted(by_name) == ["CI pipeline", "old laptop", "short-lived"]
    assert len(by_name["CI pipeline"]) == 2  # the original and its rotation
    assert by_name["old laptop"][0].revocation_reason == "laptop lost"
    assert by_name["short-lived"][0].expired
    # Each secret the demo printed is the one stored for that key.
    printed = re.findall(r"secret  (\S+)", out)
    assert len(printed) == 2
    with contextlib.closing(apikeys.create_key_manager(f"sqlite:///{database}")) as manager:
        assert manager.validate_api_key(printed[1]).name == "CI pipeline"
    assert f"apikeys --backend sqlite:///{database} list user_123 --all" in out


def test_demo_refuses_an_existing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    database = tmp_path / "precious.db"
    database.write_bytes(b"do not touch")

    assert main(["demo", "--database", str(database)]) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err
    assert database.read_bytes() == b"do not touch"


def test_demo_refuses_a_missing_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["demo", "--database", str(tmp_path / "nope" / "demo.db")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def test_demo_does_not_take_a_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", "sqlite:///x.db", "demo"]) == EXIT_USAGE
    assert "fresh SQLite file" in capsys.readouterr().err


def test_demo_has_no_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "demo"]) == EXIT_USAGE
    assert "no --json output" in capsys.readouterr().err


class _InterruptedInput:
    """Standard input on which the user presses Ctrl-C."""

    def isatty(self) -> bool:
        return False

    def read(self, size: int = -1) -> str:
        raise KeyboardInterrupt


def test_interrupt_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    monkeypatch.setattr(sys, "stdin", _InterruptedInput())

    assert main(["--backend", url, "verify"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "apikeys: interrupted\n"


# --- resources: every manager closed, no descriptor leaked --------------------------


@dataclass
class Managers:
    """The SQLAlchemy managers built during a test, and those not closed yet."""

    built: int = 0
    unclosed: set[int] = field(default_factory=set)


@pytest.fixture
def managers(monkeypatch: pytest.MonkeyPatch) -> Managers:
    """Count the managers the CLI builds and closes (the real methods still run)."""
    from apikeys.backends.sqlalchemy import SQLAlchemyKeyManager

    ledger = Managers()
    build, close = SQLAlchemyKeyManager.__init__, SQLAlchemyKeyManager.close

    def counting_init(self: SQLAlchemyKeyManager, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        ledger.built += 1
        ledger.unclosed.add(id(self))

    def counting_close(self: SQLAlchemyKeyManager) -> None:
        ledger.unclosed.discard(id(self))
        close(self)

    monkeypatch.setattr(SQLAlchemyKeyManager, "__init__", counting_init)
    monkeypatch.setattr(SQLAlchemyKeyManager, "close", counting_close)
    return ledger


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["list", "user_1"], EXIT_OK),
        (["verify"], EXIT_OK),
        (["verify", "--scope", "admin:users"], EXIT_REFUSED),
        (["show", "NoSuchKey123"], EXIT_NOT_FOUND),
        (["rotate", "{revoked}"], EXIT_USAGE),  # refused by the backend, after opening it
        (["list", "user_1", "--limit", "0"], EXIT_USAGE),
        (["list", "user_1", "--backend", "sqlite:///{directory}/typo.db"], EXIT_UNAVAILABLE),
    ],
)
def test_every_outcome_closes_the_manager(
    cli: CLI, managers: Managers, tmp_path: Path, argv: list[str], code: int
) -> None:
    active = create(cli)
    revoked = create(cli)
    cli("revoke", revoked["id"])
    built_before = managers.built
    argv = [arg.format(revoked=revoked["id"], directory=tmp_path) for arg in argv]

    run = cli(*argv, stdin=active["secret"])

    assert run.code == code, run.err
    assert managers.built == built_before + 1
    assert managers.unclosed == set()


class _ClosedPipe:
    """A standard output whose reader has gone away: every write fails with EPIPE.

    ``descriptor`` is what ``fileno()`` answers; ``None`` stands for a stream
    without one (an in-memory stream when ``main()`` is called from Python).
    """

    def __init__(self, descriptor: int | None) -> None:
        self.descriptor = descriptor

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        if self.descriptor is None:
            raise io.UnsupportedOperation("fileno")
        return self.descriptor


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_a_closed_pipe_in_process_points_stdout_at_devnull_and_leaks_nothing(
    cli: CLI, managers: Managers, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    create(cli)  # the database exists
    read_end, write_end = os.pipe()
    try:
        before = _open_descriptors()
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", _ClosedPipe(write_end))
            code = main(["--backend", url, "create", "user_1", "second"])
        after = _open_descriptors()
        # write_end now points at devnull, so the pipe has no writer left: EOF.
        pipe_at_eof = os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        os.close(write_end)

    assert code == EXIT_OK
    assert pipe_at_eof
    assert after == before  # the devnull descriptor used for the redirection is closed
    assert managers.unclosed == set()


def test_a_closed_pipe_without_a_descriptor_ends_quietly(
    cli: CLI, managers: Managers, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    create(cli)
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", _ClosedPipe(None))
        code = main(["--backend", url, "list", "user_1"])

    assert code == EXIT_OK
    assert managers.unclosed == set()


# --- the installed console script -------------------------------------------------------


def _console_script() -> Path:
    script = Path(sys.executable).parent / ("apikeys.exe" if os.name == "nt" else "apikeys")
    assert script.exists(), f"the apikeys console script is not installed next to {sys.executable}"
    return script


def test_console_script_end_to_end(tmp_path: Path) -> None:
    script = _console_script()
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")
    }
    environment["APIKEYS_BACKEND"] = f"sqlite:///{tmp_path / 'keys.db'}"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=environment,
            timeout=60,
            check=False,
        )

    created = run("create", "user_1", "CI", "--scope", "read:data", "--json")
    assert created.returncode == EXIT_OK, created.stderr
    key = json.loads(created.stdout)

    assert run("verify", "--scope", "read:data", stdin=key["secret"]).returncode == EXIT_OK
    assert run("revoke", key["id"]).returncode == EXIT_OK
    refused = run("verify", stdin=key["secret"])
    assert refused.returncode == EXIT_REFUSED
    assert "API key has been revoked" in refused.stdout

    missing = run("show", "NoSuchKey123")
    assert missing.returncode == EXIT_NOT_FOUND
    broken = run("--backend", "nonsense", "list", "user_1")
    assert broken.returncode == EXIT_UNAVAILABLE
    bad = run("create", "user_1", "x", "--expires", "last week")
    assert bad.returncode == EXIT_USAGE
    for result in (missing, broken, bad):
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("apikeys: error: ")

    demo = run("demo")
    assert demo.returncode == EXIT_OK, demo.stderr
    assert "HTTP 403  RevokedKeyError" in demo.stdout


# A helper run in its own (single-threaded) interpreter: it starts ``apikeys verify``
# on a new pseudo-terminal, answers the prompt, and reports everything the
# terminal showed, so the test can check the key was read without being echoed.
_PTY_HELPER = """
import json, os, pty, sys, time

script, key = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(script, [script, "verify"])
shown = b""
deadline = time.monotonic() + 30
while b"API key: " not in shown and time.monotonic() < deadline:
    shown += os.read(fd, 1024)
os.write(fd, key.encode() + b"\\n")
while time.monotonic() < deadline:
    try:
        chunk = os.read(fd, 1024)
    except OSError:  # EIO: the child closed the terminal
        break
    if not chunk:
        break
    shown += chunk
_, status = os.waitpid(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "shown": shown.decode()}))
"""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX pseudo-terminal")
def test_verify_prompts_on_a_terminal_without_echo(cli: CLI, url: str) -> None:
    created = create(cli)
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")
    }
    environment["APIKEYS_BACKEND"] = url

    helper = subprocess.run(
        [sys.executable, "-c", _PTY_HELPER, str(_console_script()), created["secret"]],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )
    result = json.loads(helper.stdout)

    assert result["code"] == EXIT_OK
    assert result["shown"].startswith("API key: ")
    assert f"valid: key {created['id']}" in result["shown"]
    assert created["secret"] not in result["shown"]


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    """`apikeys list | head -1`: the reader is gone; no traceback, exit 0."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")
    }
    environment["APIKEYS_BACKEND"] = f"sqlite:///{tmp_path / 'keys.db'}"
    with contextlib.closing(apikeys.create_key_manager(environment["APIKEYS_BACKEND"])) as manager:
        for i in range(3):
            manager.create_api_key("user_1", f"key {i}")
    # The with block waits for the process and closes its pipes, even if the test fails.
    with subprocess.Popen(
        [str(_console_script()), "list", "user_1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    ) as process:
        assert process.stdout is not None
        process.stdout.close()  # the reader leaves before the first write: EPIPE for certain
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == EXIT_OK
    assert b"Traceback" not in stderr
    assert b"BrokenPipe" not in stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db.internal/app", "the database driver 'MySQLdb' for mysql is not installed"),
        ("mssql+pyodbc://db.internal/app", "'pyodbc' for mssql is not installed"),
    ],
)
def test_a_database_apikeys_does_not_ship_a_driver_for_is_not_sent_to_the_postgres_extra(
    cli: CLI, url: str, message: str
) -> None:
    run = cli("list", "user_1", "--backend", url)

    assert run.code == EXIT_UNAVAILABLE
    assert message in run.err
    assert "apikeys[postgres]'" in run.err  # named as what is tested, not as the fix
    assert "db.internal" not in run.err


def test_console_script_revokes_a_leaked_key_without_printing_it(tmp_path: Path) -> None:
    script = _console_script()
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")
    }
    environment["APIKEYS_BACKEND"] = f"sqlite:///{tmp_path / 'keys.db'}"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], input=stdin, capture_output=True, text=True,
            env=environment, timeout=60, check=False,
        )  # fmt: skip

    first = json.loads(run("create", "user_1", "laptop", "--json").stdout)
    second = json.loads(run("create", "user_1", "ci", "--json").stdout)
    by_argument = run("revoke", first["secret"], "--json")
    by_stdin = run("revoke", "-", "--reason", "leaked", stdin=second["secret"] + "\n")
    damaged = run("revoke", first["secret"][:-1])

    assert by_argument.returncode == by_stdin.returncode == EXIT_OK
    assert damaged.returncode == EXIT_USAGE
    for result in (by_argument, by_stdin, damaged):
        for secret in (first["secret"], second["secret"], first["secret"][:-1]):
            assert secret not in result.stdout + result.stderr
    for key in (first, second):
        refused = run("verify", stdin=key["secret"])
        assert refused.returncode == EXIT_REFUSED
        assert "revoked" in refused.stdout


def test_the_json_of_a_key_is_the_same_shape_as_over_http(cli: CLI, url: str) -> None:
    from apikeys.integrations._management import key_to_json

    created = create(cli, "--scope", "read:data")
    shown = cli("show", created["id"], "--json").json()
    manager = apikeys.create_key_manager(url)
    try:
        stored = key_to_json(manager.get_api_key(created["id"]))
    finally:
        manager.close()

    assert set(created) == set(stored) | {"secret"}
    assert shown.keys() == stored.keys()
    assert {name: shown[name] for name in shown if name != "lastUsedAt"} == {
        name: stored[name] for name in stored if name != "lastUsedAt"
    }
    assert shown["userId"] == "user_1"
    assert shown["status"] == "active"


def test_create_past_the_active_key_limit_is_refused_and_writes_nothing(
    cli: CLI, monkeypatch: pytest.MonkeyPatch, database: Path
) -> None:
    monkeypatch.setenv("APIKEYS_MAX_ACTIVE_KEYS_PER_OWNER", "1")
    create(cli)
    run = cli("create", "user_1", "one too many")

    assert run.code == EXIT_USAGE
    assert "max_active_keys_per_owner" in run.err
    assert run.out == ""
    assert row_count(database) == 1

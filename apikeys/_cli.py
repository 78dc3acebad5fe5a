"""The ``apikeys`` command line: manage keys in any backend from a shell.

The backend comes from ``--backend URL``, else from ``APIKEYS_BACKEND``, exactly
as :func:`apikeys.create_key_manager` resolves it. Every command prints a
human-readable result, or JSON with ``--json``. A secret is printed once, by
``create`` and ``rotate``, and never by any other command.

Exit codes:

====  ==========================================================================
0     success
1     ``verify``: the key was refused (invalid, expired, revoked, missing a scope)
2     usage error, bad input or the active-key limit reached; nothing was written
3     no key with that id
4     the backend is unavailable, or apikeys is misconfigured
130   interrupted (Ctrl-C)
====  ==========================================================================

Errors are one line on stderr (a JSON object with ``--json``), never a
traceback, and never contain a secret.

``show``, ``revoke``, ``delete`` and ``rotate`` take a key id or the whole key
(what one has in hand when a key has leaked), as an argument or, with ``-``,
on stdin. A whole key is parsed, and the command acts on its id; the key itself
is never printed, nor is anything that looks like one.

Only ``create`` (and ``demo``, on a file of its own) may start a new SQLite
database: every other command refuses a ``sqlite:`` URL whose file does not
exist (exit 4), so a mistyped path is an error instead of an empty key store.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from apikeys._arguments import KEEP, Keep, check_metadata
from apikeys._config import load_settings
from apikeys._errors import (
    APIKeysError,
    AuthenticationError,
    ConfigurationError,
    ExpiredKeyError,
    InvalidInputError,
    InvalidKeyError,
    KeyLimitReachedError,
    KeyNotFoundError,
    RevokedKeyError,
)
from apikeys._expiry import Expiration, parse_expiration, utcnow
from apikeys._factory import DEFAULT_BACKEND_URL, backend_scheme, create_key_manager
from apikeys._json import (
    key_status,
    key_to_json,
    new_key_to_json,
    page_to_json,
    verified_key_to_json,
)
from apikeys._keyformat import (
    BASE62_ALPHABET,
    CLERK_KEY_ID_RE,
    CLERK_SECRET_RE,
    generate_key,
    is_lookup_id,
    looks_like_key,
    try_parse_key_any_prefix,
)
from apikeys._models import APIKey, APIKeyPage
from apikeys._protocols import KeyManager
from apikeys._scopes import MANAGEMENT_SCOPE, normalize_scopes

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 130

BACKEND_ENV = "APIKEYS_BACKEND"
# A key is well under 100 characters; reading more from stdin would only waste memory.
_MAX_STDIN_CHARS = 4096
_MAX_DURATION_CHARS = 32
_DURATION_RE = re.compile(r"(?:\d+[wdhms])+")
_DURATION_PART_RE = re.compile(r"(\d+)([wdhms])")
_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")
_UNIT_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}

_EPILOG = """\
exit codes:
  0    success
  1    verify: the key was refused (invalid, expired, revoked, missing a scope)
  2    usage error, bad input or the active-key limit reached; nothing was written
  3    no key with that id
  4    the backend is unavailable, or apikeys is misconfigured
  130  interrupted

The backend is --backend URL, else $APIKEYS_BACKEND (e.g. sqlite:///apikeys.db,
postgresql+psycopg://user@host/db). Other settings come from APIKEYS_* variables.
"""


def exit_code_for(error: APIKeysError) -> int:
    """Return the documented exit code for an error (see the module docstring)."""
    if isinstance(error, AuthenticationError):
        return EXIT_REFUSED
    if isinstance(error, InvalidInputError | KeyLimitReachedError):
        return EXIT_USAGE
    if isinstance(error, KeyNotFoundError):
        return EXIT_NOT_FOUND
    # ConfigurationError, BackendUnavailableError, RateLimitedError and any later addition.
    return EXIT_UNAVAILABLE


# --- parsing of command-line values ---------------------------------------------------


def parse_duration(text: str) -> timedelta | None:
    """Parse a compact duration such as ``90d``, ``12h`` or ``1h30m``.

    Units are ``w``, ``d``, ``h``, ``m`` and ``s``. Returns ``None`` when ``text``
    is not written as a duration at all.

    Raises:
        InvalidInputError: It is a duration, but too long to represent.
    """
    text = text.strip()
    if len(text) > _MAX_DURATION_CHARS or not _DURATION_RE.fullmatch(text):
        return None
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART_RE.findall(text))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidInputError(f"duration {text!r} is too long") from None


_EXPIRES_ACCEPTED = (
    "a duration (90d, 12h, 2w, 1h30m), a date (2027-12-31), an ISO 8601 date-time or never"
)
# Options whose value may start with "-" (a negative duration is refused with a clear message,
# rather than by argparse taking the value for an option of its own).
_OPTIONS_WITH_SIGNED_VALUES = ("--expires", "--grace")


def parse_expiration_arg(text: str, *, field: str = "--expires") -> Expiration:
    """Turn an ``--expires`` value into what the core accepts, checking it now.

    Accepts ``never``, a duration from now (``90d``, ``12h``, ``1w``), a date
    (``2027-12-31``: valid through that day, UTC) or an ISO 8601 date-time.

    Raises:
        InvalidInputError: The value is unparseable, in the past or too far away.
    """
    cleaned = text.strip()
    if cleaned.lower() == "never":
        return None
    if cleaned[:1] in "-+" and parse_duration(cleaned[1:]) is not None:
        raise InvalidInputError(
            f"{field} {text!r}: a duration counts forward from now; write it without a sign",
            field=field,
        )
    duration = parse_duration(cleaned)
    value: Expiration = cleaned if duration is None else duration
    # Checked here too, so bad input fails before the backend is even opened.
    parse_expiration(value, field=field, accepted=_EXPIRES_ACCEPTED)
    return value


def parse_grace_arg(text: str) -> timedelta:
    """Turn a ``--grace`` value (a duration, or plain seconds) into a ``timedelta``."""
    cleaned = text.strip()
    duration = parse_duration(cleaned)
    if duration is not None:
        return duration
    if len(cleaned) <= _MAX_DURATION_CHARS and _SECONDS_RE.fullmatch(cleaned):
        try:
            return timedelta(seconds=float(cleaned))
        except OverflowError:
            raise InvalidInputError("--grace is too long", field="grace") from None
    raise InvalidInputError(
        f"--grace {text!r} is not a duration: use seconds or e.g. 30m, 12h, 7d", field="grace"
    )


def _scopes_arg(values: Sequence[str] | None, field: str = "--scope") -> tuple[str, ...]:
    # Each --scope may itself hold several scopes separated by spaces.
    return normalize_scopes([s for value in values or () for s in value.split()], field=field)


def _limit_change_arg(text: str | None) -> str | Keep | None:
    """``--rate-limit``/``--quota`` of ``limits``: omitted keeps, ``none`` removes."""
    if text is None:
        return KEEP
    return None if text.strip().lower() == "none" else text


def _metadata_arg(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidInputError("--metadata must be a JSON object", field="metadata") from None
    if not isinstance(value, dict):
        raise InvalidInputError("--metadata must be a JSON object", field="metadata")
    return check_metadata(value)


# --- output --------------------------------------------------------------------------


class Writer(Protocol):
    """Where a command writes: ``sys.stdout``, or anything with ``write``."""

    def write(self, text: str, /) -> object: ...


def terminal_safe(text: str) -> str:
    """Escape what a terminal would interpret (ANSI sequences, ``\\r``...); keep newlines.

    Names, reasons and metadata may come from any client of a backend; printed
    raw, an escape sequence in one could rewrite what the operator sees.
    """
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or char == "\n" else char.encode("unicode_escape").decode()
        for char in text
    )


class _TerminalSafeWriter:
    """Passes everything through :func:`terminal_safe` on its way to ``stream``."""

    def __init__(self, stream: Writer) -> None:
        self.stream = stream

    def write(self, text: str, /) -> object:
        return self.stream.write(terminal_safe(text))


def _when(moment: datetime | None, *, seconds: bool = True) -> str:
    if moment is None:
        return "-"
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _write_json(out: Writer, data: object) -> None:
    out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render rows as left-aligned columns under ``headers``."""
    rows = [list(row) for row in rows]
    widths = [
        max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)
    ]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def keys_table(keys: Iterable[APIKey]) -> str:
    """The table ``apikeys list`` prints (times in UTC)."""
    return format_table(
        [
            "ID",
            "NAME",
            "SCOPES",
            "CREATED (UTC)",
            "EXPIRES",
            "LAST USED",
            "STATUS",
            "CREATED BY",
            "HINT",
        ],
        [
            [
                key.id,
                key.name,
                " ".join(key.scopes) or "-",
                _when(key.created_at, seconds=False),
                _when(key.expires_at, seconds=False),
                _when(key.last_used_at, seconds=False),
                key_status(key),
                key.created_by or "-",
                key.hint,
            ]
            for key in keys
        ],
    )


def _details(key: APIKey) -> list[tuple[str, str]]:
    details = [
        ("id", key.id),
        ("user", key.user_id),
        ("name", key.name),
        ("scopes", " ".join(key.scopes) or "-"),
        ("status", key_status(key)),
        ("created", f"{_when(key.created_at)} UTC"),
        ("expires", f"{_when(key.expires_at)} UTC" if key.expires_at else "never"),
        ("last used", f"{_when(key.last_used_at)} UTC" if key.last_used_at else "never"),
    ]
    if key.revoked_at is not None:
        details.append(("revoked", f"{_when(key.revoked_at)} UTC"))
        details.append(("reason", key.revocation_reason or "-"))
    details.append(("created by", key.created_by or "-"))
    details.append(("rate limit", "-" if key.rate_limit is None else str(key.rate_limit)))
    details.append(("quota", "-" if key.quota is None else str(key.quota)))
    details.append(("hint", key.hint))
    if key.metadata:
        details.append(("metadata", json.dumps(key.metadata, sort_keys=True)))
    return details


def _write_details(out: Writer, details: Iterable[tuple[str, str]], indent: str = "  ") -> None:
    details = list(details)
    width = max(len(label) for label, _ in details)
    for label, value in details:
        out.write(f"{indent}{label.ljust(width)}  {value}\n")


def _write_secret(out: Writer, secret: str) -> None:
    out.write("\nSecret (shown only this once; store it now):\n")
    out.write(f"{secret}\n")


def _describe_error(error: APIKeysError) -> str:
    message = error.message
    if error.key_id and error.key_id not in message:
        message = f"{message} (key {error.key_id})"
    return message


def _error_json(error: APIKeysError) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.message,
        "statusCode": error.status_code,
        "keyId": error.key_id,
        "exitCode": exit_code_for(error),
    }


def _report_error(error: APIKeysError, *, as_json: bool) -> None:
    if as_json:
        sys.stderr.write(json.dumps({"error": _error_json(error)}, sort_keys=True) + "\n")
    else:
        sys.stderr.write(terminal_safe(f"apikeys: error: {_describe_error(error)}") + "\n")


# --- the backend ---------------------------------------------------------------------


def redact_password(text: str, url: str | None) -> str:
    """Remove a password that a database URL may carry from ``text``."""
    if not url:
        return text
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


def open_manager(url: str | None) -> KeyManager:
    """Build the manager for ``--backend`` (or ``APIKEYS_BACKEND`` when ``url`` is ``None``).

    Raises:
        ConfigurationError: The URL is malformed, names no known backend, or its
            driver is not installed. The message never repeats a URL's password.
    """
    effective = url or os.environ.get(BACKEND_ENV)
    try:
        return create_key_manager(url)
    except ConfigurationError as exc:
        if effective is None:
            raise ConfigurationError(
                f"{exc.message} (no --backend given and {BACKEND_ENV} is unset, so the"
                f" default {DEFAULT_BACKEND_URL} was tried)"
            ) from exc
        raise
    except Exception as exc:
        # Building a manager does no IO, so whatever fails here is configuration:
        # SQLAlchemy raises ValueError, ImportError or its ArgumentError for a
        # malformed URL or a missing driver. One line, without any password.
        first_line = str(exc).strip().split("\n", 1)[0]
        detail = redact_password(f"{type(exc).__name__}: {first_line}", effective)
        raise ConfigurationError(f"cannot open the backend ({detail})") from exc


def sqlite_file_of(url: str) -> str | None:
    """Return the file a ``sqlite:`` URL opens, or ``None`` when it opens no file.

    The SQLAlchemy backend reads the URL (see
    :func:`apikeys.backends._sqlalchemy.sqlite_file_of`); ``None`` as well for
    URLs of other backends and when SQLAlchemy is not installed.
    """
    if backend_scheme(url) != "sqlalchemy":
        return None  # clerk:// and the rest must not need SQLAlchemy
    try:
        from apikeys.backends._sqlalchemy import sqlite_file_of as file_of
    except ImportError:
        return None
    return file_of(url)


def refuse_missing_sqlite_file(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist, instead of letting SQLite create it.

    Raises:
        ConfigurationError: ``url`` names a SQLite file that does not exist. The
            message names the file's absolute path and nothing else of the URL.
    """
    path = sqlite_file_of(url)
    if path is not None and not os.path.exists(path):
        raise ConfigurationError(
            f"no SQLite database at {os.path.abspath(path)}: the file does not exist"
            " (check the path; 'apikeys create' starts a new database)"
        )


@contextlib.contextmanager
def _manager(args: argparse.Namespace, *, may_create: bool = False) -> Iterator[KeyManager]:
    """Open the backend for one command and close it however the command ends.

    Args:
        args: The parsed command line (its ``backend``).
        may_create: Whether the command may start a new SQLite file (``create``).
            Otherwise a missing file is refused once the manager is built (so that
            a malformed URL keeps its own error): building one opens no file.
    """
    manager = open_manager(args.backend)
    try:
        if not may_create:
            refuse_missing_sqlite_file(
                args.backend or load_settings().backend or DEFAULT_BACKEND_URL
            )
        yield manager
    finally:
        manager.close()


# --- commands ------------------------------------------------------------------------


def _cmd_create(args: argparse.Namespace, out: Writer) -> int:
    scopes = _scopes_arg(args.scope)
    expiration = None if args.expires is None else parse_expiration_arg(args.expires)
    metadata = _metadata_arg(args.metadata)
    # The one command that may start a database: that is how a new SQLite file begins.
    with _manager(args, may_create=True) as manager:
        new = manager.create_api_key(
            args.user_id,
            args.name,
            scopes,
            expiration,
            metadata=metadata,
            rate_limit=args.rate_limit,
            quota=args.quota,
        )
        # Printed before the manager closes: the secret exists nowhere else.
        if args.json:
            _write_json(out, new_key_to_json(new))
            return EXIT_OK
        out.write(f"Created API key {new.id} for {new.user_id}\n")
        _write_details(out, _details(new.api_key))
        _write_secret(out, new.secret)
    return EXIT_OK


def _cmd_list(args: argparse.Namespace, out: Writer) -> int:
    with _manager(args) as manager:
        page: APIKeyPage = manager.list_api_keys(
            args.user_id, include_invalid=args.all, limit=args.limit, offset=args.offset
        )
    if args.json:
        _write_json(out, page_to_json(page))
        return EXIT_OK
    if not page.items:
        hint = "" if args.all else " (add --all to include revoked and expired keys)"
        out.write(f"No {'' if args.all else 'active '}keys for {args.user_id}{hint}.\n")
        return EXIT_OK
    out.write(keys_table(page.items) + "\n")
    shown_to = page.offset + len(page.items)
    summary = f"\n{page.offset + 1}-{shown_to} of {page.total} key(s)"
    if page.has_more:
        summary += f"; next page: --offset {shown_to}"
    out.write(summary + "\n")
    return EXIT_OK


_ARGUMENT_NOTE = (
    "apikeys: note: a key given as an argument shows in ps and shell history;"
    " pipe it on stdin instead ('-')\n"
)


def _read_stdin(prompt: str) -> str:
    """One value from stdin, never echoed: a hidden prompt on a terminal, else the piped text."""
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(prompt)
    if sys.stdin is not None:
        return sys.stdin.read(_MAX_STDIN_CHARS)
    return ""


_NOT_A_KNOWN_KEY = (
    "the backend does not accept this key (unknown, or already revoked or expired), so it"
    " cannot tell its id: give the key id instead (apikeys list USER --all shows them)"
)


def _id_of_clerk_secret(manager: KeyManager, secret: str) -> str:
    """The id of a Clerk key given by its secret: Clerk tells it when verifying the secret."""
    try:
        return manager.validate_api_key(secret).id
    except (RevokedKeyError, ExpiredKeyError) as refused:
        if refused.key_id:
            return refused.key_id
        raise InvalidInputError(_NOT_A_KNOWN_KEY, field="key_id") from None
    except InvalidKeyError:
        raise InvalidInputError(_NOT_A_KNOWN_KEY, field="key_id") from None


def key_id_argument(args: argparse.Namespace, manager: KeyManager) -> str:
    """The key id a command acts on, from ``args.key_id``: an id, or a whole key.

    ``-`` reads it from stdin. A whole local key (any prefix) gives its lookup
    id, checked by its checksum, without IO; a Clerk secret gives the id Clerk
    reports for it. Anything else that looks like a key is refused without
    being repeated; any other text is passed on as an id.

    Raises:
        InvalidInputError: Nothing was given, or a damaged or unknown key.
    """
    given = args.key_id
    from_stdin = given == "-"
    text = (_read_stdin("API key or key id: ") if from_stdin else given).strip()
    if not text:
        raise InvalidInputError("no key id given: pass one, or pipe the key on stdin with '-'")
    if is_lookup_id(text) or CLERK_KEY_ID_RE.fullmatch(text):
        return text
    parsed = try_parse_key_any_prefix(text)
    is_clerk_secret = parsed is None and CLERK_SECRET_RE.fullmatch(text) is not None
    if (parsed is not None or is_clerk_secret) and not from_stdin:
        sys.stderr.write(_ARGUMENT_NOTE)
    if parsed is not None:
        return parsed.id
    if is_clerk_secret:
        return _id_of_clerk_secret(manager, text)
    if looks_like_key(text):
        raise InvalidInputError(
            "that looks like an API key, but not a whole, valid one (a character is wrong,"
            " missing or extra): give the key id, or the whole key exactly as issued",
            field="key_id",
        )
    return text


def _write_key(args: argparse.Namespace, out: Writer, key: APIKey) -> int:
    """One key's details (``show``, ``limits``), or its JSON with ``--json``."""
    if args.json:
        _write_json(out, key_to_json(key))
    else:
        _write_details(out, _details(key), indent="")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace, out: Writer) -> int:
    with _manager(args) as manager:
        key = manager.get_api_key(key_id_argument(args, manager))
    return _write_key(args, out, key)


def _cmd_limits(args: argparse.Namespace, out: Writer) -> int:
    rate_limit = _limit_change_arg(args.rate_limit)
    quota = _limit_change_arg(args.quota)
    with _manager(args) as manager:
        key = manager.update_api_key_limits(
            key_id_argument(args, manager), rate_limit=rate_limit, quota=quota
        )
    return _write_key(args, out, key)


def _cmd_revoke(args: argparse.Namespace, out: Writer) -> int:
    with _manager(args) as manager:
        key = manager.revoke_api_key(key_id_argument(args, manager), reason=args.reason)
    if args.json:
        _write_json(out, key_to_json(key))
        return EXIT_OK
    out.write(f"Revoked API key {key.id} at {_when(key.revoked_at)} UTC")
    out.write(f" ({key.revocation_reason})\n" if key.revocation_reason else "\n")
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace, out: Writer) -> int:
    with _manager(args) as manager:
        key_id = key_id_argument(args, manager)
        manager.delete_api_key(key_id)
    if args.json:
        _write_json(out, {"deleted": key_id})
    else:
        out.write(f"Deleted API key {key_id}\n")
    return EXIT_OK


def _cmd_rotate(args: argparse.Namespace, out: Writer) -> int:
    grace = parse_grace_arg(args.grace)
    expiration: Expiration | Keep = KEEP
    if args.expires is not None:
        expiration = parse_expiration_arg(args.expires)
    with _manager(args) as manager:
        key_id = key_id_argument(args, manager)
        new = manager.rotate_api_key(key_id, grace=grace, expiration=expiration)
        # The rotation is done and its secret exists only here: a failure to read
        # the old key's new state must not keep the secret from being printed.
        try:
            old: APIKey | None = manager.get_api_key(key_id)
        except APIKeysError:
            old = None
        if args.json:
            data = new_key_to_json(new)
            data["replaces"] = None if old is None else key_to_json(old)
            _write_json(out, data)
            return EXIT_OK
        if old is None:
            until = "as the backend decides (its state could not be read back)"
        elif old.revoked_at is not None:
            until = "now"
        else:
            until = f"at {_when(old.expires_at)} UTC"
        out.write(f"Rotated API key {key_id} -> {new.id}; the old key stops working {until}\n")
        _write_details(out, _details(new.api_key))
        _write_secret(out, new.secret)
    return EXIT_OK


def _read_key(args: argparse.Namespace) -> str:
    """The key to verify: from ``--key-env``, the argument, or stdin (never echoed)."""
    if args.key_env is not None and args.key is not None:
        raise InvalidInputError("give the key either as an argument or with --key-env, not both")
    if args.key_env is not None:
        value = os.environ.get(args.key_env)
        if value is None:
            raise InvalidInputError(f"environment variable {args.key_env} is not set")
    elif args.key is not None and args.key != "-":
        value = args.key
        sys.stderr.write(
            "apikeys: note: a key given as an argument shows in ps and shell history;"
            " pipe it on stdin or use --key-env instead\n"
        )
    else:
        value = _read_stdin("API key: ")
    value = value.strip()
    if not value:
        raise InvalidInputError(
            "no API key given: pipe it on stdin, or name an environment variable with --key-env"
        )
    return value


def _cmd_verify(args: argparse.Namespace, out: Writer) -> int:
    if any(not value.split() for value in args.scope or ()):
        # As required_scopes everywhere: a blank scope never means "no scope required".
        raise InvalidInputError(
            "--scope is blank; leave it out to require no scope", field="--scope"
        )
    required = _scopes_arg(args.scope, field="--scope")
    secret = _read_key(args)
    with _manager(args) as manager:
        try:
            verified = manager.validate_api_key(secret, required_scopes=required)
        except AuthenticationError as refused:
            if args.json:
                _write_json(out, {"valid": False, "error": _error_json(refused)})
            else:
                out.write(
                    f"refused: {_describe_error(refused)}"
                    f" [{refused.code}, HTTP {refused.status_code}]\n"
                )
            return EXIT_REFUSED
    if args.json:
        _write_json(out, {"valid": True, "key": verified_key_to_json(verified)})
        return EXIT_OK
    out.write(f"valid: key {verified.id} ({verified.name}) of {verified.user_id}\n")
    out.write(f"  scopes   {' '.join(verified.scopes) or '-'}\n")
    expires = f"{_when(verified.expires_at)} UTC" if verified.expires_at else "never"
    out.write(f"  expires  {expires}\n")
    return EXIT_OK


# --- the demo ------------------------------------------------------------------------


class _Demo:
    """A guided tour of the SDK on a fresh SQLite file, printed for a person."""

    user_id = "user_123"

    def __init__(self, out: Writer, database: Path, directory: Path) -> None:
        self.out = out
        self.database = database
        self.directory = directory
        self.step = 0

    def heading(self, text: str) -> None:
        self.step += 1
        self.out.write(f"\n{self.step}. {text}\n")

    def line(self, text: str = "") -> None:
        self.out.write(f"   {text}\n" if text else "\n")

    def attempt(self, manager: KeyManager, label: str, key: str, *scopes: str) -> None:
        """Validate ``key`` and print what an HTTP integration would answer."""
        try:
            verified = manager.validate_api_key(key, required_scopes=scopes)
        except APIKeysError as error:
            self.line(
                f"{label:<34} -> HTTP {error.status_code}  {type(error).__name__}: {error.message}"
            )
        else:
            self.line(
                f"{label:<34} -> HTTP 200  {verified.user_id}, scopes {' '.join(verified.scopes)}"
            )

    def run(self) -> None:
        from apikeys.backends._sqlalchemy import sqlite_url

        url = sqlite_url(self.database)
        self.out.write(f"apikeys demo on a fresh SQLite database: {self.database}\n")
        manager = create_key_manager(url)
        try:
            self._tour(manager)
        finally:
            manager.close()
        self._fail_closed()

    def _tour(self, manager: KeyManager) -> None:
        self.heading(f"Create a key for {self.user_id} (scopes read:data write:data, 90 days)")
        new = manager.create_api_key(
            self.user_id, "CI pipeline", ["read:data", "write:data"], timedelta(days=90)
        )
        self.line(f"id      {new.id}   (public: safe to log and to put in URLs)")
        self.line(f"secret  {new.secret}")
        self.line("        shown once; the database keeps only its argon2id hash")

        self.heading("Validate it, as a protected route would")
        self.attempt(manager, "the key", new.secret)
        self.attempt(manager, "the key, route needs read:data", new.secret, "read:data")
        self.attempt(manager, "the key, route needs admin:users", new.secret, "admin:users")

        self.heading("What other keys get")
        self.attempt(manager, "one character changed (typo)", _typo(new.secret))
        self.line("  (rejected by the checksum, before any database read)")
        prefix = new.secret.rpartition("_")[0]
        impostor = generate_key(prefix, id=new.id).key
        self.attempt(manager, "right id, wrong secret", impostor)
        self.line("  (same answer as a typo: a guess learns nothing about the key)")

        lifetime = timedelta(milliseconds=300)
        short = manager.create_api_key(self.user_id, "short-lived", ["read:data"], lifetime)
        self.attempt(manager, "a key with a 0.3 s lifetime", short.secret)
        if short.expires_at is not None:  # always set here; the check narrows the type
            time.sleep(max(0.0, (short.expires_at - utcnow()).total_seconds()) + 0.05)
        self.attempt(manager, "the same key 0.3 s later", short.secret)

        laptop = manager.create_api_key(self.user_id, "old laptop", ["read:data"])
        self.attempt(manager, "another key", laptop.secret)
        manager.revoke_api_key(laptop.id, reason="laptop lost")
        self.attempt(manager, "that key after revoke", laptop.secret)

        self.heading(f"List {self.user_id}'s keys (apikeys list {self.user_id} --all)")
        self._table(manager)

        self.heading("Rotate the first key with a 60 s grace period")
        rotated = manager.rotate_api_key(new.id, grace=timedelta(seconds=60))
        self.line(f"new id  {rotated.id}, same owner, name, scopes and expiry")
        self.line(f"secret  {rotated.secret}")
        self.attempt(manager, "the new key", rotated.secret)
        self.attempt(manager, "the old key, during the grace", new.secret)
        self._table(manager)

    def _table(self, manager: KeyManager) -> None:
        page = manager.list_api_keys(self.user_id, include_invalid=True)
        for row in keys_table(page.items).splitlines():
            self.line(row)

    def _fail_closed(self) -> None:
        self.heading("Fail closed: the same check against a database that cannot be reached")
        from apikeys.backends._sqlalchemy import sqlite_url

        unreachable = create_key_manager(sqlite_url(self.directory / "missing" / "keys.db"))
        try:
            self.attempt(unreachable, "a well-formed key", generate_key().key)
        finally:
            unreachable.close()


def _typo(key: str) -> str:
    """Return ``key`` with one character of its secret part replaced."""
    position = len(key) - 10
    replacement = BASE62_ALPHABET[(BASE62_ALPHABET.index(key[position]) + 1) % 62]
    return key[:position] + replacement + key[position + 1 :]


def _cmd_demo(args: argparse.Namespace, out: Writer) -> int:
    if args.backend is not None:
        raise InvalidInputError("demo always uses a fresh SQLite file; use --database PATH")
    if args.json:
        raise InvalidInputError("demo prints a tour for people; it has no --json output")
    if args.database is None:
        with tempfile.TemporaryDirectory(prefix="apikeys-demo-") as directory:
            _Demo(out, Path(directory) / "demo.db", Path(directory)).run()
        out.write("\nDone. The temporary database has been deleted.\n")
        return EXIT_OK
    database = Path(args.database).resolve()
    if database.exists():
        raise InvalidInputError(
            f"{database} already exists: the demo writes to a fresh file", field="database"
        )
    if not database.parent.is_dir():
        raise InvalidInputError(f"directory {database.parent} does not exist", field="database")
    with tempfile.TemporaryDirectory(prefix="apikeys-demo-") as directory:
        _Demo(out, database, Path(directory)).run()
    from apikeys.backends._sqlalchemy import sqlite_url

    out.write(
        f"\nDone. The database is kept; try:\n"
        f"  apikeys --backend {sqlite_url(database)} list {_Demo.user_id} --all\n"
    )
    return EXIT_OK


# --- argument parsing ----------------------------------------------------------------


def _common_options() -> argparse.ArgumentParser:
    # Accepted both before and after the command; SUPPRESS keeps a value given
    # before the command from being reset by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"backend URL (default: ${BACKEND_ENV})",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``apikeys`` command."""
    from apikeys import __version__

    common = _common_options()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="apikeys",
        description="Issue, list, revoke, rotate and verify API keys.",
        epilog=_EPILOG,
        formatter_class=formatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"apikeys {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=_EPILOG,
            formatter_class=formatter,
            parents=[common],
        )
        sub.set_defaults(handler=handler)
        return sub

    expires_help = (
        "never, a duration from now (90d, 12h, 2w, 1h30m), a date (2027-12-31: valid"
        " through that day, UTC) or an ISO 8601 date-time"
    )
    create = command("create", "issue a key and print its secret once", _cmd_create)
    create.add_argument("user_id", help="the owner of the key")
    create.add_argument("name", help="a label for the key, e.g. 'CI pipeline'")
    create.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="a scope such as read:data or data:* (repeat, or separate with spaces);"
        f" {MANAGEMENT_SCOPE} lets the key manage its owner's keys through /api-keys",
    )
    create.add_argument("--expires", metavar="WHEN", help=f"expiry (default never): {expires_help}")
    create.add_argument("--metadata", metavar="JSON", help="a JSON object stored with the key")
    limit_units = "units s, m (minutes), h, d, w"
    create.add_argument(
        "--rate-limit",
        metavar="N/WINDOW",
        help=f"at most N calls per window, e.g. 100/1m ({limit_units})",
    )
    create.add_argument(
        "--quota",
        metavar="N/PERIOD",
        help=f"at most N credits per period, e.g. 100000/30d, or N once ({limit_units})",
    )

    listing = command("list", "list a user's keys (never their secrets)", _cmd_list)
    listing.add_argument("user_id")
    listing.add_argument("--all", action="store_true", help="include revoked and expired keys")
    listing.add_argument("--limit", type=int, default=50, help="page size, 1-100 (default 50)")
    listing.add_argument("--offset", type=int, default=0, help="keys to skip (default 0)")

    def key_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "key_id",
            metavar="KEY",
            help="the key id, or the whole key (a leaked one, say): '-' reads it from stdin,"
            " which keeps it out of ps and shell history; a whole key is never printed",
        )

    show = command("show", "show one key (never its secret)", _cmd_show)
    key_argument(show)

    limits = command("limits", "change a key's rate limit and quota", _cmd_limits)
    key_argument(limits)
    limits.add_argument(
        "--rate-limit",
        metavar="N/WINDOW",
        help="the new rate limit (100/1m), or 'none' to remove it; omitted: kept",
    )
    limits.add_argument(
        "--quota",
        metavar="N/PERIOD",
        help="the new quota (100000/30d, or N once), or 'none' to remove it; omitted: kept."
        " Setting a quota starts its first period now, with nothing spent",
    )

    revoke = command("revoke", "revoke a key at once (idempotent)", _cmd_revoke)
    key_argument(revoke)
    revoke.add_argument("--reason", help="why, kept with the key")

    delete = command("delete", "delete a key for good", _cmd_delete)
    key_argument(delete)

    rotate = command("rotate", "replace a key and print the new secret once", _cmd_rotate)
    key_argument(rotate)
    rotate.add_argument(
        "--grace",
        default="0",
        metavar="DURATION",
        help="how long the old key keeps working: seconds or 30m, 1d... (default 0: stops now)",
    )
    rotate.add_argument(
        "--expires",
        metavar="WHEN",
        help=f"the new key's expiry (default: the old one's): {expires_help}",
    )

    verify = command(
        "verify",
        "check a key; reads it from stdin unless --key-env or an argument gives it",
        _cmd_verify,
    )
    verify.add_argument(
        "key",
        nargs="?",
        help="the key itself (visible to other users in ps and kept in shell history:"
        " prefer stdin or --key-env); '-' reads stdin",
    )
    verify.add_argument(
        "--key-env", metavar="VAR", help="read the key from environment variable VAR"
    )
    verify.add_argument(
        "--scope", action="append", metavar="SCOPE", help="a scope the key must hold (repeatable)"
    )

    demo = commands.add_parser(
        "demo",
        help="a guided tour on a fresh SQLite database",
        description="Create, validate, refuse, list and rotate keys on a fresh SQLite file.",
    )
    demo.add_argument(
        "--database", metavar="PATH", help="a new SQLite file to keep (default: a temporary one)"
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``apikeys`` command and return its exit code.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(_join_signed_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_request:  # --help, --version and usage errors
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_USAGE
    args.backend = getattr(args, "backend", None)
    args.json = getattr(args, "json", False)
    try:
        result: int = args.handler(args, _TerminalSafeWriter(sys.stdout))
    except APIKeysError as error:
        _report_error(error, as_json=args.json)
        return exit_code_for(error)
    except KeyboardInterrupt:
        sys.stderr.write("apikeys: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`apikeys list | head`): exit quietly, as Unix tools do.
        _silence_stdout()
        return EXIT_OK
    return result


def _join_signed_values(argv: list[str]) -> list[str]:
    """Write ``--expires -5d`` as ``--expires=-5d``, so the value reaches its own check."""
    joined: list[str] = []
    words = iter(argv)
    for word in words:
        if word in _OPTIONS_WITH_SIGNED_VALUES:
            value = next(words, None)
            if value is not None and value.startswith("-") and value != "--":
                joined.append(f"{word}={value}")
                continue
            joined.append(word)
            if value is not None:
                joined.append(value)
            continue
        joined.append(word)
    return joined


def _silence_stdout() -> None:
    """Point stdout's descriptor at devnull, so the interpreter's final flush cannot fail again."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        # No descriptor (stdout is None, or an in-memory stream when main() is
        # called from Python): nothing will be flushed to a closed pipe.
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)  # dup2 made a copy; this one would only leak


if __name__ == "__main__":
    sys.exit(main())

"""The one key a request presents, and the refusal a client reads when it presents none or more.

Every case runs through both readers, a WSGI environ and an ASGI scope, which must agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from apikeys import InvalidKeyError, MissingKeyError
from apikeys.integrations._credentials import (
    MAX_CREDENTIAL_LENGTH,
    ASGICredentials,
    WSGICredentials,
)
from apikeys.integrations._settings import IntegrationSettings

KEY = "apk_1secret"
OTHER = "apk_1other"
MISSING = "An API key is required"
INVALID = "Invalid API key"
REPEATED = "An API key header was sent more than once, or holds a list; send one key"
SEVERAL = "Several different API keys were sent; send exactly one"
NOT_IN_QUERY = (
    "API keys are not accepted in the query string; send an 'Authorization: Bearer <key>' header"
)

DEFAULTS = IntegrationSettings()
FROM_QUERY = IntegrationSettings(allow_query_param=True)


def answers(
    lines: list[tuple[str, str]], query: str = "", settings: IntegrationSettings = DEFAULTS
) -> object:
    """The key, or the refusal ``(error class, message)``, that both readers give."""
    environ: dict[str, Any] = {"QUERY_STRING": query}
    for name, value in lines:
        key = "HTTP_" + name.upper().replace("-", "_")
        # As a WSGI server joins a repeated header.
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    scope = {
        "type": "http",
        "headers": [(name.lower().encode(), value.encode("latin-1")) for name, value in lines],
        "query_string": query.encode(),
    }
    outcomes: list[object] = []
    for reader in (WSGICredentials(environ), ASGICredentials(scope)):
        try:
            outcomes.append(reader.credential(settings))
        except (MissingKeyError, InvalidKeyError) as exc:
            outcomes.append((type(exc), exc.message))
    wsgi, asgi = outcomes
    assert wsgi == asgi
    return wsgi


@pytest.mark.parametrize(
    "lines",
    [
        [("Authorization", f"Bearer {KEY}")],
        [("Authorization", f"bearer\t{KEY}")],
        [("Authorization", f" BEARER   {KEY} \r\n")],
        [("X-API-Key", KEY)],
        [("X-API-Key", f"Bearer {KEY}")],
        [("X-API-Key", f"\t{KEY}\t")],
        [("Authorization", f"Bearer {KEY}"), ("X-API-Key", KEY)],  # the same key twice
        [("Authorization", "Basic dXNlcjpwYXNz"), ("X-API-Key", KEY)],
    ],
)
def test_the_key_is_read_from_either_header(lines: list[tuple[str, str]]) -> None:
    assert answers(lines) == KEY


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [("Authorization", "Basic dXNlcjpwYXNz")],
        [("Authorization", "Bearer")],
        [("Authorization", "Bearer   ")],
        [("Authorization", f"Bearerish {KEY}")],
        [("X-API-Key", "")],
        [("X-API-Key", " \t")],
        [("X-Token", KEY)],
    ],
)
def test_no_key_is_a_401_asking_for_one(lines: list[tuple[str, str]]) -> None:
    assert answers(lines) == (MissingKeyError, MISSING)


@pytest.mark.parametrize(
    "value",
    [
        "k" * (MAX_CREDENTIAL_LENGTH + 1),
        "k" * 9000,  # longer than any header value is parsed
        "apk_1sécret",
        "apk_1se\x7fcret",
        "apk_1 secret",
        "Basic dXNlcjpwYXNz",  # another scheme, in a header that holds a bare key
    ],
)
def test_what_cannot_be_a_key_is_refused_with_one_message(value: str) -> None:
    assert answers([("X-API-Key", value)]) == (InvalidKeyError, INVALID)


def test_the_longest_key_is_read() -> None:
    longest = "k" * MAX_CREDENTIAL_LENGTH
    assert answers([("X-API-Key", longest)]) == longest


@pytest.mark.parametrize(
    "lines",
    [
        [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {KEY}")],
        [("X-API-Key", KEY), ("X-API-Key", OTHER)],
        [("X-API-Key", f"{KEY},{OTHER}")],
        # The repeated header is named whatever comes first, and whatever else is wrong.
        [("X-API-Key", "apk_1sécret"), ("Authorization", f"Bearer {KEY}"), ("Authorization", "x")],
        [("Authorization", f"Bearer {KEY}"), ("Authorization", "x"), ("X-API-Key", "é")],
    ],
)
def test_a_repeated_key_header_is_refused_saying_so(lines: list[tuple[str, str]]) -> None:
    assert answers(lines) == (InvalidKeyError, REPEATED)


def test_two_different_keys_are_refused_saying_so() -> None:
    lines = [("Authorization", f"Bearer {KEY}"), ("X-API-Key", OTHER)]
    assert answers(lines) == (InvalidKeyError, SEVERAL)
    assert answers([("X-API-Key", KEY)], f"api_key={OTHER}", FROM_QUERY) == (
        InvalidKeyError,
        SEVERAL,
    )


@pytest.mark.parametrize("query", [f"api_key={KEY}", f"x=1&&api_key={KEY}", f"api%5Fkey={KEY}"])
def test_a_key_in_the_query_string_is_read_only_when_allowed(query: str) -> None:
    assert answers([], query, FROM_QUERY) == KEY
    assert answers([], query) == (MissingKeyError, NOT_IN_QUERY)
    # A key in the headers: the query string is not even read.
    assert answers([("X-API-Key", OTHER)], query) == OTHER


@pytest.mark.parametrize("query", ["", "api_key", "api_key=", "x=1", "apikey=1", "api_key2=1"])
def test_a_query_string_without_a_key_is_no_key(query: str) -> None:
    expected = NOT_IN_QUERY if query.partition("=")[0] == "api_key" else MISSING
    assert answers([], query) == (MissingKeyError, expected)
    assert answers([], query, FROM_QUERY) == (MissingKeyError, MISSING)


def test_a_query_value_is_decoded_as_a_form_value() -> None:
    assert answers([], "api_key=apk_1a%2Db", FROM_QUERY) == "apk_1a-b"
    assert answers([], "api_key=apk_1a+b", FROM_QUERY) == (InvalidKeyError, INVALID)
    renamed = IntegrationSettings(allow_query_param=True, query_param="token")
    assert answers([], f"api_key={OTHER}&token={KEY}", renamed) == KEY


def test_configured_header_names_match_in_any_case() -> None:
    settings = IntegrationSettings(header_names=("X-Token",))
    assert answers([("x-token", KEY)], settings=settings) == KEY
    assert answers([("X-API-Key", KEY)], settings=settings) == (MissingKeyError, MISSING)

"""What an ``/api-keys`` call may ask for: its body, paging, and the rules on what a key may mint.

Each refusal is asserted as the client sees it: the error class (and so the HTTP status),
and every field error with its message, in order.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikeys import (
    InsufficientScopeError,
    InvalidInputError,
    LimitEscalationError,
    Quota,
    RateLimit,
    VerifiedKey,
)
from apikeys._errors import ForeignUserError, InvalidRequestError, LifetimeEscalationError
from apikeys._expiry import utcnow
from apikeys.integrations._management_arguments import (
    DEFAULT_PAGE_SIZE,
    CreateArguments,
    create_arguments,
    delete_arguments,
    first_values,
    page_arguments,
    parse_json_body,
)
from apikeys.integrations._settings import IntegrationSettings

SETTINGS = IntegrationSettings(max_body_bytes=256)
FUTURE = utcnow().replace(microsecond=0) + timedelta(days=30)
LATER = FUTURE + timedelta(days=1)
SOONER = FUTURE - timedelta(days=1)


def caller(**fields: Any) -> VerifiedKey:
    values: dict[str, Any] = {"id": "caller-key", "user_id": "alice", "name": "admin"}
    return VerifiedKey(**(values | fields))


def refused(error: type[InvalidInputError], call: Any, *args: Any) -> InvalidInputError:
    with pytest.raises(error) as caught:
        call(*args)
    assert caught.value.status_code == 422
    return caught.value


def field_errors(call: Any, *args: Any) -> list[tuple[str, str]]:
    error = refused(InvalidRequestError, call, *args)
    assert isinstance(error, InvalidRequestError)
    return [(problem.field, problem.message) for problem in error.errors]


# --- bodies -------------------------------------------------------------------------------------


def test_a_body_at_the_size_cap_is_read_and_one_byte_more_is_refused() -> None:
    at_cap = b'{"name": "k"}'.ljust(256)
    assert parse_json_body(at_cap, SETTINGS) == {"name": "k"}
    assert field_errors(parse_json_body, at_cap + b" ", SETTINGS) == [
        ("body", "must be at most 256 bytes")
    ]


@pytest.mark.parametrize("body", [b"", b"  \r\n\t "])
def test_an_empty_body_is_an_empty_object(body: bytes) -> None:
    assert parse_json_body(body, SETTINGS) == {}


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"null",
        b"1",
        b'"x"',
        b"{",
        b"\xff{}",
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b"{'a': 1}",
    ],
)
def test_anything_but_one_json_object_is_refused(body: bytes) -> None:
    assert field_errors(parse_json_body, body, SETTINGS) == [("body", "must be a JSON object")]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"name": "a", "name": "b"}', "name"), (b'{"metadata": {"x": 1, "x": 2}}', "x")],
)
def test_a_field_given_twice_is_refused_at_any_depth(body: bytes, field: str) -> None:
    assert field_errors(parse_json_body, body, SETTINGS) == [(field, "appears more than once")]


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=5))
def test_every_json_object_within_the_cap_reads_back(value: dict[str, Any]) -> None:
    body = json.dumps(value).encode()
    assert parse_json_body(body, IntegrationSettings()) == value


# --- query strings and paging --------------------------------------------------------------------


def test_the_first_of_repeated_query_values_wins() -> None:
    pairs = [("id", "first"), ("reason", "r"), ("id", "second")]
    assert first_values(pairs) == {"id": "first", "reason": "r"}
    assert first_values({"id": ["a", "b"]}) == {"id": "a"}


def test_paging_defaults() -> None:
    assert page_arguments({}) == (DEFAULT_PAGE_SIZE, 0, False)
    assert DEFAULT_PAGE_SIZE == 50


@pytest.mark.parametrize(("text", "limit"), [("1", 1), ("100", 100), (" 7 ", 7), ("007", 7)])
def test_a_page_size_from_1_to_100_is_taken(text: str, limit: int) -> None:
    assert page_arguments({"limit": text}) == (limit, 0, False)


@pytest.mark.parametrize("text", ["0", "101", "-1", "1.5", "", "ten", "1e2", "0000000001000"])
def test_any_other_page_size_is_refused(text: str) -> None:
    assert field_errors(page_arguments, {"limit": text}) == [
        ("limit", "must be an integer from 1 to 100")
    ]


@pytest.mark.parametrize(("text", "offset"), [("0", 0), ("999999999", 999_999_999), (" 3", 3)])
def test_an_offset_of_up_to_nine_digits_is_taken(text: str, offset: int) -> None:
    assert page_arguments({"offset": text}) == (DEFAULT_PAGE_SIZE, offset, False)


@pytest.mark.parametrize("text", ["-1", "1000000000", "x", "", "+1"])
def test_any_other_offset_is_refused(text: str) -> None:
    assert field_errors(page_arguments, {"offset": text}) == [
        ("offset", "must be a non-negative integer")
    ]


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("true", True),
        ("1", True),
        (" TRUE ", True),
        ("false", False),
        ("0", False),
        ("False", False),
    ],
)
def test_include_invalid_reads_true_or_false(text: str, flag: bool) -> None:
    assert page_arguments({"includeInvalid": text}) == (DEFAULT_PAGE_SIZE, 0, flag)


@pytest.mark.parametrize("text", ["yes", "", "2", "on"])
def test_include_invalid_refuses_anything_else(text: str) -> None:
    assert field_errors(page_arguments, {"includeInvalid": text}) == [
        ("includeInvalid", "must be true or false")
    ]


def test_every_paging_error_is_listed_at_once() -> None:
    query = {"limit": "0", "offset": "-1", "includeInvalid": "maybe"}
    assert field_errors(page_arguments, query) == [
        ("limit", "must be an integer from 1 to 100"),
        ("offset", "must be a non-negative integer"),
        ("includeInvalid", "must be true or false"),
    ]


# --- creation: the body ----------------------------------------------------------------------------


def test_a_name_alone_makes_a_key_like_the_caller() -> None:
    assert create_arguments({"name": " ci "}, caller()) == CreateArguments(
        name="ci", scopes=(), expiration=None, metadata={}, rate_limit=None, quota=None
    )


def test_every_field_is_read() -> None:
    body = {
        "name": "ci",
        "scopes": ["read:data", "write:data", "read:data"],
        "expiration": FUTURE.isoformat(),
        "userId": "alice",
        "metadata": {"team": "ops"},
        "rateLimit": {"limit": 10, "window": 60},
        "quota": {"limit": 100, "period": 3600},
    }
    held = caller(scopes=("read:data", "write:data"))
    assert create_arguments(body, held) == CreateArguments(
        name="ci",
        scopes=("read:data", "write:data"),
        expiration=FUTURE,
        metadata={"team": "ops"},
        rate_limit=RateLimit(limit=10, window=60),
        quota=Quota(limit=100, period=timedelta(hours=1)),
    )


def test_scopes_may_be_one_space_separated_string() -> None:
    held = caller(scopes=("a", "b"))
    assert create_arguments({"name": "n", "scopes": "a b"}, held).scopes == ("a", "b")


def test_null_metadata_is_none() -> None:
    assert create_arguments({"name": "n", "metadata": None}, caller()).metadata == {}


def test_every_field_error_is_listed_at_once_in_field_order() -> None:
    body = {
        "scopes": 5,
        "expiration": 5,
        "metadata": [],
        "rateLimit": 5,
        "quota": "lots",
        "userId": 7,
        "colour": "red",
        "admin": True,
    }
    assert field_errors(create_arguments, body, caller()) == [
        ("admin", "unknown field"),
        ("colour", "unknown field"),
        ("name", "is required"),
        ("scopes", "must be a list of strings"),
        ("expiration", "must be an ISO 8601 date or date-time, or null"),
        ("metadata", "must be a JSON object"),
        ("rateLimit", "must be an object or null"),
        ("quota", "must be an object or null"),
        ("userId", "must be a string"),
    ]


def test_the_core_checks_speak_under_the_json_field_names() -> None:
    body = {
        "name": "  ",
        "scopes": ["read data"],
        "expiration": "soon",
        "metadata": {"x": float("inf")},
        "rateLimit": {"limit": 0, "window": 60},
        "quota": {"limit": 10, "period": -1},
    }
    errors = field_errors(create_arguments, body, caller())
    assert [field for field, _ in errors] == [
        "name",
        "scopes",
        "expiration",
        "metadata",
        "rateLimit.limit",
        "quota.period",
    ]
    messages = dict(errors)
    assert messages["name"] == "name must be a non-empty string"
    assert messages["scopes"] == (
        "malformed scope 'read data': use segments of letters, digits, '_', '.', '-'"
        " joined by ':', optionally ending in ':*'"
    )
    assert messages["expiration"] == "expiration 'soon' is not an ISO 8601 date or date-time"
    # The rest of this one is json's own wording, which varies between Python versions.
    assert messages["metadata"].startswith("metadata must be JSON-serialisable: ")
    assert messages["rateLimit.limit"] == "Input should be greater than or equal to 1"
    assert messages["quota.period"] == "period must be at least one second"


def test_a_limit_left_out_of_its_object_is_named_in_the_field() -> None:
    errors = field_errors(create_arguments, {"name": "n", "rateLimit": {}}, caller())
    assert [field for field, _ in errors] == ["rateLimit.limit"]


@pytest.mark.parametrize("expiration", [None, "2000-01-01"])
def test_a_past_expiration_is_refused_and_null_is_none(expiration: str | None) -> None:
    if expiration is None:
        assert create_arguments({"name": "n", "expiration": None}, caller()).expiration is None
    else:
        assert field_errors(
            create_arguments, {"name": "n", "expiration": expiration}, caller()
        ) == [("expiration", "expiration is in the past")]


# --- creation: what the caller may mint ---------------------------------------------------------------


def test_a_key_is_minted_only_for_the_callers_own_user() -> None:
    assert create_arguments({"name": "n", "userId": "alice"}, caller()).name == "n"
    with pytest.raises(ForeignUserError) as caught:
        create_arguments({"name": "n", "userId": "mallory"}, caller())
    assert (caught.value.status_code, caught.value.key_id) == (403, "caller-key")


def test_a_refused_body_is_reported_before_a_foreign_user() -> None:
    assert field_errors(create_arguments, {"userId": "mallory"}, caller()) == [
        ("name", "is required")
    ]


def test_a_new_key_holds_no_scope_its_caller_lacks() -> None:
    held = caller(scopes=("data:*", "billing:read"))
    body = {"name": "n", "scopes": ["data:read", "admin", "billing:write", "data:*"]}
    with pytest.raises(InsufficientScopeError) as caught:
        create_arguments(body, held)
    assert caught.value.message == "A new key's scopes must be covered by the calling key's scopes"
    assert caught.value.missing_scopes == ("admin", "billing:write")
    assert (caught.value.status_code, caught.value.key_id) == (403, "caller-key")


def test_a_new_key_may_hold_what_its_callers_wildcard_covers() -> None:
    held = caller(scopes=("data:*",))
    body = {"name": "n", "scopes": ["data:read", "data:x:*"]}
    assert create_arguments(body, held).scopes == ("data:read", "data:x:*")


def test_a_new_key_of_a_caller_that_never_expires_may_have_any_lifetime() -> None:
    assert create_arguments({"name": "n"}, caller()).expiration is None
    body = {"name": "n", "expiration": LATER.isoformat()}
    assert create_arguments(body, caller()).expiration == LATER


@pytest.mark.parametrize(("asked", "given"), [(None, FUTURE), (SOONER, SOONER), (FUTURE, FUTURE)])
def test_a_new_key_expires_no_later_than_its_caller(
    asked: datetime | None, given: datetime
) -> None:
    body = {"name": "n", "expiration": asked.isoformat() if asked else None}
    assert create_arguments(body, caller(expires_at=FUTURE)).expiration == given


def test_a_new_key_outliving_its_caller_is_refused() -> None:
    body = {"name": "n", "expiration": (FUTURE + timedelta(seconds=1)).isoformat()}
    with pytest.raises(LifetimeEscalationError) as caught:
        create_arguments(body, caller(expires_at=FUTURE))
    assert (caught.value.status_code, caught.value.key_id) == (403, "caller-key")


CALLER_RATE = RateLimit(limit=10, window=60)
CALLER_QUOTA = Quota(limit=1000, period=timedelta(days=1))


def test_limits_left_out_are_the_callers() -> None:
    held = caller(rate_limit=CALLER_RATE, quota=CALLER_QUOTA)
    minted = create_arguments({"name": "n"}, held)
    assert (minted.rate_limit, minted.quota) == (CALLER_RATE, CALLER_QUOTA)


def test_limits_no_looser_than_the_callers_are_kept() -> None:
    held = caller(rate_limit=CALLER_RATE, quota=CALLER_QUOTA)
    body = {
        "name": "n",
        "rateLimit": {"limit": 5, "window": 60},
        "quota": {"limit": 1000, "period": 86400},
    }
    minted = create_arguments(body, held)
    assert (minted.rate_limit, minted.quota) == (RateLimit(limit=5, window=60), CALLER_QUOTA)


@pytest.mark.parametrize(
    "limits",
    [
        {"rateLimit": None},
        {"quota": None},
        {"rateLimit": {"limit": 11, "window": 60}},
        {"quota": {"limit": 1001, "period": 86400}},
        {"rateLimit": {"limit": 5, "window": 60}, "quota": {"limit": 2000, "period": 86400}},
    ],
)
def test_limits_looser_than_the_callers_are_refused(limits: dict[str, Any]) -> None:
    held = caller(rate_limit=CALLER_RATE, quota=CALLER_QUOTA)
    with pytest.raises(LimitEscalationError) as caught:
        create_arguments({"name": "n"} | limits, held)
    assert (caught.value.status_code, caught.value.code) == (403, "limits_beyond_caller")
    assert caught.value.key_id == "caller-key"


def test_a_caller_without_limits_may_give_any_or_none() -> None:
    body = {"name": "n", "rateLimit": {"limit": 5, "window": 1}, "quota": None}
    minted = create_arguments(body, caller())
    assert (minted.rate_limit, minted.quota) == (RateLimit(limit=5, window=1), None)


# --- revocation and deletion ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("key-1", {}, {}),
        (None, {}, {"id": "key-1"}),
        (None, {"id": "key-1"}, {}),
        ("key-1", {"id": "key-1"}, {"id": "key-1"}),
        (None, [("id", "key-1"), ("id", "key-2")], {}),
    ],
)
def test_the_id_may_come_from_the_path_the_body_or_the_query(
    path: str | None, query: Any, body: dict[str, Any]
) -> None:
    assert delete_arguments(path, query, body) == ("key-1", None)


def test_the_reason_comes_from_the_body_before_the_query() -> None:
    assert delete_arguments("k", {"reason": "from query"}, {}) == ("k", "from query")
    assert delete_arguments("k", {"reason": "q"}, {"reason": "from body"}) == ("k", "from body")


@pytest.mark.parametrize(
    ("path", "query", "body"),
    [
        ("key-1", {}, {"id": "key-2"}),
        ("key-1", {"id": "key-2"}, {}),
        (None, {"id": "key-2"}, {"id": "key-1"}),
        ("key-1", {"id": "key-1"}, {"id": "key-2"}),
    ],
)
def test_ids_that_differ_are_refused(path: str | None, query: Any, body: dict[str, Any]) -> None:
    assert field_errors(delete_arguments, path, query, body) == [
        ("id", "differs between the path, the body and the query")
    ]


def test_no_id_is_refused_saying_where_it_may_go() -> None:
    assert field_errors(delete_arguments, None, {}, {}) == [
        ("id", "is required, in the path, the body or the query")
    ]


def test_every_revocation_error_is_listed_at_once() -> None:
    body = {"id": "", "reason": "line\nbreak", "force": True}
    assert field_errors(delete_arguments, None, {}, body) == [
        ("force", "unknown field"),
        ("id", "key_id must be a non-empty string"),
        (
            "reason",
            "reason must hold printable characters only (no control characters,"
            " line breaks or unpaired surrogates)",
        ),
    ]


def test_unknown_fields_alone_refuse_a_revocation() -> None:
    assert field_errors(delete_arguments, "k", {}, {"why": "x"}) == [("why", "unknown field")]


def test_errors_name_the_field_of_the_first() -> None:
    error = refused(InvalidRequestError, delete_arguments, None, {}, {"reason": 5})
    assert error.field == "id"
    assert error.message == (
        "id: is required, in the path, the body or the query;"
        " reason: reason must be a string of at most 500 characters"
    )

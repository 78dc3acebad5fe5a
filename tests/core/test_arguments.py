"""Argument checks shared by every backend (apikeys._arguments)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikeys import KEEP, InvalidInputError
from apikeys._arguments import (
    MAX_METADATA_BYTES,
    MAX_OFFSET,
    MAX_PAGE_SIZE,
    CreateRequest,
    Keep,
    build_create_request,
    check_grace,
    check_key_id,
    check_limit_change,
    check_metadata,
    check_name,
    check_page,
    check_quota,
    check_rate_limit,
    check_reason,
    check_required_scopes,
    check_user_id,
)
from apikeys._expiry import MAX_LIFETIME
from apikeys._keylimits import MAX_LIMIT, MAX_QUOTA_PERIOD, MAX_RATE_WINDOW, Quota, RateLimit
from tests.core.outcomes import outcome

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def refused(field: str, check: Any, *args: object) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        check(*args)
    assert caught.value.field == field
    assert caught.value.status_code == 422
    return caught.value


# --- user ids, key ids, names, reasons ------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id", ["user_123", "u", "u" * 255, "ユーザー", "a b", "org:42/user@x"]
)
def test_valid_user_ids_are_kept_exactly(user_id: str) -> None:
    assert check_user_id(user_id) == user_id


def test_user_ids_are_not_stripped() -> None:
    assert check_user_id(" user ") == " user "


@pytest.mark.parametrize(
    "user_id",
    ["", " ", "\t\n", "u" * 256, "a\nb", "a\x00b", "a\x1bb", "zero\u200bwidth", None, 5, b"u"],
)
def test_bad_user_ids_are_refused(user_id: object) -> None:
    refused("user_id", check_user_id, user_id)


@pytest.mark.parametrize("key_id", ["AbCdEf123456", "k", "k" * 64, "user_2abc-XYZ"])
def test_valid_key_ids(key_id: str) -> None:
    assert check_key_id(key_id) == key_id


@pytest.mark.parametrize("key_id", ["", "k" * 65, "a\nb", "\x00", None, 12, ["k"]])
def test_bad_key_ids_are_refused(key_id: object) -> None:
    refused("key_id", check_key_id, key_id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CI pipeline", "CI pipeline"),
        ("  padded  ", "padded"),
        ("n" * 255, "n" * 255),
        ("  " + "n" * 255 + " ", "n" * 255),
        ("Clé 🔑", "Clé 🔑"),
    ],
)
def test_names_are_stripped(name: str, expected: str) -> None:
    assert check_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["", " ", "\n\t ", "n" * 256, "a\tb", "line\nbreak", "bell\x07", "bidi\u202e", None, 3, ["n"]],
)
def test_bad_names_are_refused(name: object) -> None:
    refused("name", check_name, name)


@pytest.mark.parametrize("reason", [None, "", "compromised", "r" * 500])
def test_valid_reasons(reason: str | None) -> None:
    assert check_reason(reason) == reason


@pytest.mark.parametrize("reason", ["r" * 501, 5, b"why", ["why"]])
def test_bad_reasons_are_refused(reason: object) -> None:
    refused("reason", check_reason, reason)


# --- metadata -------------------------------------------------------------------------------------


def test_no_metadata_is_an_empty_dict() -> None:
    assert check_metadata(None) == {}


def test_metadata_is_returned_as_a_json_safe_copy() -> None:
    given_metadata: dict[str, Any] = {
        "team": "infra",
        "n": 1,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "tags": ("a", "b"),
        "nested": {"deep": [1, {"x": "y"}]},
    }
    result = check_metadata(given_metadata)
    assert result == {**given_metadata, "tags": ["a", "b"]}
    given_metadata["nested"]["deep"].append(2)
    assert result["nested"]["deep"] == [1, {"x": "y"}]  # a copy, not the caller's objects


@pytest.mark.parametrize("metadata", [OrderedDict(a=1), MappingProxyType({"a": 1})])
def test_any_mapping_is_accepted(metadata: Any) -> None:
    assert check_metadata(metadata) == {"a": 1}


@pytest.mark.parametrize(
    "metadata",
    [
        ["a", 1],
        "a=1",
        5,
        {1: "x"},
        {None: "x"},
        {("a",): "x"},
        {"a": {1: "x"}},
        {"a": [{True: "x"}]},
        {"a": {"b": {None: 1}}},
    ],
)
def test_metadata_must_be_a_mapping_with_string_keys_all_the_way_down(metadata: object) -> None:
    error = refused("metadata", check_metadata, metadata)
    assert "string keys" in error.message


@pytest.mark.parametrize(
    "metadata",
    [
        {"a": float("nan")},
        {"a": float("inf")},
        {"a": [-math.inf]},
        {"a": b"bytes"},
        {"a": {1, 2}},
        {"a": object()},
        {"a": datetime(2030, 1, 1)},
    ],
)
def test_metadata_must_be_json(metadata: dict[str, Any]) -> None:
    assert "JSON" in refused("metadata", check_metadata, metadata).message


def test_circular_metadata_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    refused("metadata", check_metadata, loop)


def test_deeply_nested_metadata_is_refused() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    refused("metadata", check_metadata, {"deep": deep})


def test_metadata_is_at_most_8_kib_as_json() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    at_limit = {"k": "x" * (MAX_METADATA_BYTES - overhead)}
    assert check_metadata(at_limit) == at_limit
    error = refused("metadata", check_metadata, {"k": "x" * (MAX_METADATA_BYTES - overhead + 1)})
    assert "8192 bytes" in error.message


def test_the_size_limit_counts_utf8_bytes() -> None:
    overhead = len(json.dumps({"k": ""}, separators=(",", ":"), ensure_ascii=True))
    # Each "é" is 6 bytes as an ASCII JSON escape.
    fits = {"k": "é" * ((MAX_METADATA_BYTES - overhead) // 6)}
    assert check_metadata(fits) == fits
    refused("metadata", check_metadata, {"k": "é" * ((MAX_METADATA_BYTES - overhead) // 6 + 1)})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_json_metadata_round_trips(metadata: dict[str, Any]) -> None:
    assert check_metadata(metadata) == json.loads(json.dumps(metadata))


@given(
    metadata=st.dictionaries(
        st.one_of(st.text(max_size=4), st.integers(), st.none()),
        st.recursive(
            st.one_of(st.none(), st.floats(), st.binary(max_size=3), st.text(max_size=4)),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(
                    st.one_of(st.text(max_size=3), st.integers()), children, max_size=3
                )
            ),
            max_leaves=10,
        ),
        max_size=4,
    )
)
def test_arbitrary_metadata_is_accepted_as_json_or_refused(metadata: dict[Any, Any]) -> None:
    result = outcome(lambda: check_metadata(metadata), InvalidInputError)
    if isinstance(result, InvalidInputError):
        assert result.field == "metadata"
        return
    # Accepted metadata survives a JSON round trip unchanged: no coerced keys, no NaN.
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert result == json.loads(json.dumps(metadata))


# --- pages and grace --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "offset"), [(1, 0), (MAX_PAGE_SIZE, 0), (50, 10_000), (1, MAX_OFFSET)]
)
def test_valid_pages(limit: int, offset: int) -> None:
    assert check_page(limit, offset) == (limit, offset)


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_SIZE + 1, True, 1.0, "10", None])
def test_bad_limits_are_refused(limit: object) -> None:
    refused("limit", check_page, limit, 0)


@pytest.mark.parametrize("offset", [-1, MAX_OFFSET + 1, 10**30, True, 1.5, "0", None])
def test_bad_offsets_are_refused(offset: object) -> None:
    refused("offset", check_page, 10, offset)


def test_max_offset_is_sqls_bigint() -> None:
    assert MAX_OFFSET == 2**63 - 1


@pytest.mark.parametrize(
    ("grace", "expected"),
    [
        (0, timedelta(0)),
        (0.0, timedelta(0)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(hours=1), timedelta(hours=1)),
        (MAX_LIFETIME, MAX_LIFETIME),
    ],
)
def test_valid_grace(grace: float | timedelta, expected: timedelta) -> None:
    assert check_grace(grace) == expected


@pytest.mark.parametrize(
    "grace",
    [
        -1,
        -0.5,
        timedelta(seconds=-1),
        math.nan,
        math.inf,
        -math.inf,
        1e300,
        10**20,
        MAX_LIFETIME + timedelta(seconds=1),
        timedelta.max,
        True,
        "60",
        None,
    ],
)
def test_bad_grace_is_refused(grace: object) -> None:
    refused("grace", check_grace, grace)


@given(grace=st.one_of(st.floats(), st.integers(), st.timedeltas()))
def test_arbitrary_grace_is_bounded_or_refused(grace: float | timedelta) -> None:
    result = outcome(lambda: check_grace(grace), InvalidInputError)
    if isinstance(result, InvalidInputError):
        assert result.field == "grace"
        return
    assert timedelta(0) <= result <= MAX_LIFETIME
    assert NOW + result >= NOW  # and adding it to a date never overflows


# --- required scopes and create requests ------------------------------------------------------------


def test_required_scopes_refuse_wildcards() -> None:
    assert check_required_scopes("read:data write:data") == ("read:data", "write:data")
    refused("required_scopes", check_required_scopes, ["data:*"])


def test_build_create_request() -> None:
    request = build_create_request(
        "user_1", "  CI  ", "read:data read:data data:*", timedelta(days=1), {"env": "ci"}, now=NOW
    )
    assert request == CreateRequest(
        user_id="user_1",
        name="CI",
        scopes=("read:data", "data:*"),
        expires_at=NOW + timedelta(days=1),
        metadata={"env": "ci"},
        now=NOW,
    )


def test_build_create_request_defaults_now_to_the_current_time() -> None:
    before = datetime.now(UTC)
    request = build_create_request("u", "n", None, None, None)
    assert before <= request.now <= datetime.now(UTC)
    assert request.expires_at is None
    assert request.scopes == ()
    assert request.metadata == {}


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("", "n", (), None, None), "user_id"),
        (("u", " ", (), None, None), "name"),
        (("u", "n", "bad scope!", None, None), "scopes"),
        (("u", "n", (), "2000-01-01", None), "expiration"),
        (("u", "n", (), "soon", None), "expiration"),
        (("u", "n", (), None, {"x": math.nan}), "metadata"),
    ],
)
def test_build_create_request_names_the_bad_argument(
    arguments: tuple[Any, ...], field: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        build_create_request(*arguments, now=NOW)
    assert caught.value.field == field


# --- limits ------------------------------------------------------------------------------

limits = st.integers(min_value=1, max_value=MAX_LIMIT)
rate_limits = st.builds(
    RateLimit,
    limit=limits,
    window=st.integers(min_value=1, max_value=int(MAX_RATE_WINDOW.total_seconds())),
)
quotas = st.builds(
    Quota,
    limit=limits,
    period=st.none() | st.integers(min_value=1, max_value=int(MAX_QUOTA_PERIOD.total_seconds())),
)


@given(rate_limit=rate_limits)
def test_a_rate_limit_is_taken_as_itself_or_its_short_form(rate_limit: RateLimit) -> None:
    assert check_rate_limit(rate_limit) is rate_limit
    assert check_rate_limit(str(rate_limit)) == rate_limit


@given(quota=quotas)
def test_a_quota_is_taken_as_itself_or_its_short_form(quota: Quota) -> None:
    assert check_quota(quota) is quota
    assert check_quota(str(quota)) == quota


def test_no_limit_is_none() -> None:
    assert check_rate_limit(None) is None and check_quota(None) is None


@pytest.mark.parametrize(
    ("check", "value", "field"),
    [
        (check_rate_limit, 100, "rate_limit"),
        (check_rate_limit, "100", "rate_limit"),
        (check_rate_limit, Quota(limit=5), "rate_limit"),
        (check_rate_limit, {"limit": 5, "window": 1}, "rate_limit"),
        (check_rate_limit, KEEP, "rate_limit"),
        (check_quota, 100, "quota"),
        (check_quota, "100/", "quota"),
        (check_quota, RateLimit(limit=5, window=1), "quota"),
        (check_quota, b"500", "quota"),
    ],
)
def test_other_limit_forms_are_refused(check: Any, value: object, field: str) -> None:
    refusal = refused(field, check, value)
    assert field in refusal.message


def test_a_limit_change_keeps_what_it_is_told_to() -> None:
    kept = check_limit_change(KEEP, KEEP)
    assert (kept.rate_limit, kept.quota) == (KEEP, KEEP)
    change = check_limit_change("10/1s", None)
    assert (change.rate_limit, change.quota) == (RateLimit(limit=10, window=1), None)
    assert check_limit_change(KEEP, "500").quota == Quota(limit=500)
    with pytest.raises(InvalidInputError) as caught:
        check_limit_change("10/1s", "five")
    assert caught.value.field == "quota"


def test_build_create_request_checks_the_limits() -> None:
    request = build_create_request("u", "n", (), None, None, now=NOW, quota="500")
    assert (request.rate_limit, request.quota) == (None, Quota(limit=500))
    with pytest.raises(InvalidInputError) as caught:
        build_create_request("u", "n", (), None, None, now=NOW, rate_limit=60)
    assert caught.value.field == "rate_limit"


@pytest.mark.parametrize("metadata", [{"apikeys": 1}, {"apikeys": {"rateLimit": None}}])
def test_metadata_may_not_use_the_name_of_the_limits_claim(metadata: dict[str, Any]) -> None:
    refused("metadata", check_metadata, metadata)
    assert check_metadata({"nested": {"apikeys": 1}}) == {"nested": {"apikeys": 1}}


def test_keep_is_a_singleton_sentinel() -> None:
    assert KEEP is Keep.KEEP
    assert list(Keep) == [KEEP]
    assert KEEP is not None


# --- any Python value at all ---------------------------------------------------------------------------

anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(),
        st.binary(),
        st.datetimes(),
        st.dates(),
        st.timedeltas(),
        st.decimals(),
        st.fractions(),
        st.complex_numbers(),
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), children, max_size=3)
    ),
    max_leaves=8,
)

CHECKS: dict[str, Any] = {
    "user_id": check_user_id,
    "key_id": check_key_id,
    "name": check_name,
    "metadata": check_metadata,
    "reason": check_reason,
    "grace": check_grace,
    "required_scopes": check_required_scopes,
    "limit": lambda value: check_page(value, 0),
    "offset": lambda value: check_page(1, value),
    "rate_limit": check_rate_limit,
    "quota": check_quota,
}


@pytest.mark.parametrize("field", CHECKS)
@given(value=anything)
def test_any_value_is_accepted_or_refused_with_invalid_input_only(
    field: str, value: object
) -> None:
    result = outcome(lambda: CHECKS[field](value), InvalidInputError)
    if isinstance(result, InvalidInputError):
        assert result.field == field

"""Scope syntax, normalisation, the wildcard rule and missing_scopes."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from apikeys import InvalidInputError, missing_scopes, normalize_scopes, scope_covers
from apikeys._arguments import check_required_scopes
from apikeys._scopes import MAX_SCOPE_LENGTH, MAX_SCOPES, is_wildcard

SEGMENT = r"[A-Za-z0-9_.\-]+"
segments = st.text(
    alphabet="ABCXYZabcxyz0189_.-", min_size=1, max_size=12
)  # a sample of every kind of segment character; faster than from_regex
concrete_scopes = st.lists(segments, min_size=1, max_size=4).map(":".join)
wildcard_scopes = st.lists(segments, min_size=1, max_size=3).map(
    lambda parts: ":".join(parts) + ":*"
)


# --- validity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        "read",
        "read:data",
        "billing:invoices:write",
        "a.b-c_d:E9",
        "data:*",
        "data:read:*",
        "x" * 128,
    ],
)
def test_valid_scopes_are_kept_verbatim(scope: str) -> None:
    assert normalize_scopes([scope]) == (scope,)


@pytest.mark.parametrize(
    "scope",
    [
        "",
        ":",
        "read:",
        ":read",
        "read::data",
        "*",
        "*:read",
        "data:*:read",
        "data:**",
        "data*",
        "data:re*",
        "read data",
        "read/data",
        "read,data",
        "données:lire",
        "read\x00",
        "ｒead",
        "x" * 129,
    ],
)
def test_malformed_scopes_are_refused(scope: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes([scope])
    assert caught.value.field == "scopes"
    assert caught.value.status_code == 422


def test_the_error_names_the_field_it_was_told() -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes(["bad scope"], field="required_scopes")
    assert caught.value.field == "required_scopes"


@pytest.mark.parametrize("item", [1, None, b"read", ["read"], 1.5])
def test_non_string_items_are_refused(item: object) -> None:
    with pytest.raises(InvalidInputError, match="strings"):
        normalize_scopes(["read", item])  # type: ignore[list-item]


@pytest.mark.parametrize("scopes", [5, 1.5, object(), True])
def test_non_iterable_scopes_are_refused(scopes: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes(scopes)  # type: ignore[arg-type]
    assert caught.value.field == "scopes"


def test_at_most_64_distinct_scopes() -> None:
    scopes = [f"s{i}" for i in range(MAX_SCOPES)]
    assert normalize_scopes(scopes) == tuple(scopes)
    assert normalize_scopes(scopes + scopes) == tuple(scopes)  # duplicates do not count
    with pytest.raises(InvalidInputError, match="at most 64"):
        normalize_scopes([*scopes, "one-more"])


def test_scopes_stop_being_read_at_the_first_one_over_the_limit() -> None:
    consumed: list[str] = []

    def scopes() -> Iterator[str]:  # long enough to hang a reader that reads it all
        for n in range(10**7):
            consumed.append(f"scope{n}")
            yield consumed[-1]

    with pytest.raises(InvalidInputError, match="at most 64"):
        normalize_scopes(scopes())
    assert len(consumed) == MAX_SCOPES + 1


def test_a_scope_is_at_most_128_characters() -> None:
    assert MAX_SCOPE_LENGTH == 128
    assert normalize_scopes("a" * 128) == ("a" * 128,)
    with pytest.raises(InvalidInputError, match="longer than 128"):
        normalize_scopes("a" * 129)


@given(scope=concrete_scopes)
def test_generated_concrete_scopes_are_valid(scope: str) -> None:
    assert normalize_scopes([scope]) == (scope,)
    assert normalize_scopes([scope], allow_wildcards=False) == (scope,)
    assert not is_wildcard(scope)


@given(scope=wildcard_scopes)
def test_generated_wildcards_are_valid_only_where_allowed(scope: str) -> None:
    assert normalize_scopes([scope]) == (scope,)
    assert is_wildcard(scope)
    with pytest.raises(InvalidInputError):
        normalize_scopes([scope], allow_wildcards=False)


@given(value=st.one_of(st.text(), st.lists(st.text(max_size=20), max_size=5)))
@example("\ud800")
@example("data:* *")
def test_arbitrary_input_is_accepted_per_the_grammar_or_refused(value: str | list[str]) -> None:
    try:
        result = normalize_scopes(value)
    except InvalidInputError:
        return
    for scope in result:
        assert re.fullmatch(rf"{SEGMENT}(:{SEGMENT})*(:\*)?", scope, re.ASCII)
        assert len(scope) <= MAX_SCOPE_LENGTH


# --- whitespace strings and de-duplication --------------------------------------------------


def test_a_string_is_split_on_whitespace() -> None:
    assert normalize_scopes("read:data write:data") == ("read:data", "write:data")
    assert normalize_scopes(" a\tb\nc\r\nd  ") == ("a", "b", "c", "d")
    assert normalize_scopes("read:data") == ("read:data",)


@pytest.mark.parametrize("empty", [None, "", "   ", "\n\t", [], ()])
def test_no_scopes(empty: object) -> None:
    assert normalize_scopes(empty) == ()  # type: ignore[arg-type]


@given(scopes=st.lists(concrete_scopes, max_size=10))
def test_string_and_list_forms_agree(scopes: list[str]) -> None:
    assert normalize_scopes(" ".join(scopes)) == normalize_scopes(scopes)


@given(scopes=st.lists(st.sampled_from(["a", "b", "c:d", "e:*", "f"]), max_size=30))
def test_duplicates_are_dropped_keeping_first_seen_order(scopes: list[str]) -> None:
    assert normalize_scopes(scopes) == tuple(dict.fromkeys(scopes))


def test_dedupe_order_example() -> None:
    assert normalize_scopes(["b", "a", "b", "c", "a"]) == ("b", "a", "c")
    assert normalize_scopes(iter(["x", "x"])) == ("x",)


# --- the wildcard rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "wanted", "covered"),
    [
        ("data:*", "data:read", True),
        ("data:*", "data:read:all", True),
        ("data:*", "data", False),
        ("data:*", "database:read", False),
        ("data:*", "dat:read", False),
        ("data:*", "other:data:read", False),
        ("data:read:*", "data:read:all", True),
        ("data:read:*", "data:read", False),
        ("data:read:*", "data:write:all", False),
        ("data:*", "data:*", True),
        ("data:*", "data:read:*", True),
        ("data:read", "data:read", True),
        ("data:read", "data:read:all", False),
        ("data", "data:read", False),
        ("DATA:*", "data:read", False),
    ],
)
def test_scope_covers(held: str, wanted: str, covered: bool) -> None:
    assert scope_covers(held, wanted) is covered


def test_a_bare_star_is_not_a_scope() -> None:
    with pytest.raises(InvalidInputError):
        normalize_scopes("*")
    with pytest.raises(InvalidInputError):
        normalize_scopes("read *")


@pytest.mark.parametrize("required", ["data:*", ["read", "data:read:*"], "*"])
def test_wildcards_are_refused_in_required_scopes(required: str | list[str]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_required_scopes(required)
    assert caught.value.field == "required_scopes"


def test_required_scopes_are_normalised() -> None:
    assert check_required_scopes("b a b") == ("b", "a")
    assert check_required_scopes(()) == ()


@given(held=concrete_scopes, wanted=concrete_scopes)
def test_a_concrete_scope_covers_only_itself(held: str, wanted: str) -> None:
    assert scope_covers(held, wanted) is (held == wanted)


@given(base=concrete_scopes, wanted=concrete_scopes)
def test_a_wildcard_covers_exactly_the_scopes_extending_its_base(base: str, wanted: str) -> None:
    wildcard = f"{base}:*"
    base_segments = base.split(":")
    wanted_segments = wanted.split(":")
    extends = (
        len(wanted_segments) > len(base_segments)
        and wanted_segments[: len(base_segments)] == base_segments
    )
    assert scope_covers(wildcard, wanted) is extends
    assert scope_covers(wildcard, f"{base}:{wanted}")
    assert not scope_covers(wildcard, base)


# --- missing_scopes -----------------------------------------------------------------------------


def test_missing_scopes_in_required_order() -> None:
    held = ("read:data", "billing:*")
    required = ["write:data", "read:data", "billing:invoices:read", "admin", "billing"]
    assert missing_scopes(held, required) == ("write:data", "admin", "billing")


def test_nothing_required_means_nothing_missing() -> None:
    assert missing_scopes((), ()) == ()
    assert missing_scopes(("a",), []) == ()


def test_nothing_held_means_everything_missing() -> None:
    assert missing_scopes((), ("a", "b")) == ("a", "b")


def test_missing_scopes_accepts_iterators_and_strings() -> None:
    assert missing_scopes(iter(["a", "b"]), iter(["b", "c"])) == ("c",)
    assert missing_scopes(["data:*"], "data:read admin") == ("admin",)
    # A held string is whitespace-separated scopes, never single characters.
    assert missing_scopes("read:data", ["read:data", "r"]) == ("r",)


@given(held=st.lists(concrete_scopes, max_size=5), required=st.lists(concrete_scopes, max_size=5))
def test_missing_scopes_is_required_minus_held_for_concrete_scopes(
    held: list[str], required: list[str]
) -> None:
    assert missing_scopes(held, required) == tuple(s for s in required if s not in held)


# --- the messages users see ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["scopes", "required_scopes"])
def test_a_non_iterable_is_refused_naming_the_field_and_the_type(field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes(5, field=field)  # type: ignore[arg-type]
    assert caught.value.message == f"{field} must be a string or an iterable of strings, not int"
    assert caught.value.field == field


@pytest.mark.parametrize("field", ["scopes", "required_scopes"])
def test_a_non_string_item_is_refused_naming_its_type(field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes(["read", 7], field=field)  # type: ignore[list-item]
    assert caught.value.message == "scopes must be strings, got int"
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("allow_wildcards", "hint"), [(True, ", optionally ending in ':*'"), (False, "")]
)
def test_a_malformed_scope_is_refused_with_the_grammar(allow_wildcards: bool, hint: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes(["read/data"], allow_wildcards=allow_wildcards)
    assert caught.value.message == (
        "malformed scope 'read/data': use segments of letters, digits, '_', '.', '-'"
        " joined by ':'" + hint
    )


@pytest.mark.parametrize("field", ["scopes", "required_scopes"])
def test_too_many_scopes_are_refused_naming_the_field(field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        normalize_scopes([f"s{i}" for i in range(MAX_SCOPES + 1)], field=field)
    assert caught.value.message == "at most 64 scopes per key"
    assert caught.value.field == field


@pytest.mark.parametrize("wanted", ["data:", "data", "dat"])
def test_a_wildcard_does_not_cover_its_own_base_with_or_without_the_colon(wanted: str) -> None:
    # "data:" is no scope, but a caller that skipped validation must still be refused.
    assert not scope_covers("data:*", wanted)
    assert missing_scopes(["data:*"], [wanted]) == (wanted,)

"""The local key format: generation, parsing, checksum, scanner regex, prefix rules."""

from __future__ import annotations

import math
import re
import shlex
import string
from urllib.parse import quote

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import apikeys._keyformat as keyformat
from apikeys import (
    KEY_PATTERN,
    InvalidInputError,
    InvalidKeyError,
    generate_key,
    key_pattern,
    parse_key,
)
from apikeys._keyformat import (
    BASE62_ALPHABET,
    BODY_LENGTH,
    CHECKSUM_LENGTH,
    DEFAULT_PREFIX,
    LOOKUP_ID_LENGTH,
    MAX_KEY_LENGTH,
    SECRET_LENGTH,
    ParsedKey,
    display_hint,
    is_lookup_id,
    validate_prefix,
)
from tests.core.outcomes import outcome

valid_prefixes = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True).filter(
    lambda prefix: prefix != "ak" and not prefix.startswith("ak_")
)
base62_text = st.text(alphabet=BASE62_ALPHABET)
# Characters a typo or an attacker might put into a key: the key's own alphabet,
# its separator, look-alikes, whitespace and arbitrary code points.
any_char = st.one_of(
    st.sampled_from(BASE62_ALPHABET + "_-.~+/= \t\n\x00"),
    st.sampled_from("ＡＢ０１ａ٣İıſK"),
    st.characters(),
)


def secret_part(key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The secret characters of a version 1 key (between the lookup id and the checksum)."""
    body = key[len(prefix) + 1 :]
    return body[1 + LOOKUP_ID_LENGTH : -CHECKSUM_LENGTH]


def with_checksum(head: str) -> str:
    """Append the right checksum to ``head``, to forge structurally valid keys."""
    return head + keyformat._checksum(head)


# --- generation and round trip ---------------------------------------------------


@given(prefix=valid_prefixes)
def test_generate_then_parse_round_trips(prefix: str) -> None:
    generated = generate_key(prefix)
    parsed = parse_key(generated.key, prefix)
    assert parsed == generated
    assert parsed.prefix == prefix
    assert generated.key.startswith(f"{prefix}_1{generated.id}")
    assert len(generated.key) == len(prefix) + 1 + BODY_LENGTH
    assert is_lookup_id(parsed.id)


def test_default_prefix_is_apk_and_keys_have_the_documented_shape() -> None:
    key = generate_key().key
    assert re.fullmatch(r"apk_1[0-9A-Za-z]{51}", key)
    assert parse_key(key).id == key[5:17]


@given(prefix=valid_prefixes, other=valid_prefixes)
def test_a_key_is_refused_under_another_prefix(prefix: str, other: str) -> None:
    assume(prefix != other)
    key = generate_key(prefix).key
    with pytest.raises(InvalidKeyError):
        parse_key(key, other)


def test_the_checksum_covers_the_prefix() -> None:
    key = generate_key("abc").key
    renamed = "abd" + key[3:]
    with pytest.raises(InvalidKeyError):
        parse_key(renamed, "abd")


def test_an_explicit_lookup_id_is_used() -> None:
    parsed = generate_key(id="AbCdEf123456")
    assert parsed.id == "AbCdEf123456"
    assert parse_key(parsed.key).id == "AbCdEf123456"


def test_the_deprecated_lookup_id_keyword_still_gives_the_id() -> None:
    with pytest.warns(DeprecationWarning, match=r"generate_key\(id=\.\.\.\)"):
        parsed = generate_key(lookup_id="AbCdEf123456")
    assert parsed.id == "AbCdEf123456"
    assert parse_key(parsed.key).id == "AbCdEf123456"


def test_id_and_the_deprecated_lookup_id_together_are_refused() -> None:
    with pytest.warns(DeprecationWarning, match="lookup_id"), pytest.raises(TypeError):
        generate_key(id="AbCdEf123456", lookup_id="AbCdEf123456")


def test_the_deprecated_lookup_id_attribute_reads_the_id() -> None:
    parsed = generate_key()
    with pytest.warns(DeprecationWarning, match=r"ParsedKey\.id"):
        assert parsed.lookup_id == parsed.id


@pytest.mark.parametrize(
    "lookup_id", ["", "short", "AbCdEf1234567", "AbCdEf12345_", "AbCdEf12345é"]
)
def test_a_malformed_lookup_id_is_refused(lookup_id: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        generate_key(id=lookup_id)
    assert caught.value.field == "id"


def test_keys_are_unique_and_use_the_whole_alphabet() -> None:
    keys = [generate_key().key for _ in range(500)]
    assert len(set(keys)) == len(keys)
    assert len({parse_key(key).id for key in keys}) == len(keys)
    # 500 * 33 draws miss one of 62 characters with probability ~62 * (61/62)**16500.
    assert set("".join(secret_part(key) for key in keys)) == set(BASE62_ALPHABET)


def test_secret_entropy_is_at_least_192_bits_by_construction() -> None:
    key = generate_key().key
    secret = secret_part(key)
    assert len(secret) == SECRET_LENGTH
    assert set(secret) <= set(BASE62_ALPHABET)
    assert len(set(BASE62_ALPHABET)) == 62
    assert len(secret) * math.log2(62) >= 192


def test_the_longest_prefix_gives_the_longest_key() -> None:
    prefix = "p" * 32
    key = generate_key(prefix).key
    assert len(key) == MAX_KEY_LENGTH
    assert parse_key(key, prefix).prefix == prefix
    with pytest.raises(InvalidInputError):
        generate_key("p" * 33)


def test_a_forged_key_with_a_right_checksum_parses() -> None:
    # The checksum is the whole offline check: structure plus CRC, nothing else.
    key = with_checksum("apk_1" + "A" * LOOKUP_ID_LENGTH + "b" * SECRET_LENGTH)
    assert parse_key(key).id == "A" * LOOKUP_ID_LENGTH


@pytest.mark.parametrize("version", ["0", "2", "9", "a"])
def test_other_format_versions_are_refused_even_with_a_right_checksum(version: str) -> None:
    key = generate_key().key
    forged = with_checksum(f"apk_{version}" + key[5:-CHECKSUM_LENGTH])
    with pytest.raises(InvalidKeyError):
        parse_key(forged)


# --- single-character changes --------------------------------------------------------


def test_every_single_substitution_deletion_and_transposition_is_rejected() -> None:
    key = generate_key().key
    for position, original in enumerate(key):
        for replacement in BASE62_ALPHABET + "_":
            if replacement != original:
                changed = key[:position] + replacement + key[position + 1 :]
                with pytest.raises(InvalidKeyError):
                    parse_key(changed)
        with pytest.raises(InvalidKeyError):
            parse_key(key[:position] + key[position + 1 :])
        if position + 1 < len(key) and key[position] != key[position + 1]:
            swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
            with pytest.raises(InvalidKeyError):
                parse_key(swapped)


@given(prefix=valid_prefixes, data=st.data())
def test_any_substitution_is_rejected(prefix: str, data: st.DataObject) -> None:
    key = generate_key(prefix).key
    position = data.draw(st.integers(0, len(key) - 1))
    replacement = data.draw(any_char.filter(lambda char: char != key[position]))
    with pytest.raises(InvalidKeyError):
        parse_key(key[:position] + replacement + key[position + 1 :], prefix)


@given(prefix=valid_prefixes, data=st.data())
def test_any_deletion_is_rejected(prefix: str, data: st.DataObject) -> None:
    key = generate_key(prefix).key
    position = data.draw(st.integers(0, len(key) - 1))
    with pytest.raises(InvalidKeyError):
        parse_key(key[:position] + key[position + 1 :], prefix)


@given(prefix=valid_prefixes, data=st.data())
def test_any_insertion_is_rejected(prefix: str, data: st.DataObject) -> None:
    key = generate_key(prefix).key
    position = data.draw(st.integers(0, len(key)))
    inserted = data.draw(any_char)
    with pytest.raises(InvalidKeyError):
        parse_key(key[:position] + inserted + key[position:], prefix)


@given(prefix=valid_prefixes, data=st.data())
def test_any_adjacent_transposition_is_rejected(prefix: str, data: st.DataObject) -> None:
    key = generate_key(prefix).key
    position = data.draw(st.integers(0, len(key) - 2))
    assume(key[position] != key[position + 1])
    swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
    with pytest.raises(InvalidKeyError):
        parse_key(swapped, prefix)


@pytest.mark.parametrize("padding", [" ", "\n", "\t", "\r\n", "\x00", "\u200b"])
def test_padding_is_not_stripped(padding: str) -> None:
    key = generate_key().key
    for padded in (padding + key, key + padding):
        with pytest.raises(InvalidKeyError):
            parse_key(padded)


# --- untrusted input ---------------------------------------------------------------------


def assert_only_invalid_key_error(value: object, prefix: str = DEFAULT_PREFIX) -> None:
    parsed = outcome(lambda: parse_key(value, prefix), InvalidKeyError)
    if isinstance(parsed, InvalidKeyError):  # one class and one message, whatever was wrong
        assert type(parsed) is InvalidKeyError
        assert str(parsed) == "Invalid API key"
    else:  # only a well-formed key with a right checksum may parse
        assert isinstance(value, str)
        assert parsed.key == value
        assert parse_key(value, prefix) == parsed


@given(value=st.text())
@example("")
@example("apk_")
@example("apk_1")
@example("\ud800")
@example("apk_1" + "\ud800" * 51)
def test_arbitrary_text_only_raises_invalid_key_error(value: str) -> None:
    assert_only_invalid_key_error(value)


@given(value=st.text(alphabet=BASE62_ALPHABET, min_size=BODY_LENGTH - 1, max_size=BODY_LENGTH - 1))
def test_well_shaped_keys_with_a_random_checksum_only_raise_invalid_key_error(value: str) -> None:
    assert_only_invalid_key_error(f"apk_1{value}")


@given(value=st.binary().map(lambda raw: raw.decode("latin-1")))
def test_binary_ish_text_only_raises_invalid_key_error(value: str) -> None:
    assert_only_invalid_key_error(value)


@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.binary(),
        st.lists(st.text(max_size=5), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    )
)
def test_non_strings_only_raise_invalid_key_error(value: object) -> None:
    with pytest.raises(InvalidKeyError):
        parse_key(value)


def test_bytes_of_a_valid_key_are_refused() -> None:
    key = generate_key().key
    for value in (key.encode(), bytearray(key.encode()), memoryview(key.encode()), [key]):
        with pytest.raises(InvalidKeyError):
            parse_key(value)


def test_a_str_subclass_holding_a_valid_key_parses() -> None:
    class Header(str):
        __slots__ = ()

    key = generate_key().key
    assert parse_key(Header(key)).id == key[5:17]


@pytest.mark.parametrize(
    "huge",
    [
        "a" * 1_000_000,
        "apk_1" + "A" * 5_000_000,
        "_" * 1_000_000,
        "apk_" * 250_000,
    ],
    ids=["letters", "long-body", "underscores", "repeated-prefix"],
)
def test_huge_strings_are_refused(huge: str) -> None:
    with pytest.raises(InvalidKeyError):
        parse_key(huge)


def test_a_valid_key_followed_by_junk_is_refused() -> None:
    key = generate_key().key
    with pytest.raises(InvalidKeyError):
        parse_key(key + "x" * 10_000)


# --- the secret-scanner regex ------------------------------------------------------------


@given(prefix=valid_prefixes)
def test_key_pattern_matches_generated_keys(prefix: str) -> None:
    key = generate_key(prefix).key
    pattern = re.compile(key_pattern(prefix))
    assert pattern.fullmatch(key)
    found = pattern.findall(f"export TOKEN={key}\nAuthorization: Bearer {key}; x-api-key={key}")
    assert found == [key, key, key]


def test_key_pattern_defaults_to_key_pattern_constant() -> None:
    assert key_pattern() == KEY_PATTERN
    key = generate_key().key
    assert re.search(KEY_PATTERN, f'"api_key": "{key}"').group(0) == key  # type: ignore[union-attr]


def test_key_pattern_does_not_match_truncated_extended_or_embedded_keys() -> None:
    key = generate_key().key
    for text in (key[:-1], key + "A", "x" + key, key.replace("apk_1", "apk_2"), key.upper()):
        assert re.search(KEY_PATTERN, text) is None, text


@given(prefix=valid_prefixes, body=base62_text)
def test_no_pattern_matches_clerk_style_secrets(prefix: str, body: str) -> None:
    clerk_like = f"ak_{body}"
    assert re.search(KEY_PATTERN, clerk_like) is None
    assert re.search(key_pattern(prefix), clerk_like) is None


@given(prefix=st.from_regex(r"(ak_)?[a-z][a-z0-9_]{0,28}", fullmatch=True))
@example("ak_live")
def test_no_accepted_prefix_issues_keys_that_look_like_clerk_keys(prefix: str) -> None:
    try:
        key = generate_key(prefix).key
    except InvalidInputError:
        return
    assert not key.startswith("ak_")


@pytest.mark.parametrize("prefix", ["", "Apk", "ak", "ak_live", "a-b", "1a"])
def test_key_pattern_refuses_bad_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidInputError):
        key_pattern(prefix)


# --- alphabet and secrecy ----------------------------------------------------------------


def test_the_alphabet_is_url_header_shell_and_double_click_safe() -> None:
    assert sorted(BASE62_ALPHABET) == sorted(string.ascii_letters + string.digits)
    key = generate_key("my_app").key
    assert quote(key, safe="") == key
    assert shlex.quote(key) == key
    assert re.fullmatch(r"\w+", key, re.ASCII)  # one word: a double-click selects it all
    # RFC 9110 token characters, so it fits any header value unquoted.
    assert re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", key)


def test_parsed_key_repr_hides_the_key() -> None:
    parsed = generate_key()
    for text in (repr(parsed), str(parsed), f"{parsed}"):
        assert parsed.key not in text
        assert secret_part(parsed.key) not in text
        assert parsed.id in text


def test_parsed_key_is_frozen() -> None:
    parsed = generate_key()
    with pytest.raises(AttributeError):
        parsed.key = "x"  # type: ignore[misc]


@given(prefix=valid_prefixes)
def test_the_hint_shows_no_secret_character(prefix: str) -> None:
    parsed = generate_key(prefix)
    hint = parsed.hint
    assert hint == display_hint(parsed.key)
    assert hint.startswith(f"{prefix}_1")
    assert hint.endswith(parsed.key[-4:])
    secret = secret_part(parsed.key, prefix)
    # Nothing of the secret: 4 visible body characters are the version and lookup id.
    assert not any(secret[i : i + 4] in hint for i in range(len(secret) - 3))
    assert len(hint) == len(prefix) + 1 + 4 + 1 + 4


@pytest.mark.parametrize("lookup_id", [123, 1.5, b"AbCdEf123456", ["AbCdEf123456"]])
def test_a_non_string_lookup_id_is_refused(lookup_id: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        generate_key(id=lookup_id)  # type: ignore[arg-type]
    assert caught.value.field == "id"
    assert not is_lookup_id(lookup_id)


def test_is_lookup_id() -> None:
    assert not is_lookup_id(None)
    assert is_lookup_id("AbCdEf123456")
    assert not is_lookup_id("AbCdEf12345")
    assert not is_lookup_id("AbCdEf1234567")
    assert not is_lookup_id("AbCdEf12345-")


# --- prefix rules -----------------------------------------------------------------------


@given(prefix=valid_prefixes)
def test_valid_prefixes_are_accepted(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["ak", "ak_", "ak_live", "ak_test_v2"])
def test_clerk_prefixes_are_reserved(prefix: str) -> None:
    with pytest.raises(InvalidInputError, match="reserved") as caught:
        validate_prefix(prefix)
    assert caught.value.field == "key_prefix"
    with pytest.raises(InvalidInputError):
        generate_key(prefix)


@pytest.mark.parametrize("prefix", ["aka", "akx_", "apk", "a", "k_", "sk_apk"])
def test_prefixes_merely_starting_with_ak_letters_are_fine(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix",
    ["", "A", "Apk", "1apk", "_apk", "a-b", "a.b", "a b", "apk ", "é", "a" * 33, "ａpk", "apk\n"],
)
def test_malformed_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_prefix(prefix)
    assert caught.value.field == "key_prefix"


@pytest.mark.parametrize("prefix", [None, 5, b"apk", ["apk"]])
def test_non_string_prefixes_are_refused(prefix: object) -> None:
    with pytest.raises(InvalidInputError):
        validate_prefix(prefix)  # type: ignore[arg-type]


@given(prefix=st.text())
def test_arbitrary_prefix_text_is_accepted_or_refused_cleanly(prefix: str) -> None:
    try:
        validate_prefix(prefix)
    except InvalidInputError:
        return
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,31}", prefix)
    assert parse_key(generate_key(prefix).key, prefix).prefix == prefix


def test_parsed_key_equality_is_by_value() -> None:
    parsed = generate_key()
    assert ParsedKey(parsed.prefix, parsed.id, parsed.key) == parsed


@given(
    st.one_of(
        st.text(max_size=80),
        st.builds(
            lambda k, i, c: k[:i] + c + k[i + 1 :],
            st.just(generate_key().key),
            st.integers(0, 55),
            st.sampled_from(keyformat.BASE62_ALPHABET),
        ),
        st.just(generate_key().key),
    )
)
def test_try_parse_key_agrees_with_parse_key(text: str) -> None:
    parsed = keyformat.try_parse_key(text)
    try:
        expected = parse_key(text)
    except InvalidKeyError:
        assert parsed is None
    else:
        assert parsed == expected


# --- keys where an id is expected (the command line) --------------------------------------


@given(prefix=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True))
def test_a_key_of_any_prefix_gives_its_lookup_id(prefix: str) -> None:
    from apikeys._keyformat import try_parse_key_any_prefix

    if prefix == "ak" or prefix.startswith("ak_"):
        return
    key = generate_key(prefix)
    parsed = try_parse_key_any_prefix(key.key)
    assert parsed is not None
    assert parsed.id == key.id


@given(
    prefix=st.sampled_from(["apk", "sk_live", "acme"]),
    kind=st.sampled_from(["typo", "drop", "add", "quote", "separator", "space"]),
    position=st.integers(0, 51),
    char=st.sampled_from(BASE62_ALPHABET),
)
def test_a_damaged_key_looks_like_a_key_and_parses_as_none(
    prefix: str, kind: str, position: int, char: str
) -> None:
    from apikeys._keyformat import looks_like_key, try_parse_key_any_prefix

    key = generate_key(prefix).key
    at = len(prefix) + 1 + position  # a position in the body
    damaged = {
        "typo": key[:at] + char + key[at + 1 :],
        "drop": key[:at] + key[at + 1 :],
        "add": key[:at] + char + key[at:],
        "quote": f'"{key}"',
        "separator": key.replace("_", "-"),
        "space": key[:at] + " " + key[at:],
    }[kind]
    assume(damaged != key)
    assert looks_like_key(damaged)
    assert try_parse_key_any_prefix(damaged) is None


@pytest.mark.parametrize(
    "key_id",
    ["AbCdEfGhIjKl", "ak_" + "0123456789abcdef" * 2, "api_key_" + "ABCDEF0123456789" * 2,
     "3f2b1c9e-8a7d-4e6f-9b0a-1c2d3e4f5a6b", "0123456789abcdef" * 2, "NoSuchKey123"],
)  # fmt: skip
def test_key_ids_do_not_look_like_keys(key_id: str) -> None:
    from apikeys._keyformat import looks_like_key

    assert not looks_like_key(key_id)


# --- the messages users see, and keys of any prefix at the edges ----------------------------------


@pytest.mark.parametrize("prefix", ["Apk", "1apk", "a" * 33, None])
def test_a_malformed_prefix_is_refused_with_the_rule(prefix: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_prefix(prefix)  # type: ignore[arg-type]
    assert caught.value.message == (
        "key prefix must be 1-32 characters of a-z, 0-9 and _, starting with a letter"
    )


def test_a_malformed_id_is_refused_with_the_rule() -> None:
    with pytest.raises(InvalidInputError) as caught:
        generate_key(id="short")
    assert caught.value.message == "lookup id must be 12 base62 characters"


def test_the_deprecated_lookup_id_keyword_names_both_spellings() -> None:
    message = (
        "generate_key(lookup_id=...) is deprecated and will be removed in the next release;"
        " use generate_key(id=...)"
    )
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(message)}$"):
        generate_key(lookup_id="AbCdEf123456")


def test_id_and_lookup_id_together_are_refused_saying_so() -> None:
    with (
        pytest.warns(DeprecationWarning, match="lookup_id"),
        pytest.raises(TypeError, match=r"^generate_key\(\) got both id and lookup_id$"),
    ):
        generate_key(id="AbCdEf123456", lookup_id="AbCdEf123456")


@pytest.mark.parametrize("value", [None, 5, b"apk_1", bytearray(b"apk_1"), ["apk_1"]])
def test_a_non_string_is_no_key_of_any_prefix(value: object) -> None:
    assert keyformat.try_parse_key_any_prefix(value) is None


def test_the_longest_key_of_any_prefix_parses_and_one_more_character_does_not() -> None:
    prefix = "p" * keyformat.MAX_PREFIX_LENGTH
    key = generate_key(prefix)
    assert len(key.key) == MAX_KEY_LENGTH
    assert keyformat.try_parse_key_any_prefix(key.key) == key
    longer = with_checksum(f"q{prefix}_1{key.id}{secret_part(key.key, prefix)}")
    assert keyformat.try_parse_key_any_prefix(longer) is None


@pytest.mark.parametrize("prefix", ["ak", "ak_live", "Apk", "1apk", "a-b"])
def test_a_forged_key_under_a_prefix_we_never_issue_is_no_key_of_any_prefix(prefix: str) -> None:
    forged = with_checksum(f"{prefix}_1AbCdEf123456{'s' * SECRET_LENGTH}")
    assert keyformat.try_parse_key(forged, prefix) is not None  # well formed but for the prefix
    assert keyformat.try_parse_key_any_prefix(forged) is None


@pytest.mark.parametrize(
    "text", ["ak_" + "x" * 16, "token=ak_Zx9+Qw/Er_Ty-Ui=Op", "'ak_abcd+efgh/ijkl=mnop'"]
)
def test_text_carrying_a_short_clerk_secret_looks_like_a_key(text: str) -> None:
    assert keyformat.looks_like_key(text)

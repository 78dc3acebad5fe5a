"""The local key format: generation and parsing, free of IO.

A key reads ``<prefix>_<body>``; version 1 of the body is 52 base62 characters::

    apk_1 AbCdEfGhIjKl 33-char-secret................... XyZ123
         | |            |                                 |
         | lookup id    secret (33 chars, ~196 bits)      CRC32 of everything
         | (12 chars)                                      before it, base62
         version

Base62 (``0-9A-Za-z``) survives URLs, HTTP headers and shells unquoted, and a
double-click selects the whole key because ``_`` is a word character. The
lookup id makes validation one indexed read; the checksum rejects typos and
garbage before any IO. Secret scanners can match version 1 keys with
:data:`KEY_PATTERN` (shown for the default prefix ``apk``)::

    \\bapk_1[0-9A-Za-z]{51}\\b
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass

from apikeys._deprecation import warn_renamed
from apikeys._errors import InvalidInputError, InvalidKeyError

BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_INDEX = {char: index for index, char in enumerate(BASE62_ALPHABET)}

FORMAT_VERSION = "1"
DEFAULT_PREFIX = "apk"
LOOKUP_ID_LENGTH = 12
SECRET_LENGTH = 33  # 33 * log2(62) = 196.5 bits of entropy
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits
BODY_LENGTH = len(FORMAT_VERSION) + LOOKUP_ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
# Longest prefix we accept; with the body this bounds any key we could issue,
# so longer input is refused before it is even hashed.
MAX_PREFIX_LENGTH = 32
MAX_KEY_LENGTH = MAX_PREFIX_LENGTH + 1 + BODY_LENGTH

_PREFIX_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Clerk's keys start with ``ak_``; ours must never be mistaken for them.
_RESERVED_PREFIXES = frozenset({"ak"})
_RESERVED_STARTS = tuple(f"{reserved}_" for reserved in sorted(_RESERVED_PREFIXES))
_BASE62_RUN = f"[{BASE62_ALPHABET}]"
_LOOKUP_ID_RE = re.compile(f"{_BASE62_RUN}{{{LOOKUP_ID_LENGTH}}}")

# Clerk's API keys (the clerk:// backend): ids are ``ak_`` and 32 hex digits (``api_key_``
# in older answers); secrets are ``ak_`` and 16-509 characters of base64-like text.
CLERK_KEY_ID_RE = re.compile(r"(?:ak|api_key)_[0-9A-Fa-f]{32}")
CLERK_SECRET_RE = re.compile(r"ak_[A-Za-z0-9+/=_\-]{16,509}")
# Text that carries a key, whole or damaged: 30+ base62 characters in a row, once spaces,
# quotes and other punctuation are dropped, that are not all hex digits (a key body has 52;
# ids are shorter, or hex), or what follows Clerk's ak_.
_NOT_BASE62_OR_SEPARATOR_RE = re.compile(r"[^0-9A-Za-z_]")
_BASE62_RUN_RE = re.compile(r"[0-9A-Za-z]{30,}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")
_CLERK_SECRET_PART_RE = re.compile(r"ak_[A-Za-z0-9+/=_\-]{16,}")

#: A regular expression that matches version 1 keys with the default prefix.
KEY_PATTERN = rf"\b{DEFAULT_PREFIX}_{FORMAT_VERSION}[0-9A-Za-z]{{{BODY_LENGTH - 1}}}\b"


def key_pattern(prefix: str = DEFAULT_PREFIX) -> str:
    """Return the secret-scanner regex for version 1 keys with ``prefix``."""
    validate_prefix(prefix)
    return rf"\b{re.escape(prefix)}_{FORMAT_VERSION}[0-9A-Za-z]{{{BODY_LENGTH - 1}}}\b"


def validate_prefix(prefix: str) -> str:
    """Check a key prefix and return it.

    Raises:
        InvalidInputError: The prefix is not 1-32 characters of ``[a-z0-9_]``
            starting with a letter, or it is (or starts with) Clerk's ``ak_``.
    """
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise InvalidInputError(
            "key prefix must be 1-32 characters of a-z, 0-9 and _, starting with a letter",
            field="key_prefix",
        )
    # "ak_live" would issue "ak_live_1…", which starts like a Clerk "ak_" key.
    if prefix in _RESERVED_PREFIXES or prefix.startswith(_RESERVED_STARTS):
        raise InvalidInputError(
            f"key prefix {prefix!r} is reserved for Clerk keys", field="key_prefix"
        )
    return prefix


# Every two-digit base62 string, by value: a checksum is encoded with three
# lookups instead of six divmods (parse_key runs on every uncached request).
_BASE62_PAIRS = tuple(high + low for high in BASE62_ALPHABET for low in BASE62_ALPHABET)
_PAIR_BASE = len(_BASE62_PAIRS)  # 62**2; a CRC32 is below 62**6, so three pairs hold it


def _checksum(text: str) -> str:
    high, low = divmod(zlib.crc32(text.encode("ascii")), _PAIR_BASE)
    top, middle = divmod(high, _PAIR_BASE)
    return _BASE62_PAIRS[top] + _BASE62_PAIRS[middle] + _BASE62_PAIRS[low]


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62_ALPHABET) for _ in range(length))


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A key that passed every check that needs no IO.

    ``repr`` shows only the key's id: the full key is a secret.
    """

    prefix: str
    id: str
    key: str

    def __repr__(self) -> str:
        return f"ParsedKey(prefix={self.prefix!r}, id={self.id!r})"

    @property
    def lookup_id(self) -> str:
        """Deprecated alias of :attr:`id`."""
        warn_renamed("ParsedKey.lookup_id", "ParsedKey.id")
        return self.id

    @property
    def hint(self) -> str:
        """A display hint safe to store and show: prefix, id and last 4 characters."""
        return display_hint(self.key)


def display_hint(key: str) -> str:
    """Return the non-secret display hint of a key, e.g. ``apk_1AbC…wxyz``."""
    prefix, _, body = key.rpartition("_")
    return f"{prefix}_{body[:4]}…{body[-4:]}"


def generate_key(
    prefix: str = DEFAULT_PREFIX, id: str | None = None, *, lookup_id: str | None = None
) -> ParsedKey:
    """Generate a new key with a fresh secret from :mod:`secrets`.

    Args:
        prefix: The key's prefix.
        id: The key's id (12 base62 characters); a fresh random one by default.
        lookup_id: Deprecated alias of ``id``.
    """
    validate_prefix(prefix)
    if lookup_id is not None:
        warn_renamed("generate_key(lookup_id=...)", "generate_key(id=...)")
        if id is not None:
            raise TypeError("generate_key() got both id and lookup_id")
        id = lookup_id
    if id is None:
        id = _random_base62(LOOKUP_ID_LENGTH)
    elif not isinstance(id, str) or not _LOOKUP_ID_RE.fullmatch(id):
        raise InvalidInputError("lookup id must be 12 base62 characters", field="id")
    head = f"{prefix}_{FORMAT_VERSION}{id}{_random_base62(SECRET_LENGTH)}"
    key = head + _checksum(head)
    return ParsedKey(prefix=prefix, id=id, key=key)


def parse_key(key: object, prefix: str = DEFAULT_PREFIX) -> ParsedKey:
    """Parse and checksum-verify a key without any IO.

    Args:
        key: Untrusted input, typically from a request header.
        prefix: The prefix this deployment issues keys with.

    Raises:
        InvalidKeyError: For anything that is not a well-formed key with this
            prefix: the same error whatever the reason, so the caller learns
            nothing about why.
    """
    parsed = try_parse_key(key, prefix)
    if parsed is None:
        raise InvalidKeyError()
    return parsed


def try_parse_key(key: object, prefix: str = DEFAULT_PREFIX) -> ParsedKey | None:
    """Like :func:`parse_key`, but ``None`` for anything malformed.

    For hot paths that refuse garbage with an error of their own: raising and
    catching an exception costs more than the checks themselves.
    """
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    head, sep, body = key.rpartition("_")
    # The body is the version then base62 only. For ASCII text isalnum() means
    # exactly [0-9A-Za-z]; these tests cost less than a regex match.
    if (
        not sep
        or head != prefix
        or len(body) != BODY_LENGTH
        or body[0] != FORMAT_VERSION
        or not body.isascii()
        or not body.isalnum()
    ):
        return None
    checked, checksum = key[:-CHECKSUM_LENGTH], body[-CHECKSUM_LENGTH:]
    # The checksum is no secret (anyone can compute it from the key), so a
    # plain comparison is fine here; the secret is compared by argon2.
    if _checksum(checked) != checksum:
        return None
    return ParsedKey(prefix=prefix, id=body[1 : 1 + LOOKUP_ID_LENGTH], key=key)


def try_parse_key_any_prefix(key: object) -> ParsedKey | None:
    """Like :func:`try_parse_key`, for a key of any valid prefix, read from the key itself.

    For tools that act on keys of any deployment (the command line); Clerk's
    ``ak_`` keys are never local ones.
    """
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH:
        return None
    prefix = key.rpartition("_")[0]
    if (
        not _PREFIX_RE.fullmatch(prefix)
        or prefix in _RESERVED_PREFIXES
        or prefix.startswith(_RESERVED_STARTS)
    ):
        return None
    return try_parse_key(key, prefix)


def looks_like_key(text: str) -> bool:
    """Tell whether ``text`` carries a key, whole or damaged, of this format or Clerk's.

    Such text is a secret: never echo it, not even to say it is malformed. A
    key id (``AbCdEfGhIjKl``, Clerk's ``ak_`` + 32 hex digits) is not.
    """
    if CLERK_KEY_ID_RE.fullmatch(text.strip()):
        return False
    if _CLERK_SECRET_PART_RE.search(text):
        return True
    runs = _BASE62_RUN_RE.findall(_NOT_BASE62_OR_SEPARATOR_RE.sub("", text))
    return any(not _HEX_RE.fullmatch(run) for run in runs)


def is_lookup_id(value: object) -> bool:
    """Tell whether ``value`` has the shape of a local key id."""
    return isinstance(value, str) and _LOOKUP_ID_RE.fullmatch(value) is not None


__all__ = [
    "BASE62_ALPHABET",
    "CLERK_KEY_ID_RE",
    "CLERK_SECRET_RE",
    "KEY_PATTERN",
    "MAX_KEY_LENGTH",
    "ParsedKey",
    "display_hint",
    "generate_key",
    "is_lookup_id",
    "key_pattern",
    "looks_like_key",
    "parse_key",
    "try_parse_key",
    "try_parse_key_any_prefix",
    "validate_prefix",
]

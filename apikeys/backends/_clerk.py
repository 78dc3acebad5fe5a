"""The IO-free half of the Clerk backend: requests, retries, answer parsing, flows.

Every operation is a generator (see :mod:`apikeys._flow`) that yields
:class:`Send` (one HTTP exchange with Clerk's Backend API) and
:class:`Sleep` (a backoff pause) and receives an :class:`httpx.Response`
or ``None``; transport failures are thrown back into it. Validation yields
:class:`SharedVerify` as well: one verification with Clerk that concurrent
callers of the same secret share; and, with ``redis_url``, the flows that end
a key yield :class:`~apikeys.backends._shells.Announce`, so every process
sharing the Redis drops it from its cache. Before each exchange a flow asks
the manager's upstream guard (:mod:`apikeys._upstream`) whether Clerk's own
429 paused every call, and before verifying a secret not seen succeed
recently it draws from the verification budget (a :data:`GuardRequest`).
The sync and async managers in :mod:`apikeys.backends.clerk` only perform
those requests.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import hmac
import logging
import math
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from apikeys import __version__
from apikeys._arguments import (
    KEEP,
    Keep,
    build_create_request,
    check_grace,
    check_key_id,
    check_limit_change,
    check_owner,
    check_page,
    check_reason,
    check_user_id,
)
from apikeys._cache import DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_TTL, VerificationCache
from apikeys._config import (
    DEFAULT_CLERK_API_URL,
    DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER,
    Settings,
)
from apikeys._errors import (
    APIKeysError,
    BackendUnavailableError,
    ConfigurationError,
    ExpiredKeyError,
    InvalidInputError,
    InvalidKeyError,
    KeyLimitReachedError,
    KeyNotFoundError,
    MissingDependencyError,
    RevocationIncompleteError,
    RevokedKeyError,
    VerificationBudgetSpentError,
)
from apikeys._events import DEFAULT_SUSPICIOUS_FAILURES, DEFAULT_SUSPICIOUS_WINDOW, EventReporter
from apikeys._expiry import Expiration, WallClock, check_clock, parse_expiration, utcnow
from apikeys._keyformat import CLERK_KEY_ID_RE, CLERK_SECRET_RE
from apikeys._keylimits import RateLimit
from apikeys._keystate import check_key_state
from apikeys._limitstorage import (
    LIMITS_CLAIM,
    NO_LIMITS,
    KeyLimits,
    anchor_at,
    limits_from_claims,
    limits_to_claim,
)
from apikeys._models import APIKey, APIKeyPage, NewAPIKey, VerifiedKey
from apikeys._revocations import RevocationChannel
from apikeys._upstream import (
    DEFAULT_VERIFICATION_BUDGET,
    Draw,
    FloodWatch,
    GuardRequest,
    Learn,
    Look,
    Outlook,
    Pause,
    guard_for,
    parse_verification_budget,
)
from apikeys.backends._shells import Announce, FlowBackend, Spend, meter_for

try:
    import httpx
except ImportError as exc:
    raise MissingDependencyError("httpx", "clerk") from exc

logger = logging.getLogger("apikeys.clerk")

ROTATED_REASON = "rotated"
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 0.2
DEFAULT_MAX_RETRY_WAIT = 5.0
#: Seconds every call to Clerk pauses after a 429 that names no ``Retry-After``.
DEFAULT_PAUSE = 1.0
#: The longest pause a 429 may ask for; past it one call tries again.
MAX_PAUSE = 300.0

#: Clerk refuses key names shorter than this.
MIN_NAME_LENGTH = 3
#: Longest presented secret we send to Clerk; longer ones are refused locally.
MAX_SECRET_LENGTH = 512

# What Clerk secrets look like: ``ak_`` then base64-ish text. Anything else is
# refused without a (billed) verification call.
_SECRET_RE = CLERK_SECRET_RE
# Ids of Clerk API keys, as the spec's path parameter allows them.
_KEY_ID_RE = CLERK_KEY_ID_RE
# Owners Clerk accepts as ``subject``: users, organisations, machines, SCIM directories.
_SUBJECT_RE = re.compile(r"(?:user|org|mch|scim)_[A-Za-z0-9_]{27}")
_NAME_RE = re.compile(r"\S(?:.*\S)?", re.DOTALL)
_CREATED_BY_RE = re.compile(r"user_[A-Za-z0-9_]{27}")
# Clerk's own ``created_by`` holds a user id (``^user_\w{27}$``), never a key id, so
# the key that created a key is recorded in its ``description``, in this form.
_CREATOR_PREFIX = "apikeys:created_by="
_CREATOR_RE = re.compile(re.escape(_CREATOR_PREFIX) + r"(ak_[0-9A-Fa-f]{32})")
# Keys read per page when a revocation looks for a key's descendants.
_LIST_PAGE = 100
# What may go in an HTTP header value unquoted: the secret key, the API version.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Years 1970-9999 in milliseconds: anything outside is a corrupt answer.
_MAX_TIMESTAMP_MS = 253_402_300_799_999

# How far short of a whole second a stored expiry may fall and still count as it.
_EXPIRY_SLACK_MS = 10

_RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
# Failures after which the request surely never reached Clerk.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, ConnectionRefusedError)
_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret


# --- IO requests yielded by the flows ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """One HTTP exchange with Clerk; the result is the :class:`httpx.Response`.

    ``replayable`` is False for requests that must not be sent twice once
    they may have reached Clerk (creating a key).
    """

    method: str
    path: str
    operation: str
    body: dict[str, Any] | None = field(default=None, repr=False)
    params: dict[str, str] | None = None
    replayable: bool = True

    @property
    def quotable(self) -> bool:
        """Whether Clerk's error prose about this request may be quoted (not for secrets)."""
        return self.operation != "verify"


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait before the next attempt; the result is ``None``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class SharedVerify:
    """Run :meth:`ClerkBase._verify_flow` for ``secret``, sharing one run among the
    callers that present the same secret at once; the result is the :class:`VerifiedKey`.
    """

    secret: str = field(repr=False)
    digest: bytes = field(repr=False)


ClerkOp = Send | Sleep | SharedVerify | Announce | Spend | GuardRequest


# --- Clerk's key object --------------------------------------------------------------


class ClerkKeyObject(BaseModel):
    """An API key as Clerk's Backend API describes it (unknown fields are ignored).

    Times are Unix milliseconds; ``secret`` appears only in the answer to create.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    id: str
    subject: str
    name: str
    description: str | None = None
    claims: Any = None
    scopes: list[str] = []
    revoked: bool
    revocation_reason: str | None = None
    expired: bool
    expiration: float | None = None
    created_by: str | None = None
    last_used_at: float | None = None
    created_at: float
    updated_at: float | None = None
    secret: SecretStr | None = None


def check_subject(user_id: object) -> str:
    """Return ``user_id`` if Clerk accepts it as a key's subject, else raise.

    Raises:
        InvalidInputError: It is not a Clerk ``user_…``/``org_…`` (or machine,
            SCIM) id.
    """
    user_id = check_user_id(user_id)
    if not _SUBJECT_RE.fullmatch(user_id):
        raise InvalidInputError(
            "Clerk keys belong to a Clerk user or organisation: user_id must be a Clerk id"
            " such as 'user_…' or 'org_…' (prefix, underscore, 27 letters or digits)",
            field="user_id",
        )
    return user_id


def check_clerk_name(name: str) -> str:
    """Refuse names Clerk refuses (fewer than 3 characters)."""
    if len(name) < MIN_NAME_LENGTH or not _NAME_RE.fullmatch(name):
        raise InvalidInputError(
            f"Clerk needs key names of at least {MIN_NAME_LENGTH} characters", field="name"
        )
    return name


def is_clerk_secret(secret: str) -> bool:
    """Tell whether a presented string has the shape of a Clerk API key secret."""
    return _SECRET_RE.fullmatch(secret) is not None


def is_clerk_key_id(key_id: str) -> bool:
    """Tell whether ``key_id`` has the shape of a Clerk API key id."""
    return _KEY_ID_RE.fullmatch(key_id) is not None


def secret_hint(secret: str) -> str:
    """The display hint of a Clerk secret: ``ak_…`` and its last 4 characters."""
    return f"ak_…{secret[-4:]}"


def from_milliseconds(value: float) -> datetime:
    """Convert a Clerk timestamp (Unix milliseconds) to an aware UTC datetime."""
    if not 0 <= value <= _MAX_TIMESTAMP_MS:
        raise ValueError("timestamp out of range")
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def expiry_from_milliseconds(value: float | None) -> datetime | None:
    """Clerk's expiry, rounded down to the whole second.

    Clerk only takes a lifetime relative to its own clock, so what it stores is
    the requested instant plus the request's transit time; rounding down gives
    back an instant asked for in whole seconds (forgiving a few milliseconds
    short, from millisecond rounding on either side), and reports a key as
    living at most that much longer than Clerk lets it.
    """
    if value is None:
        return None
    return from_milliseconds(math.floor((value + _EXPIRY_SLACK_MS) / 1000) * 1000)


def lifetime_seconds(expires_at: datetime, now: datetime) -> float:
    """``seconds_until_expiration`` for an instant: positive, millisecond precision."""
    return max(round((expires_at - now).total_seconds(), 3), 0.001)


def creator_of(key: ClerkKeyObject) -> str | None:
    """The id of the key that created ``key``, from its ``description``, or ``None``."""
    if key.description is None:
        return None
    match = _CREATOR_RE.fullmatch(key.description)
    return match.group(1) if match else None


def creator_description(key_id: str) -> str:
    """The ``description`` that records ``key_id`` as a key's creator."""
    return _CREATOR_PREFIX + key_id


def to_api_key(key: ClerkKeyObject, *, hint: str = "") -> APIKey:
    """Map Clerk's key object to :class:`~apikeys.APIKey`.

    Clerk keeps no revocation time; ``updated_at`` (the last change, which
    for a revoked key is normally the revocation) stands in for it.
    """
    revoked_at = None
    if key.revoked:
        revoked_at = from_milliseconds(key.updated_at or key.created_at)
    try:
        limits = limits_from_claims(key.claims)
    except ValueError:
        # Shown without limits, so it can be listed and its limits set again;
        # validation refuses it meanwhile (see to_verified).
        limits = NO_LIMITS
    return APIKey(
        id=key.id,
        user_id=key.subject,
        name=key.name,
        scopes=tuple(key.scopes),
        created_at=from_milliseconds(key.created_at),
        expires_at=expiry_from_milliseconds(key.expiration),
        last_used_at=None if key.last_used_at is None else from_milliseconds(key.last_used_at),
        revoked_at=revoked_at,
        revocation_reason=key.revocation_reason if key.revoked else None,
        metadata=claims_to_metadata(key.claims),
        hint=hint,
        created_by=creator_of(key),
        rate_limit=limits.rate_limit,
        quota=limits.quota,
    )


def to_verified(key: ClerkKeyObject) -> VerifiedKey:
    """Map a verified Clerk key to :class:`~apikeys.VerifiedKey`.

    Raises:
        InvalidKeyError: The key's ``"apikeys"`` claim cannot be read (edited by hand
            in Clerk's dashboard, say): such a key is refused, never unlimited.
    """
    try:
        limits = limits_from_claims(key.claims)
    except ValueError:
        logger.error(
            "API key %s has an %r claim this release cannot read; it is refused until"
            " its limits are set again (update_api_key_limits)",
            key.id,
            LIMITS_CLAIM,
        )
        raise InvalidKeyError(key_id=key.id) from None
    return VerifiedKey(
        id=key.id,
        user_id=key.subject,
        name=key.name,
        scopes=tuple(key.scopes),
        expires_at=expiry_from_milliseconds(key.expiration),
        metadata=claims_to_metadata(key.claims),
        rate_limit=limits.rate_limit,
        quota=limits.quota,
        quota_anchor=limits.quota_anchor,
        meter_id=limits.meter_id or key.id,
    )


def claims_to_metadata(claims: Any) -> dict[str, Any]:
    """Clerk's free-form ``claims`` as our metadata dict, without the limits' claim.

    Keys made elsewhere (the Clerk dashboard, another SDK) may carry claims
    that are not an object; those are kept whole under ``"claims"``.
    """
    if claims is None:
        return {}
    if isinstance(claims, dict):
        if LIMITS_CLAIM in claims:
            return {name: value for name, value in claims.items() if name != LIMITS_CLAIM}
        return claims
    return {"claims": claims}


def claims_with_limits(claims: Any, limits: KeyLimits) -> Any:
    """``claims`` with the limits' claim set to ``limits`` (removed when there are none).

    Raises:
        InvalidInputError: ``claims`` is not an object (a key made elsewhere), so
            there is nowhere to store limits.
    """
    claim = limits_to_claim(limits)
    if claims is None:
        return None if claim is None else {LIMITS_CLAIM: claim}
    if not isinstance(claims, dict):
        if claim is None:
            return claims
        raise InvalidInputError(
            "this key's claims are not a JSON object, so it cannot hold limits", field="key_id"
        )
    kept = {name: value for name, value in claims.items() if name != LIMITS_CLAIM}
    return kept if claim is None else {**kept, LIMITS_CLAIM: claim}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or utcnow())).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), 86_400.0)


def error_details(response: httpx.Response, *, quote_text: bool = True) -> str:
    """A short description of a Clerk error answer for messages and logs.

    With ``quote_text=False`` Clerk's prose is left out and only the status,
    error code and trace id remain: used for answers to verify, whose text
    might quote the presented secret.
    """
    parts = [f"HTTP {response.status_code}"]
    try:
        payload = response.json()
    except ValueError:
        return parts[0]
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            code = first.get("code")
            text = first.get("long_message") or first.get("message")
            if isinstance(code, str):
                parts.append(code[:100])
            if isinstance(text, str) and quote_text:
                parts.append(text[:300])
        trace = payload.get("clerk_trace_id")
        if isinstance(trace, str):
            parts.append(f"trace {trace[:64]}")
    return ": ".join(parts)


def _malformed(operation: str, detail: str) -> BackendUnavailableError:
    return BackendUnavailableError(f"Clerk sent a malformed answer to {operation} ({detail})")


def json_of(response: httpx.Response, operation: str) -> Any:
    """Decode a 2xx answer's JSON body, or raise :class:`BackendUnavailableError`."""
    try:
        return response.json()
    except ValueError:
        raise _malformed(operation, "not JSON") from None


def parse_key_object(payload: Any, operation: str) -> ClerkKeyObject:
    """Validate one key object; malformed answers raise :class:`BackendUnavailableError`.

    The validation error is not chained: it would quote the answer, which
    holds the new key's secret after a create.
    """
    try:
        key = ClerkKeyObject.model_validate(payload)
        # Convert every timestamp now, so a corrupt one fails here and not later.
        to_api_key(key)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)[:3]
        )
        raise _malformed(operation, problems) from None
    except (ValueError, OverflowError, OSError):
        raise _malformed(operation, "timestamp out of range") from None
    return key


# --- the shared base --------------------------------------------------------------------


class _DigestMemory:
    """What this process learnt about secrets it saw verify: their key id, and
    whether the key was since found revoked. Keyed by cache digest, never a secret.

    After Clerk refuses a secret that verified before, the key id tells which
    key to look up so the holder learns *why* (revoked or expired) even when
    Clerk's verify endpoint only answers 404. A revocation is final in Clerk,
    so a secret known to be revoked is refused from then on without a call.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._known: OrderedDict[bytes, tuple[str, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, digest: bytes, key_id: str, *, revoked: bool = False) -> None:
        with self._lock:
            self._known[digest] = (key_id, revoked)
            self._known.move_to_end(digest)
            while len(self._known) > self.max_entries:
                self._known.popitem(last=False)

    def lookup(self, digest: bytes) -> tuple[str, bool] | None:
        """``(key id, known revoked)`` for a digest seen before, else ``None``."""
        with self._lock:
            return self._known.get(digest)


class ClerkBase(FlowBackend):
    """Everything but the IO: configuration, requests, retries, parsing and the flows.

    Its arguments are those of :class:`apikeys.backends.clerk.ClerkKeyManager`,
    documented there.
    """

    max_secret_length = MAX_SECRET_LENGTH

    def __init__(
        self,
        secret_key: str | SecretStr,
        *,
        api_url: str = DEFAULT_CLERK_API_URL,
        api_version: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff: float = DEFAULT_RETRY_BACKOFF,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        suspicious_failures: int = DEFAULT_SUSPICIOUS_FAILURES,
        suspicious_window: float = DEFAULT_SUSPICIOUS_WINDOW,
        max_active_keys_per_owner: int = DEFAULT_MAX_ACTIVE_KEYS_PER_OWNER,
        verification_budget: RateLimit | str | None = DEFAULT_VERIFICATION_BUDGET,
        redis_url: str | None = None,
        clock: WallClock = utcnow,
    ) -> None:
        self._secret_key = _check_secret_key(secret_key)
        self.clock = check_clock(clock)
        try:
            self.verification_budget = parse_verification_budget(verification_budget)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if max_active_keys_per_owner < 0:
            raise ConfigurationError("max_active_keys_per_owner must be >= 0 (0: no limit)")
        self.max_active_keys_per_owner = max_active_keys_per_owner
        self.api_url = _check_api_url(api_url)
        if timeout <= 0:
            raise ConfigurationError("timeout must be > 0 seconds")
        if max_retries < 0 or retry_backoff < 0 or max_retry_wait < 0:
            raise ConfigurationError("max_retries, retry_backoff and max_retry_wait must be >= 0")
        if api_version and not _TOKEN_RE.fullmatch(api_version):
            raise ConfigurationError("CLERK_API_VERSION must be a version such as 2025-11-10")
        self.api_version = api_version
        self.timeout = httpx.Timeout(timeout)
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_retry_wait = max_retry_wait
        try:
            self.cache = VerificationCache(cache_ttl, cache_max_entries, wall_clock=self.clock)
            self.events = EventReporter(
                "clerk",
                suspicious_failures=suspicious_failures,
                suspicious_window=suspicious_window,
                redis_url=redis_url,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Clerk backend settings: {exc}") from None
        self._verified_ids = _DigestMemory(cache_max_entries)
        # Keyed by this instance's secret key: the digests Redis may hold are of no use
        # to anyone without it, and two Clerk instances sharing a Redis never mix.
        self._mark_key = hmac.digest(
            self._secret_key.get_secret_value().encode(), b"apikeys known secrets", "sha256"
        )
        seconds = self._seconds
        self.guard = guard_for(
            redis_url,
            self.verification_budget,
            namespace="clerk:" + hmac.digest(self._mark_key, b"instance", "sha256")[:8].hex(),
            max_known=cache_max_entries,
            clock=seconds,
        )
        budget_window = self.verification_budget.window if self.verification_budget else None
        self._floods = FloodWatch(
            budget_window.total_seconds() if budget_window else 10.0, clock=seconds
        )
        # Quotas are money: counted only where every process sees one count (Redis).
        self.counts_quotas = redis_url is not None
        self.meter = meter_for(redis_url, self.clock)
        self._hear_revocations_on(_revocation_channel_for(redis_url))
        # Without the Authorization header: that is built per request from the
        # SecretStr, so the secret key never sits in plain view on the manager.
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"apikeys/{__version__} (python; httpx)",
        }
        if api_version:
            self._headers["Clerk-API-Version"] = api_version

    @staticmethod
    def _options_from_settings(url: str, settings: Settings) -> dict[str, Any]:
        _check_backend_url(url)
        if settings.clerk_secret_key is None or not settings.clerk_secret_key.get_secret_value():
            raise ConfigurationError(
                "the Clerk backend needs your Clerk secret key: set CLERK_SECRET_KEY"
                " (Clerk Dashboard → API keys), or choose the local backend with"
                " APIKEYS_BACKEND=sqlite:///apikeys.db"
            )
        return {
            "secret_key": settings.clerk_secret_key,
            "api_url": settings.clerk_api_url,
            "api_version": settings.clerk_api_version,
            "timeout": settings.timeout,
            "cache_ttl": settings.cache_ttl,
            "cache_max_entries": settings.cache_max_entries,
            "suspicious_failures": settings.suspicious_failures,
            "suspicious_window": settings.suspicious_window,
            "max_active_keys_per_owner": settings.max_active_keys_per_owner,
            "verification_budget": settings.verification_budget,
            "redis_url": settings.redis_url.get_secret_value() if settings.redis_url else None,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r})"

    def _url(self, path: str) -> str:
        return self.api_url + path

    def _seconds(self) -> float:
        """The wall clock in seconds: the budget and the pause keep time by the injected clock."""
        return self.clock().timestamp()

    def _mark(self, secret: str) -> bytes:
        """The digest a secret is known by, the same in every process of this Clerk instance."""
        return hmac.digest(self._mark_key, secret.encode("utf-8", "surrogatepass"), hashlib.sha256)

    def _request_headers(self) -> dict[str, str]:
        return {**self._headers, "Authorization": f"Bearer {self._secret_key.get_secret_value()}"}

    # --- one exchange, with retries ------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling: float = min(self.retry_backoff * 2.0**attempt, self.max_retry_wait)
        return ceiling * _jitter.uniform(0.5, 1.0)

    def _exchange(
        self, send: Send, *, admitted: bool = False, drawn: bool = False
    ) -> Generator[ClerkOp, Any, httpx.Response]:
        """Send with bounded retries; return the final answer, whatever its status.

        Retried: connection failures, timeouts and 5xx (after ``Retry-After``
        when it is short enough). A create is retried only when Clerk surely did
        not act on it (no connection); otherwise the error says the key may
        exist. A 429 is never retried: it pauses every call (see :meth:`_paused_by`).
        Each attempt first checks that no pause is on, except the first when the
        caller has just checked (``admitted``). When the first attempt was drawn
        from the verification budget (``drawn``), so is every retry: a flood
        while Clerk struggles must not send it more calls than the budget allows.
        """
        attempt = 0
        while True:
            if attempt or not admitted:
                self._check_pause((yield Look()).paused_for)
            if attempt and drawn:
                wait = yield Draw()
                if wait is not None:
                    raise VerificationBudgetSpentError(retry_after=wait)
            try:
                response: httpx.Response = yield send
            except (httpx.RequestError, OSError) as exc:
                # OSError: a custom transport that does not wrap socket errors.
                surely_unsent = isinstance(exc, _NOT_SENT)
                if not send.replayable and not surely_unsent:
                    raise self._maybe_done(send, type(exc).__name__) from exc
                if attempt >= self.max_retries:
                    raise BackendUnavailableError(
                        f"Clerk is unreachable ({type(exc).__name__} on {send.operation},"
                        f" {attempt + 1} attempt(s))",
                        retry_after=1,
                    ) from exc
                delay = self._backoff(attempt)
                logger.warning(
                    "Clerk %s failed (%s); retry %d in %.2fs",
                    send.operation,
                    type(exc).__name__,
                    attempt + 1,
                    delay,
                )
            else:
                status = response.status_code
                if status == 429:
                    raise (yield from self._paused_by(response, send))
                if status not in _RETRYABLE_STATUSES:
                    return response
                if not send.replayable:
                    raise self._maybe_done(send, f"HTTP {status}")
                retry_after = parse_retry_after(
                    response.headers.get("Retry-After"), now=self.clock()
                )
                if attempt >= self.max_retries or (
                    retry_after is not None and retry_after > self.max_retry_wait
                ):
                    raise BackendUnavailableError(
                        f"Clerk failed ({error_details(response, quote_text=send.quotable)}"
                        f" on {send.operation},"
                        f" {attempt + 1} attempt(s))",
                        retry_after=retry_after if retry_after is not None else 1,
                    )
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                logger.warning(
                    "Clerk %s answered %d; retry %d in %.2fs",
                    send.operation,
                    status,
                    attempt + 1,
                    delay,
                )
            attempt += 1
            yield Sleep(delay)

    def _paused_by(
        self, response: httpx.Response, send: Send
    ) -> Generator[ClerkOp, Any, BackendUnavailableError]:
        """Pause every call to Clerk for as long as its 429 asks; return this call's error.

        Clerk's rate limit is the instance's, shared by every process: retrying
        into it only prolongs it, for this request and every other one.
        """
        seconds = parse_retry_after(response.headers.get("Retry-After"), now=self.clock())
        seconds = min(DEFAULT_PAUSE if seconds is None else seconds, MAX_PAUSE)
        yield Pause(seconds)
        details = error_details(response, quote_text=send.quotable)
        logger.warning(
            "Clerk rate-limited %s (%s): no call goes to Clerk for %.3g s",
            send.operation,
            details,
            seconds,
        )
        return BackendUnavailableError(
            f"Clerk rate-limited us ({details} on {send.operation}):"
            f" no call goes to Clerk for {seconds:.3g} s",
            retry_after=seconds,
        )

    @staticmethod
    def _check_pause(paused_for: float) -> None:
        """Refuse a call while Clerk's 429 pauses them all.

        Raises:
            BackendUnavailableError: With ``retry_after``, the pause left.
        """
        if paused_for > 0:
            raise BackendUnavailableError(
                f"Clerk rate-limited this instance: no call goes to Clerk for another"
                f" {paused_for:.3g} s",
                retry_after=math.ceil(paused_for * 1000) / 1000,
            )

    @staticmethod
    def _maybe_done(send: Send, failure: str) -> BackendUnavailableError:
        return BackendUnavailableError(
            f"Clerk did not confirm {send.operation} ({failure}): it may or may not have"
            " happened, so it was not retried; list the user's keys before trying again",
            retry_after=1,
        )

    def _call(self, send: Send, *, key_id: str | None = None) -> Generator[ClerkOp, Any, Any]:
        """Send, then return the decoded 2xx JSON or raise the matching core error."""
        response = yield from self._exchange(send)
        if response.is_success:
            return json_of(response, send.operation)
        raise self._error_for(response, send.operation, key_id=key_id)

    @staticmethod
    def _error_for(
        response: httpx.Response, operation: str, *, key_id: str | None = None
    ) -> APIKeysError:
        status = response.status_code
        details = error_details(response, quote_text=operation != "verify")
        if status in (401, 403):
            logger.error("Clerk refused the instance secret key on %s: %s", operation, details)
            return ConfigurationError(
                f"Clerk refused this server's secret key ({details}): check CLERK_SECRET_KEY"
                " (a current sk_live_…/sk_test_… key of the right instance)"
            )
        if status == 404:
            return KeyNotFoundError(key_id=key_id)
        if status in (400, 409, 422):
            return InvalidInputError(f"Clerk refused the {operation} ({details})", key_id=key_id)
        return BackendUnavailableError(
            f"unexpected answer from Clerk to {operation} ({details})", retry_after=1
        )

    def _forget(self, key_id: str) -> None:
        self.cache.invalidate(key_id)

    def _check_counts_quotas(self) -> None:
        """Refuse a quota this manager cannot count for every process.

        Raises:
            ConfigurationError: No ``redis_url``: each process would count on its own.
        """
        if not self.counts_quotas:
            raise ConfigurationError(
                "a quota on the Clerk backend is counted in Redis, shared by every process:"
                " set redis_url (APIKEYS_REDIS_URL); without it, each process would grant"
                " the whole quota on its own"
            )

    def _spend_flow(self, verified: VerifiedKey, cost: int) -> Generator[Any, Any, VerifiedKey]:
        """Charge ``cost`` to the key's limits in the meter; see :meth:`FlowBackend._spend_flow`.

        Raises:
            ConfigurationError: The key has a quota and there is no ``redis_url``.
        """
        if verified.quota is not None:
            self._check_counts_quotas()
        return (yield from super()._spend_flow(verified, cost))

    # --- flows -----------------------------------------------------------------------

    def _create_flow(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str,
        expiration: Expiration,
        metadata: Mapping[str, Any] | None,
        created_by: str | None,
        rate_limit: object,
        quota: object,
    ) -> Generator[ClerkOp, Any, NewAPIKey]:
        request = build_create_request(
            user_id,
            name,
            scopes,
            expiration,
            metadata,
            now=self.clock(),
            created_by=created_by,
            rate_limit=rate_limit,
            quota=quota,
        )
        if request.quota is not None:
            self._check_counts_quotas()
        body: dict[str, Any] = {
            "name": check_clerk_name(request.name),
            "subject": check_subject(request.user_id),
            "scopes": list(request.scopes),
        }
        # A new key's meter is its own id, which Clerk has not chosen yet: no "meter" part.
        limits = KeyLimits(
            rate_limit=request.rate_limit,
            quota=request.quota,
            quota_anchor=None if request.quota is None else anchor_at(request.now),
        )
        claims = claims_with_limits(request.metadata or None, limits)
        if claims:
            body["claims"] = claims
        creator = request.created_by
        expires_at = request.expires_at
        if creator is not None:
            # A key never outlives its creator, as Clerk holds it now (a cached
            # verification may remember a longer life than a rotation left it).
            ends = yield from self._check_creator(creator, request.user_id)
            if ends is not None and (expires_at is None or expires_at > ends):
                expires_at = ends
            body["description"] = creator_description(creator)
        if self.max_active_keys_per_owner:
            active = yield from self._count_active(request.user_id)
            if active >= self.max_active_keys_per_owner:
                raise KeyLimitReachedError(limit=self.max_active_keys_per_owner)
        if expires_at is not None:
            body["seconds_until_expiration"] = lifetime_seconds(expires_at, self.clock())
        new = yield from self._issue(body)
        if creator is not None:
            # A revocation of the creator may have listed its keys before this one
            # existed: look again, and end the new key if the creator is gone.
            try:
                yield from self._check_creator(creator, request.user_id)
            except InvalidInputError:
                yield from self._end_orphan(new.id, creator)
                raise
        self.events.report("created", new.id, user_id=new.user_id)
        return new

    def _check_creator(
        self, creator: str, user_id: str
    ) -> Generator[ClerkOp, Any, datetime | None]:
        """Refuse a creator that is not an active key of ``user_id``; return its expiry."""
        refusal = InvalidInputError(
            "created_by must be an active key of the same owner: the creating key is"
            " unknown, another owner's, revoked or expired",
            field="created_by",
            key_id=creator,
        )
        try:
            key = yield from self._fetch(creator)
        except KeyNotFoundError:
            raise refusal from None
        if key.subject != user_id or key.revoked or key.expired or check_expired(key, self.clock()):
            raise refusal
        return expiry_from_milliseconds(key.expiration)

    def _end_orphan(self, key_id: str, creator: str) -> Generator[ClerkOp, Any, None]:
        send = Send(
            "POST",
            f"/api_keys/{key_id}/revoke",
            "revoke",
            body={"revocation_reason": f"creator {creator} revoked"},
        )
        try:
            yield from self._call(send, key_id=key_id)
        except APIKeysError:
            raise RevocationIncompleteError(
                f"key {key_id} was created while its creator {creator} was being revoked,"
                f" and could not be revoked: revoke {key_id}",
                key_id=creator,
                still_active=(key_id,),
            ) from None

    def _count_active(self, user_id: str) -> Generator[ClerkOp, Any, int]:
        params = {"subject": user_id, "include_invalid": "false", "limit": "1", "offset": "0"}
        try:
            payload = yield from self._call(Send("GET", "/api_keys", "list", params=params))
        except KeyNotFoundError:
            return 0
        return _total_of(payload)

    def _owner_keys(self, user_id: str) -> Generator[ClerkOp, Any, list[ClerkKeyObject]]:
        """Every key of ``user_id``, revoked and expired ones included."""
        keys: list[ClerkKeyObject] = []
        while True:
            params = {
                "subject": user_id,
                "include_invalid": "true",
                "limit": str(_LIST_PAGE),
                "offset": str(len(keys)),
            }
            try:
                payload = yield from self._call(Send("GET", "/api_keys", "list", params=params))
            except KeyNotFoundError:
                return keys
            total = _total_of(payload)
            page = [parse_key_object(item, "list") for item in payload["data"]]
            keys.extend(page)
            if not page or len(keys) >= total:
                return keys

    def _revoke_descendants(
        self, key_id: str, user_id: str, verb: str
    ) -> Generator[ClerkOp, Any, list[str]]:
        """Revoke every live key ``key_id`` created, and theirs in turn; return their ids.

        Raises:
            RevocationIncompleteError: The keys could not be listed, or some
                could not be revoked (they are named).
        """
        try:
            keys = yield from self._owner_keys(user_id)
        except APIKeysError:
            raise RevocationIncompleteError(key_id=key_id) from None
        children: dict[str, list[ClerkKeyObject]] = {}
        for key in keys:
            creator = creator_of(key)
            if creator is not None:
                children.setdefault(creator, []).append(key)
        revoked: list[str] = []
        failed: list[str] = []
        pending, seen = [key_id], {key_id}
        while pending:
            parent = pending.pop()
            for child in children.get(parent, ()):
                if child.id in seen:
                    continue
                seen.add(child.id)
                pending.append(child.id)
                if child.revoked:
                    continue
                reason = f"creator {parent} {verb if parent == key_id else 'revoked'}"
                send = Send(
                    "POST",
                    f"/api_keys/{child.id}/revoke",
                    "revoke",
                    body={"revocation_reason": reason},
                )
                try:
                    yield from self._call(send, key_id=child.id)
                except APIKeysError:
                    failed.append(child.id)
                    continue
                finally:
                    self._forget(child.id)
                revoked.append(child.id)
                self.events.report("revoked", child.id, user_id=user_id)
        yield from self._announced(revoked)
        if failed:
            raise RevocationIncompleteError(key_id=key_id, still_active=failed)
        return revoked

    def _issue(self, body: dict[str, Any]) -> Generator[ClerkOp, Any, NewAPIKey]:
        response = yield from self._exchange(
            Send("POST", "/api_keys", "create", body=body, replayable=False)
        )
        if not response.is_success:
            raise self._error_for(response, "create")
        try:
            key = parse_key_object(json_of(response, "create"), "create")
        except BackendUnavailableError as exc:
            raise BackendUnavailableError(
                f"{exc.message}: a key may have been created without its secret reaching"
                " us; list the user's keys and revoke any you did not receive"
            ) from None
        if key.secret is None or not is_clerk_secret(key.secret.get_secret_value()):
            raise BackendUnavailableError(
                f"Clerk created key {key.id} but sent no usable secret; revoke it",
                key_id=key.id,
            )
        secret = key.secret.get_secret_value()
        api_key = to_api_key(key, hint=secret_hint(secret))
        return NewAPIKey(secret=secret, **api_key.model_dump())

    def _read_presented(self, secret: str) -> str:
        if not is_clerk_secret(secret):
            raise self._refusal()  # no Clerk key looks like this: no (billed) call
        return secret

    def _validate_flow(
        self, secret: str, required: tuple[str, ...]
    ) -> Generator[ClerkOp, Any, VerifiedKey]:
        try:
            verified = yield SharedVerify(secret, self.cache.digest(secret))
        except APIKeysError as exc:
            self.events.rejected(exc)
            raise
        return self._accepted(verified, required)

    def _verify_flow(self, secret: str, digest: bytes) -> Generator[ClerkOp, Any, VerifiedKey]:
        """Verify with Clerk (no scope check); successful answers are cached.

        The twins run it for :class:`SharedVerify`, once for all the callers
        presenting ``secret`` at the same time.
        """
        known = self._verified_ids.lookup(digest)
        if known is not None and known[1]:
            raise RevokedKeyError(key_id=known[0])  # final in Clerk: no need to ask again
        # Read before asking: a revocation here meanwhile keeps this answer out of the cache.
        generation = self.cache.generation
        mark = self._mark(secret) if self.verification_budget else None
        seen = yield from self._admit(mark)
        drawn = mark is not None and not seen
        response = yield from self._exchange(
            Send("POST", "/api_keys/verify", "verify", body={"secret": secret}),
            admitted=True,
            drawn=drawn,
        )
        if mark is None:
            return (yield from self._verified(response, digest, generation))
        try:
            verified = yield from self._verified(response, digest, generation, drawn=drawn)
        except InvalidKeyError:
            if seen:  # refused now: it must earn its place again
                yield Learn(mark, succeeded=False)
            raise
        yield Learn(mark, succeeded=True)
        return verified

    def _admit(self, mark: bytes | None) -> Generator[ClerkOp, Any, bool]:
        """Let a verification go to Clerk, or refuse it; return whether its secret is known.

        Refused while Clerk's 429 pauses every call. A secret not seen succeed
        recently (``mark``: its digest; ``None`` when there is no budget) draws
        one verification from the budget.

        Raises:
            BackendUnavailableError: A pause is on.
            VerificationBudgetSpentError: The budget is spent.
        """
        outlook: Outlook = yield Look(mark)
        self._check_pause(outlook.paused_for)
        if mark is None or outlook.known:
            return outlook.known
        wait = yield Draw()
        if wait is None:
            return False
        if self._floods.refused():
            logger.warning(
                "Clerk verification budget (%s) spent: secrets not seen succeed recently are"
                " refused with 503 until it refills; known keys are not held back",
                self.verification_budget,
            )
            self.events.report("flood", None)
        raise VerificationBudgetSpentError(retry_after=wait)

    def _verified(
        self, response: httpx.Response, digest: bytes, generation: int, *, drawn: bool = False
    ) -> Generator[ClerkOp, Any, VerifiedKey]:
        """Read Clerk's answer to a verification; cache what it accepts. ``drawn``: the
        verification was drawn from the budget, and so is any call explaining a refusal."""
        status = response.status_code
        if status in (400, 404, 422):
            if status != 404:
                details = error_details(response, quote_text=False)
                logger.warning("Clerk refused a verification: %s", details)
            yield from self._explain_refusal(digest, drawn=drawn)
            raise InvalidKeyError()
        if not response.is_success:
            raise self._error_for(response, "verify")
        key = parse_key_object(json_of(response, "verify"), "verify")
        # Clerk may answer 200 for a key it knows to be unusable: refuse it all the same.
        if key.revoked:
            self._verified_ids.remember(digest, key.id, revoked=True)
            raise RevokedKeyError(key_id=key.id)
        if key.expired:
            raise ExpiredKeyError(key_id=key.id)
        verified = to_verified(key)
        check_key_state(key.id, revoked=False, expires_at=verified.expires_at, now=self.clock())
        self._verified_ids.remember(digest, key.id)
        self.cache.put(digest, verified, generation=generation)
        return verified

    def _explain_refusal(
        self, digest: bytes, *, drawn: bool = False
    ) -> Generator[ClerkOp, Any, None]:
        """After a refusal, tell the holder of a once-valid secret why, if we can.

        Only a secret that verified in this process before is looked up: its
        presenter has proven it holds the secret, so learning that the key is
        revoked or expired tells nothing to anyone else. When the verification
        was drawn from the budget (``drawn``), the look-up draws too, and is
        skipped when the budget is spent: the refusal stands without its reason.
        """
        known = self._verified_ids.lookup(digest)
        if known is None:
            return
        if drawn and (yield Draw()) is not None:
            return
        key_id = known[0]
        try:
            payload = yield from self._call(Send("GET", f"/api_keys/{key_id}", "get"))
            key = parse_key_object(payload, "get")
        except APIKeysError:
            return  # the refusal stands; the reason is a courtesy
        if key.revoked:
            self._verified_ids.remember(digest, key_id, revoked=True)
            raise RevokedKeyError(key_id=key_id)
        if key.expired or check_expired(key, self.clock()):
            raise ExpiredKeyError(key_id=key_id)

    def _list_flow(
        self, user_id: str, include_invalid: bool, limit: int, offset: int
    ) -> Generator[ClerkOp, Any, APIKeyPage]:
        subject = check_subject(user_id)
        limit, offset = check_page(limit, offset)
        params = {
            "subject": subject,
            "include_invalid": "true" if include_invalid else "false",
            "limit": str(limit),
            "offset": str(offset),
        }
        try:
            payload = yield from self._call(Send("GET", "/api_keys", "list", params=params))
        except KeyNotFoundError:
            # Clerk answers 404 for an owner it does not know: one without keys.
            return APIKeyPage(items=(), total=0, limit=limit, offset=offset)
        total = _total_of(payload)
        items = tuple(to_api_key(parse_key_object(item, "list")) for item in payload["data"])
        return APIKeyPage(items=items, total=total, limit=limit, offset=offset)

    def _fetch(self, key_id: str) -> Generator[ClerkOp, Any, ClerkKeyObject]:
        key_id = check_key_id(key_id)
        if not is_clerk_key_id(key_id):
            raise KeyNotFoundError(key_id=key_id)  # no Clerk key has such an id: no call
        payload = yield from self._call(Send("GET", f"/api_keys/{key_id}", "get"), key_id=key_id)
        return parse_key_object(payload, "get")

    def _fetch_owned(
        self, key_id: str, user_id: str | None
    ) -> Generator[ClerkOp, Any, ClerkKeyObject]:
        """Fetch a key; with ``user_id``, another owner's key is not found, as unknown."""
        owner = check_owner(user_id)
        key = yield from self._fetch(key_id)
        if owner is not None and key.subject != owner:
            raise KeyNotFoundError(key_id=key_id)
        return key

    def _get_flow(self, key_id: str, user_id: str | None) -> Generator[ClerkOp, Any, APIKey]:
        return to_api_key((yield from self._fetch_owned(key_id, user_id)))

    def _revoke_flow(
        self, key_id: str, reason: str | None, user_id: str | None
    ) -> Generator[ClerkOp, Any, APIKey]:
        key_id, reason = check_key_id(key_id), check_reason(reason)
        if not is_clerk_key_id(key_id):
            raise KeyNotFoundError(key_id=key_id)
        if user_id is not None:
            yield from self._fetch_owned(key_id, user_id)
        send = Send(
            "POST", f"/api_keys/{key_id}/revoke", "revoke", body={"revocation_reason": reason}
        )
        changed = True
        try:
            payload = yield from self._call(send, key_id=key_id)
            key = parse_key_object(payload, "revoke")
        except InvalidInputError:
            # Clerk may refuse to revoke twice; revoking is idempotent for us.
            key = yield from self._fetch(key_id)
            if not key.revoked:
                raise
            changed = False  # already revoked: only an unfinished cascade is left
        finally:
            self._forget(key_id)
        yield from self._announced([key_id])
        if changed:
            self.events.report("revoked", key_id, user_id=key.subject)
        yield from self._revoke_descendants(key_id, key.subject, "revoked")
        return to_api_key(key)

    def _delete_flow(self, key_id: str, user_id: str | None) -> Generator[ClerkOp, Any, None]:
        """Revoke the key and its descendants, then delete it.

        Revoked first, so the key stops working at once; a failed cascade leaves
        it revoked but not deleted, and deleting again finishes the work.
        """
        key_id = check_key_id(key_id)
        if not is_clerk_key_id(key_id):
            raise KeyNotFoundError(key_id=key_id)
        key = yield from self._fetch_owned(key_id, user_id)
        try:
            if not key.revoked:
                send = Send(
                    "POST",
                    f"/api_keys/{key_id}/revoke",
                    "revoke",
                    body={"revocation_reason": "deleted"},
                )
                with contextlib.suppress(InvalidInputError):  # revoked meanwhile
                    yield from self._call(send, key_id=key_id)
            # Refused everywhere from here on, though the cascade and the delete may still fail.
            self._forget(key_id)
            yield from self._announced([key_id])
            yield from self._revoke_descendants(key_id, key.subject, "deleted")
            yield from self._call(Send("DELETE", f"/api_keys/{key_id}", "delete"), key_id=key_id)
        finally:
            self._forget(key_id)
        self.events.report("deleted", key_id)

    def _hand_over(
        self, old_id: str, new_id: str, user_id: str
    ) -> Generator[ClerkOp, Any, list[str]]:
        """Record ``new_id`` as the creator of every key ``old_id`` created."""
        moved: list[str] = []
        keys = yield from self._owner_keys(user_id)
        for key in keys:
            if creator_of(key) != old_id:
                continue
            body = {"description": creator_description(new_id)}
            yield from self._call(
                Send("PATCH", f"/api_keys/{key.id}", "update", body=body), key_id=key.id
            )
            moved.append(key.id)
        return moved

    def _hand_back(self, moved: list[str], old_id: str) -> Generator[ClerkOp, Any, None]:
        for key_id in moved:
            body = {"description": creator_description(old_id)}
            try:
                yield from self._call(
                    Send("PATCH", f"/api_keys/{key_id}", "update", body=body), key_id=key_id
                )
            except APIKeysError:
                logger.error(
                    "rotation of %s failed and key %s still names the replacement as its"
                    " creator: set its description to %r",
                    old_id,
                    key_id,
                    creator_description(old_id),
                )

    def _rotate_flow(
        self, key_id: str, grace: timedelta | float, expiration: Expiration | Keep
    ) -> Generator[ClerkOp, Any, NewAPIKey]:
        """Create the replacement, then end the old key (revoke, or shorten its life).

        Clerk has no rotation: this is create-then-retire. If retiring fails, the
        replacement is deleted again so the caller is left with exactly the old key.
        """
        grace = check_grace(grace)
        old = yield from self._fetch(key_id)
        key_id = old.id
        now = self.clock()
        old_expiry = expiry_from_milliseconds(old.expiration)
        if old.revoked:
            raise InvalidInputError(
                "a revoked key cannot be rotated", field="key_id", key_id=key_id
            )
        if expiration is KEEP:
            expires_at = old_expiry
            if old.expired or (expires_at is not None and expires_at <= now):
                raise InvalidInputError(
                    "the key has expired: give the replacement an expiration",
                    field="expiration",
                    key_id=key_id,
                )
        else:
            expires_at = parse_expiration(expiration, now=now)
        creator = creator_of(old)
        if creator is not None:  # the replacement never outlives the old key's creator
            ends = yield from self._check_creator(creator, old.subject)
            if ends is not None and (expires_at is None or expires_at > ends):
                expires_at = ends
        old_active = not (old.expired or (old_expiry is not None and old_expiry <= now))
        if self.max_active_keys_per_owner and (grace or not old_active):
            # The replacement takes no active key's place at once: both stay active
            # for the grace period, or the old key had expired. It counts as a new key.
            active = yield from self._count_active(old.subject)
            if active >= self.max_active_keys_per_owner:
                raise KeyLimitReachedError(limit=self.max_active_keys_per_owner)
        body: dict[str, Any] = {"name": old.name, "subject": old.subject, "scopes": old.scopes}
        if old.description is not None:
            body["description"] = old.description
        claims = self._carried_claims(old)
        if claims is not None:
            body["claims"] = claims
        if old.created_by is not None and _CREATED_BY_RE.fullmatch(old.created_by):
            body["created_by"] = old.created_by
        if expires_at is not None:
            body["seconds_until_expiration"] = lifetime_seconds(expires_at, self.clock())
        new = yield from self._issue(body)
        moved: list[str] = []
        try:
            moved = yield from self._hand_over(key_id, new.id, old.subject)
            yield from self._retire(old, grace, old_expiry)
        except Exception:
            # Nobody but us holds the replacement's secret: remove it rather than
            # leave an orphan (cancellation is not caught: we must not yield then).
            yield from self._hand_back(moved, key_id)
            yield from self._undo_create(new.id, key_id)
            raise
        finally:
            self._forget(key_id)
        # Revoked, or its life cut to the grace period: every process drops what it
        # cached of it, and its next verification there carries the new expiry,
        # which each cache enforces, so no announcement is needed at the grace's end.
        yield from self._announced([key_id])
        self.events.report("rotated", key_id, user_id=old.subject, new_key_id=new.id)
        return new

    @staticmethod
    def _carried_claims(old: ClerkKeyObject) -> Any:
        """The replacement's claims: the old key's, with its limits and its meter, so the
        two spend from the same counts (rotating never refills them)."""
        if not isinstance(old.claims, dict):
            return old.claims  # none, or not an object: no limits to carry
        try:
            limits = limits_from_claims(old.claims)
        except ValueError:
            raise InvalidInputError(
                f"the key's {LIMITS_CLAIM!r} claim cannot be read: set its limits again"
                " (update_api_key_limits) before rotating it",
                field="key_id",
                key_id=old.id,
            ) from None
        return claims_with_limits(old.claims, replace(limits, meter_id=limits.meter_id or old.id))

    def _update_limits_flow(
        self, key_id: str, rate_limit: object, quota: object, user_id: str | None
    ) -> Generator[ClerkOp, Any, APIKey]:
        change = check_limit_change(rate_limit, quota)
        if not isinstance(change.quota, Keep) and change.quota is not None:
            self._check_counts_quotas()
        key = yield from self._fetch_owned(key_id, user_id)
        key_id = key.id
        if key.revoked:
            raise InvalidInputError(
                "a revoked key's limits cannot be changed", field="key_id", key_id=key_id
            )
        try:
            limits = limits_from_claims(key.claims)
        except ValueError:
            if isinstance(change.rate_limit, Keep) or isinstance(change.quota, Keep):
                raise InvalidInputError(
                    f"the key's {LIMITS_CLAIM!r} claim cannot be read: set both its"
                    " rate_limit and its quota",
                    field="key_id",
                    key_id=key_id,
                ) from None
            limits = NO_LIMITS
        if not isinstance(change.rate_limit, Keep):
            limits = replace(limits, rate_limit=change.rate_limit)
        if not isinstance(change.quota, Keep):
            anchor = None if change.quota is None else anchor_at(self.clock())
            limits = replace(limits, quota=change.quota, quota_anchor=anchor)
        claims = claims_with_limits(key.claims, limits)
        if claims == key.claims:
            return to_api_key(key)
        try:
            payload = yield from self._call(
                Send("PATCH", f"/api_keys/{key_id}", "update", body={"claims": claims or {}}),
                key_id=key_id,
            )
        finally:
            self._forget(key_id)
        yield from self._announced([key_id])
        return to_api_key(parse_key_object(payload, "update"))

    def _retire(
        self, old: ClerkKeyObject, grace: timedelta, old_expiry: datetime | None
    ) -> Generator[ClerkOp, Any, None]:
        if not grace:
            send = Send(
                "POST",
                f"/api_keys/{old.id}/revoke",
                "revoke",
                body={"revocation_reason": ROTATED_REASON},
            )
            yield from self._call(send, key_id=old.id)
            return
        cutoff = self.clock() + grace
        if old_expiry is not None and old_expiry <= cutoff:
            return  # it ends before the grace period would: leave it be
        body = {"seconds_until_expiration": lifetime_seconds(cutoff, self.clock())}
        yield from self._call(
            Send("PATCH", f"/api_keys/{old.id}", "update", body=body), key_id=old.id
        )

    def _undo_create(self, new_id: str, old_id: str) -> Generator[ClerkOp, Any, None]:
        try:
            yield from self._call(Send("DELETE", f"/api_keys/{new_id}", "delete"), key_id=new_id)
        except APIKeysError:
            logger.error(
                "rotation of %s failed and its replacement %s could not be deleted: delete it",
                old_id,
                new_id,
            )


def _revocation_channel_for(redis_url: str | None) -> RevocationChannel | None:
    """Redis pub/sub when ``redis_url`` is set: Clerk itself tells no one of a revocation."""
    if redis_url is None:
        return None
    from apikeys._redis import RedisRevocationChannel

    return RedisRevocationChannel(redis_url)


def _total_of(payload: Any) -> int:
    """The ``total_count`` of a list answer, checked (and its ``data`` array)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        raise _malformed("list", "no data array")
    total = payload.get("total_count")
    # Python's JSON decoder accepts Infinity and NaN, so check the number is real.
    if (
        isinstance(total, bool)
        or not isinstance(total, int | float)
        or not math.isfinite(total)
        or total < 0
    ):
        raise _malformed("list", "no total_count")
    return int(total)


def check_expired(key: ClerkKeyObject, now: datetime) -> bool:
    """Whether a key's expiry has passed at ``now``, by our clock."""
    expires_at = expiry_from_milliseconds(key.expiration)
    return expires_at is not None and expires_at <= now


def _check_secret_key(secret_key: str | SecretStr) -> SecretStr:
    if isinstance(secret_key, SecretStr):
        secret_key = secret_key.get_secret_value()
    if not isinstance(secret_key, str) or not secret_key:
        raise ConfigurationError(
            "the Clerk backend needs your Clerk secret key: set CLERK_SECRET_KEY, or choose"
            " the local backend with APIKEYS_BACKEND=sqlite:///apikeys.db"
        )
    if (
        not secret_key.startswith("sk_")
        or len(secret_key) < 4
        or not _TOKEN_RE.fullmatch(secret_key)
    ):
        raise ConfigurationError(
            "CLERK_SECRET_KEY must be a Clerk secret key (sk_live_… or sk_test_…);"
            " publishable keys (pk_…) cannot manage API keys"
        )
    return SecretStr(secret_key)


def _check_api_url(api_url: str) -> str:
    parts = urlsplit(api_url)
    problem = None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        problem = "must be an https:// URL"
    elif parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        problem = "must use https (plain http only to loopback addresses)"
    elif parts.username or parts.password or parts.query or parts.fragment:
        problem = "must not carry credentials, a query or a fragment"
    if problem:
        raise ConfigurationError(f"CLERK_API_URL {problem}")
    return api_url.rstrip("/")


def _check_backend_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "clerk" or parts.netloc or parts.path.strip("/") or parts.query:
        raise ConfigurationError(
            "the Clerk backend URL is just 'clerk://': the secret key comes from"
            " CLERK_SECRET_KEY and the API address from CLERK_API_URL"
        )


__all__ = [
    "MAX_SECRET_LENGTH",
    "ClerkBase",
    "ClerkKeyObject",
    "ClerkOp",
    "Send",
    "SharedVerify",
    "Sleep",
    "check_clerk_name",
    "check_subject",
    "from_milliseconds",
    "is_clerk_key_id",
    "is_clerk_secret",
    "parse_key_object",
    "parse_retry_after",
    "secret_hint",
]

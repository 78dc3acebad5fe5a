"""Test helpers shipped with apikeys: a stateful fake of Clerk's API-key endpoints.

:class:`FakeClerk` answers the ``/api_keys`` endpoints of Clerk's Backend API
from memory, through :class:`httpx.MockTransport`, so your tests run the real
Clerk managers with no network and no Clerk account::

    from apikeys.testing import FakeClerk

    def test_my_route():
        fake = FakeClerk()
        manager = fake.key_manager()  # a ClerkKeyManager wired to the fake
        new = manager.create_api_key(fake.new_user_id(), "test key", ["read:data"])
        assert manager.validate_api_key(new.secret).scopes == ("read:data",)
        assert fake.count("POST", "/api_keys/verify") == 1

It behaves as Clerk does, as far as the official OpenAPI spec and Clerk's SDKs
tell: request bodies are checked against the spec (required fields, patterns,
lengths, no unknown fields) and refused with Clerk's error envelope; create
answers 201; times are Unix milliseconds; an unknown secret verifies as 404,
and so do revoked or expired ones (or, with ``invalid_verify="flags"``, a 200
whose ``revoked``/``expired`` flag is set). Faults can be injected: any status
(429 with ``Retry-After``, 5xx), a body that is not JSON, a transport error
(timeout, reset), a failure after the request took effect, and latency.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import secrets
import string
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from apikeys._errors import MissingDependencyError
from apikeys._expiry import WallClock, check_clock, utcnow
from apikeys._keylimits import RateLimit
from apikeys._upstream import MovingWindow

try:
    import httpx
except ImportError as exc:
    raise MissingDependencyError("httpx", "clerk") from exc

if TYPE_CHECKING:
    from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager

FAKE_SECRET_KEY = "sk_test_apikeysFakeClerkInstanceKey0000"  # noqa: S105 - a fake's key
"""The instance secret key a :class:`FakeClerk` accepts unless told otherwise."""

_SUBJECT_RE = re.compile(r"(?:user|org|mch|scim)_[A-Za-z0-9_]{27}")
_CREATED_BY_RE = re.compile(r"user_[A-Za-z0-9_]{27}")
_NAME_RE = re.compile(r"(?:\S(?:.*\S)?)?", re.DOTALL)
_PATH_ID_RE = re.compile(r"(?:ak|api_key)_[0-9A-Fa-f]{32}")
_ID_ALPHABET = string.ascii_letters + string.digits
# Error codes of injected answers, by status (5xx and others: internal_clerk_error).
_FAULT_CODES = {
    400: "bad_request",
    401: "authentication_invalid",
    403: "authorization_invalid",
    404: "resource_not_found",
    409: "conflict",
    422: "unprocessable_entity",
    429: "too_many_requests",
}

# Each request body's allowed fields (per the spec, additionalProperties: false).
_CREATE_FIELDS = frozenset(
    {
        "type",
        "name",
        "description",
        "subject",
        "claims",
        "scopes",
        "created_by",
        "seconds_until_expiration",
    }
)
_UPDATE_FIELDS = frozenset(
    {"claims", "scopes", "description", "subject", "seconds_until_expiration"}
)


@dataclass
class Fault:
    """Something to go wrong with the next matching requests.

    Attributes:
        status: The HTTP status to answer with (ignored with ``exception``).
        body: A raw body to send instead of Clerk's error envelope (e.g. ``b"<html>"``).
        headers: Extra answer headers, such as ``{"Retry-After": "2"}``.
        exception: An ``httpx`` transport error class to raise instead of answering
            (``httpx.ConnectError``, ``httpx.ReadTimeout``, ``httpx.RemoteProtocolError``…).
        after: Carry the request out first, then fail: the answer is lost.
        route: Only requests to this route, e.g. ``"POST /api_keys/verify"`` or
            ``"GET /api_keys/{id}"``; ``None`` matches every request.
        times: How many matching requests it hits.
    """

    status: int = 500
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    exception: type[httpx.TransportError] | None = None
    after: bool = False
    route: str | None = None
    times: int = 1


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (``route`` is the path template, ``{id}`` for key ids)."""

    method: str
    path: str
    route: str
    params: dict[str, str]
    body: Any = field(repr=False)


@dataclass
class _StoredKey:
    id: str
    seq: int
    subject: str
    name: str
    description: str | None
    claims: Any
    scopes: list[str]
    created_by: str | None
    type: str
    secret_digest: bytes
    created_at: int
    updated_at: int
    expiration: int | None = None
    last_used_at: int | None = None
    revoked: bool = False
    revocation_reason: str | None = None

    def expired(self, now_ms: int) -> bool:
        return self.expiration is not None and now_ms >= self.expiration

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "object": "api_key",
            "id": self.id,
            "type": self.type,
            "subject": self.subject,
            "name": self.name,
            "description": self.description,
            "claims": self.claims,
            "scopes": list(self.scopes),
            "revoked": self.revoked,
            "revocation_reason": self.revocation_reason,
            "expired": self.expired(now_ms),
            "expiration": self.expiration,
            "created_by": self.created_by,
            "last_used_at": self.last_used_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class _Refused(Exception):
    """A request Clerk would refuse; becomes an error envelope answer."""

    def __init__(self, status: int, code: str, message: str, long_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.long_message = long_message or message


def _param_error(name: str, problem: str, code: str = "form_param_format_invalid") -> _Refused:
    return _Refused(400, code, "is invalid", f"{name} {problem}")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class FakeClerk:
    """An in-memory stand-in for Clerk's API-key endpoints, thread-safe.

    Args:
        secret_key: The instance secret key requests must carry (else 401).
        api_url: The base URL it answers under; its path (``/v1``) prefixes every route.
        create_status: The status of a successful create (Clerk sends 201).
        invalid_verify: How a revoked or expired key verifies: ``"not_found"``
            (404, like an unknown key) or ``"flags"`` (200 with the flag set).
        clock: The fake's wall clock, a callable returning an aware UTC
            ``datetime``; keys expire by it, and :meth:`advance` moves the fake
            ahead of it. The managers :meth:`key_manager` makes share it, so a
            test that moves it moves both sides at once (see the example below).
        latency: Seconds every answer takes.
        rate_limit: The instance's rate limit, as Clerk enforces it: at most
            ``limit`` requests in any ``window`` (by ``clock``), then 429 with
            ``Retry-After`` until the oldest leaves it; ``None`` (the default):
            none. ``RateLimit(limit=100, window=10)`` is a development instance.

    Example:
        A key that expires, with no waiting::

            from datetime import UTC, datetime, timedelta

            now = [datetime.now(UTC)]
            fake = FakeClerk(clock=lambda: now[0])
            manager = fake.key_manager()
            new = manager.create_api_key(fake.new_user_id(), "short", expiration=timedelta(hours=1))
            manager.validate_api_key(new.secret)  # valid, and now cached
            now[0] += timedelta(hours=1, seconds=1)
            manager.validate_api_key(new.secret)  # raises ExpiredKeyError, cache or not
    """

    def __init__(
        self,
        *,
        secret_key: str = FAKE_SECRET_KEY,
        api_url: str = "https://api.clerk.com/v1",
        create_status: int = 201,
        invalid_verify: Literal["not_found", "flags"] = "not_found",
        clock: WallClock = utcnow,
        latency: float = 0.0,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.secret_key = secret_key
        self.api_url = api_url.rstrip("/")
        self.create_status = create_status
        self.invalid_verify = invalid_verify
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self._base_path = urlsplit(self.api_url).path.rstrip("/")
        self._clock = check_clock(clock)
        self._offset = 0.0
        self._window = None
        if rate_limit is not None:
            seconds = rate_limit.window.total_seconds()
            self._window = MovingWindow(rate_limit.limit, seconds, lambda: self.now_ms() / 1000)
        self._keys: dict[str, _StoredKey] = {}
        self._by_digest: dict[bytes, str] = {}
        self._faults: list[Fault] = []
        self._seq = 0
        self._lock = threading.RLock()

    # --- wiring --------------------------------------------------------------------------

    @property
    def transport(self) -> httpx.MockTransport:
        """A transport for ``httpx.Client``."""
        return httpx.MockTransport(self._handle)

    @property
    def async_transport(self) -> httpx.MockTransport:
        """A transport for ``httpx.AsyncClient`` (latency does not block the loop)."""
        return httpx.MockTransport(self._ahandle)

    def client(self, **options: Any) -> httpx.Client:
        """An ``httpx.Client`` that talks to this fake."""
        return httpx.Client(transport=self.transport, **options)

    def async_client(self, **options: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` that talks to this fake."""
        return httpx.AsyncClient(transport=self.async_transport, **options)

    def key_manager(self, **options: Any) -> ClerkKeyManager:
        """A :class:`~apikeys.backends.clerk.ClerkKeyManager` wired to this fake.

        ``options`` go to the manager (``cache_ttl``, ``max_retries``…); retries
        do not wait unless ``retry_backoff`` is given, and the manager keeps
        time by the fake's ``clock`` unless given a ``clock`` of its own.
        """
        from apikeys.backends.clerk import ClerkKeyManager

        options.setdefault("retry_backoff", 0.0)
        options.setdefault("clock", self._clock)
        manager = ClerkKeyManager(
            self.secret_key, api_url=self.api_url, http_client=self.client(), **options
        )
        manager._owns_client = True  # close the fake's client with the manager
        return manager

    def async_key_manager(self, **options: Any) -> AsyncClerkKeyManager:
        """An :class:`~apikeys.backends.clerk.AsyncClerkKeyManager` wired to this fake."""
        from apikeys.backends.clerk import AsyncClerkKeyManager

        options.setdefault("retry_backoff", 0.0)
        options.setdefault("clock", self._clock)
        manager = AsyncClerkKeyManager(
            self.secret_key, api_url=self.api_url, http_client=self.async_client(), **options
        )
        manager._owns_client = True
        return manager

    @staticmethod
    def new_user_id() -> str:
        """A fresh id in the shape of a Clerk user id (``user_`` and 27 characters)."""
        return "user_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(27))

    # --- control ---------------------------------------------------------------------------

    def now_ms(self) -> int:
        """The fake's current time in Unix milliseconds."""
        return int((self._clock().timestamp() + self._offset) * 1000)

    def advance(self, seconds: float) -> None:
        """Move the fake ahead of its clock (keys expire by it); managers stay behind.

        For Clerk's clock running ahead of yours. To move both sides at once,
        move the ``clock`` they share.
        """
        with self._lock:
            self._offset += seconds

    def inject(self, fault: Fault) -> None:
        """Queue a fault; faults apply in the order queued."""
        with self._lock:
            self._faults.append(fault)

    def fail_next(
        self,
        status: int = 503,
        *,
        times: int = 1,
        route: str | None = None,
        retry_after: str | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.inject(Fault(status=status, headers=headers, body=body, route=route, times=times))

    def rate_limit(
        self, *, times: int = 1, retry_after: str | None = "1", route: str | None = None
    ) -> None:
        """Answer 429 Too Many Requests (with ``Retry-After`` unless ``None``)."""
        self.fail_next(429, times=times, route=route, retry_after=retry_after)

    def raise_next(
        self,
        exception: type[httpx.TransportError],
        *,
        times: int = 1,
        route: str | None = None,
        after: bool = False,
    ) -> None:
        """Make the transport raise ``exception`` for the next matching requests."""
        self.inject(Fault(exception=exception, times=times, route=route, after=after))

    def count(self, method: str | None = None, route: str | None = None) -> int:
        """How many requests matched ``method`` and ``route`` (``None`` matches all).

        ``route`` is a path template below the API URL: ``"/api_keys/verify"``,
        ``"/api_keys/{id}"``. Both may come as one string, as faults name routes:
        ``count("POST /api_keys/verify")``.
        """
        if method is not None and route is None and " " in method:
            method, route = method.split(" ", 1)
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and (route is None or r.route == route)
            )

    def key(self, key_id: str) -> dict[str, Any] | None:
        """The stored key object as Clerk would send it, or ``None``."""
        with self._lock:
            stored = self._keys.get(key_id)
            return None if stored is None else stored.to_json(self.now_ms())

    # --- transport handlers -------------------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        route, fault = self._begin(request)
        if self.latency:
            time.sleep(self.latency)
        return self._finish(request, route, fault)

    async def _ahandle(self, request: httpx.Request) -> httpx.Response:
        route, fault = self._begin(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._finish(request, route, fault)

    def _begin(self, request: httpx.Request) -> tuple[str, Fault | None]:
        path = request.url.path
        template = self._route_of(path)
        route = f"{request.method} {template}"
        try:
            body = json.loads(request.content) if request.content else None
        except ValueError:
            body = request.content
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    request.method, path, template, dict(request.url.params.items()), body
                )
            )
            for fault in self._faults:
                if fault.route is None or fault.route == route:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return route, fault
        return route, None

    def _route_of(self, path: str) -> str:
        if path.startswith(self._base_path):
            path = path[len(self._base_path) :]
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "api_keys" and parts[2] != "verify":
            parts[2] = "{id}"
        return "/".join(parts)

    def _finish(self, request: httpx.Request, route: str, fault: Fault | None) -> httpx.Response:
        if fault is not None and not fault.after:
            return self._fault_answer(request, fault)
        wait = None if self._window is None else self._window.take()
        if wait is not None:
            limited = self._error_answer(_Refused(429, "too_many_requests", "Too Many Requests"))
            limited.headers["Retry-After"] = str(math.ceil(wait))
            return limited
        try:
            with self._lock:
                status, payload = self._dispatch(request, route)
            answer = httpx.Response(status, json=payload)
        except _Refused as refused:
            answer = self._error_answer(refused)
        if fault is not None:
            return self._fault_answer(request, fault)
        return answer

    def _fault_answer(self, request: httpx.Request, fault: Fault) -> httpx.Response:
        if fault.exception is not None:
            raise fault.exception("injected by FakeClerk", request=request)
        if fault.body is not None:
            return httpx.Response(fault.status, content=fault.body, headers=dict(fault.headers))
        code = _FAULT_CODES.get(fault.status, "internal_clerk_error")
        answer = self._error_answer(_Refused(fault.status, code, "injected by FakeClerk"))
        answer.headers.update(fault.headers)
        return answer

    @staticmethod
    def _error_answer(refused: _Refused) -> httpx.Response:
        return httpx.Response(
            refused.status,
            json={
                "errors": [
                    {
                        "message": refused.message,
                        "long_message": refused.long_message,
                        "code": refused.code,
                    }
                ],
                "clerk_trace_id": secrets.token_hex(16),
            },
        )

    # --- the API -----------------------------------------------------------------------

    def _dispatch(self, request: httpx.Request, route: str) -> tuple[int, Any]:
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            raise _Refused(
                401,
                "authentication_invalid",
                "Unauthorized request",
                "The provided secret key is invalid.",
            )
        if not request.url.path.startswith(self._base_path + "/"):
            raise _Refused(404, "resource_not_found", "not found")
        method, _, template = route.partition(" ")
        if template == "/api_keys" and method == "POST":
            return self.create_status, self._create(self._body(request, required=True))
        if template == "/api_keys" and method == "GET":
            return 200, self._list(dict(request.url.params.items()))
        if template == "/api_keys/verify" and method == "POST":
            return self._verify(self._body(request, required=True))
        key_id = request.url.path.rsplit("/api_keys/", 1)[-1].split("/")[0]
        if template == "/api_keys/{id}" and method == "GET":
            return 200, self._stored(key_id).to_json(self.now_ms())
        if template == "/api_keys/{id}" and method == "PATCH":
            return 200, self._update(key_id, self._body(request, required=True))
        if template == "/api_keys/{id}" and method == "DELETE":
            stored = self._stored(key_id)
            del self._keys[stored.id]
            self._by_digest.pop(stored.secret_digest, None)
            return 200, {"id": stored.id, "object": "api_key", "deleted": True}
        if template == "/api_keys/{id}/revoke" and method == "POST":
            return 200, self._revoke(key_id, self._body(request, required=True))
        raise _Refused(404, "resource_not_found", "not found", f"no route {route}")

    @staticmethod
    def _body(request: httpx.Request, *, required: bool) -> dict[str, Any]:
        if not request.content:
            if required:
                raise _Refused(400, "request_body_invalid", "request body is required")
            return {}
        if "application/json" not in request.headers.get("Content-Type", ""):
            raise _Refused(400, "request_body_invalid", "request body must be JSON")
        try:
            body = json.loads(request.content)
        except ValueError:
            raise _Refused(400, "request_body_invalid", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "request_body_invalid", "request body must be a JSON object")
        return body

    @staticmethod
    def _check_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _param_error(unknown[0], "is not a known parameter", "form_param_unknown")

    @staticmethod
    def _check_string(
        body: Mapping[str, Any],
        name: str,
        *,
        nullable: bool = False,
        min_length: int = 0,
        max_length: int | None = None,
        pattern: re.Pattern[str] | None = None,
    ) -> None:
        if name not in body:
            return
        value = body[name]
        if value is None and nullable:
            return
        if not isinstance(value, str):
            raise _param_error(name, "must be a string")
        if len(value) < min_length or (max_length is not None and len(value) > max_length):
            raise _param_error(name, f"must be {min_length} to {max_length or 'any'} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise _param_error(name, "does not match the required format")

    @staticmethod
    def _check_common(body: Mapping[str, Any]) -> None:
        FakeClerk._check_string(body, "description", nullable=True, max_length=255)
        FakeClerk._check_string(body, "subject", pattern=_SUBJECT_RE)
        if "scopes" in body and (
            not isinstance(body["scopes"], list)
            or not all(isinstance(s, str) for s in body["scopes"])
        ):
            raise _param_error("scopes", "must be an array of strings")
        if "seconds_until_expiration" in body:
            seconds = body["seconds_until_expiration"]
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0
            ):
                raise _param_error("seconds_until_expiration", "must be a number above 0")

    def _expiration_of(self, body: Mapping[str, Any], now: int) -> int | None:
        seconds = body.get("seconds_until_expiration")
        return None if seconds is None else now + round(seconds * 1000)

    def _create(self, body: dict[str, Any]) -> dict[str, Any]:
        self._check_fields(body, _CREATE_FIELDS)
        for required in ("name", "subject"):
            if required not in body:
                raise _param_error(required, "is missing", "form_param_missing")
        self._check_string(body, "type", min_length=3, max_length=25)
        self._check_string(body, "name", min_length=3, pattern=_NAME_RE)
        self._check_string(body, "created_by", nullable=True, pattern=_CREATED_BY_RE)
        self._check_common(body)
        now = self.now_ms()
        secret = "ak_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self._seq += 1
        stored = _StoredKey(
            id="ak_" + secrets.token_hex(16),
            seq=self._seq,
            subject=body["subject"],
            name=body["name"],
            description=body.get("description"),
            claims=body.get("claims"),
            scopes=list(body.get("scopes", [])),
            created_by=body.get("created_by"),
            type=body.get("type", "api_key"),
            secret_digest=_digest(secret),
            created_at=now,
            updated_at=now,
            expiration=self._expiration_of(body, now),
        )
        self._keys[stored.id] = stored
        self._by_digest[stored.secret_digest] = stored.id
        return {**stored.to_json(now), "secret": secret}

    def _list(self, params: dict[str, str]) -> dict[str, Any]:
        subject = params.get("subject")
        if subject is None:
            raise _param_error("subject", "is missing", "form_param_missing")
        if not _SUBJECT_RE.fullmatch(subject):
            raise _param_error("subject", "does not match the required format")
        include_invalid = params.get("include_invalid", "false")
        if include_invalid not in ("true", "false"):
            raise _param_error("include_invalid", "must be true or false")
        limit = self._number_param(params, "limit", 10, 1, 100)
        offset = self._number_param(params, "offset", 0, 0, None)
        now = self.now_ms()
        keys = sorted(
            (
                k
                for k in self._keys.values()
                if k.subject == subject
                and (include_invalid == "true" or not (k.revoked or k.expired(now)))
            ),
            key=lambda k: (k.created_at, k.seq),
            reverse=True,
        )
        return {
            "data": [k.to_json(now) for k in keys[offset : offset + limit]],
            "total_count": len(keys),
        }

    @staticmethod
    def _number_param(
        params: Mapping[str, str], name: str, default: int, low: int, high: int | None
    ) -> int:
        if name not in params:
            return default
        try:
            value = float(params[name])
        except ValueError:
            raise _param_error(name, "must be a number") from None
        if value < low or (high is not None and value > high) or value != int(value):
            raise _param_error(name, f"must be a whole number from {low} to {high or 'up'}")
        return int(value)

    def _verify(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._check_fields(body, frozenset({"secret"}))
        if "secret" not in body:
            raise _param_error("secret", "is missing", "form_param_missing")
        self._check_string(body, "secret")
        now = self.now_ms()
        key_id = self._by_digest.get(_digest(body["secret"]))
        stored = self._keys.get(key_id) if key_id else None
        if stored is None:
            raise _Refused(404, "resource_not_found", "API key not found")
        if stored.revoked or stored.expired(now):
            if self.invalid_verify == "not_found":
                raise _Refused(404, "resource_not_found", "API key not found")
            return 200, stored.to_json(now)
        stored.last_used_at = now
        return 200, stored.to_json(now)

    def _stored(self, key_id: str) -> _StoredKey:
        if not _PATH_ID_RE.fullmatch(key_id):
            raise _param_error("apiKeyID", "does not match the required format")
        stored = self._keys.get("ak_" + key_id.rsplit("_", 1)[1])
        if stored is None:
            raise _Refused(404, "resource_not_found", "API key not found")
        return stored

    def _update(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_fields(body, _UPDATE_FIELDS)
        self._check_common(body)
        stored = self._stored(key_id)
        now = self.now_ms()
        if "seconds_until_expiration" in body:
            stored.expiration = self._expiration_of(body, now)
        for name in ("claims", "scopes", "description", "subject"):
            if name in body:
                setattr(stored, name, body[name])
        stored.updated_at = now
        return stored.to_json(now)

    def _revoke(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_fields(body, frozenset({"revocation_reason"}))
        self._check_string(body, "revocation_reason", nullable=True)
        stored = self._stored(key_id)
        now = self.now_ms()
        if not stored.revoked:  # revoking again changes nothing
            stored.revoked = True
            stored.revocation_reason = body.get("revocation_reason")
            stored.updated_at = now
        return stored.to_json(now)


__all__ = ["FAKE_SECRET_KEY", "FakeClerk", "Fault", "RecordedRequest"]

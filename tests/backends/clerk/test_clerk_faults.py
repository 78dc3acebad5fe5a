"""Clerk misbehaving: every fault ends in a stated outcome, and never in success.

Each test pins the exact error, how many requests reached Clerk and how long
the manager waited between them (sleeps are recorded, not slept).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from apikeys import (
    BackendUnavailableError,
    ConfigurationError,
    ExpiredKeyError,
    InvalidKeyError,
    RevokedKeyError,
)
from apikeys.backends._clerk import parse_retry_after
from apikeys.backends.clerk import AsyncClerkKeyManager, ClerkKeyManager
from apikeys.testing import FakeClerk, Fault
from tests.backends.clerk.twins import Twin, record_sleeps

pytestmark = pytest.mark.clerk

VERIFY = ("POST", "/api_keys/verify")
CREATE = ("POST", "/api_keys")


@pytest.fixture
def sleeps(twin: Twin) -> list[float]:
    """Record the manager's backoff pauses instead of sleeping them."""
    return record_sleeps(twin.manager)


@pytest.fixture
def secret(twin: Twin, user_id: str) -> str:
    """The secret of a live key; no request of its creation is left to count."""
    new = twin.create_api_key(user_id, "under test")
    return str(new.secret)


# --- transport failures --------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.ReadError]
)
def test_a_lasting_transport_failure_is_backend_unavailable(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float], error: type[httpx.HTTPError]
) -> None:
    before = fake.count()
    fake.raise_next(error, times=100)  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert caught.value.status_code == 503 and caught.value.retry_after == 1
    assert error.__name__ in caught.value.message
    assert isinstance(caught.value.__cause__, error)
    assert fake.count() - before == 3  # the first try and max_retries=2 more
    assert len(sleeps) == 2


def test_one_dropped_connection_is_retried(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float]
) -> None:
    fake.raise_next(httpx.RemoteProtocolError, route="POST /api_keys/verify")
    assert twin.validate_api_key(secret)
    assert fake.count(*VERIFY) == 2 and len(sleeps) == 1


def test_backoff_grows_with_jitter_and_is_capped(
    make_twin: Callable[..., Twin], fake: FakeClerk, user_id: str
) -> None:
    twin = make_twin(max_retries=5, retry_backoff=0.5, max_retry_wait=3.0)
    recorded = record_sleeps(twin.manager)
    fake.raise_next(httpx.ConnectError, times=100)
    with pytest.raises(BackendUnavailableError):
        twin.list_api_keys(user_id)
    ceilings = [0.5, 1.0, 2.0, 3.0, 3.0]
    assert len(recorded) == 5
    for pause, ceiling in zip(recorded, ceilings, strict=True):
        assert ceiling / 2 <= pause <= ceiling


# --- HTTP errors -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_lasting_5xx_is_backend_unavailable(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float], status: int
) -> None:
    fake.fail_next(status, times=100)
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert (
        f"HTTP {status}" in caught.value.message and "internal_clerk_error" in caught.value.message
    )
    assert "trace " in caught.value.message
    assert fake.count(*VERIFY) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_passing_5xx_is_retried(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float], status: int
) -> None:
    fake.fail_next(status)
    assert twin.validate_api_key(secret)
    assert fake.count(*VERIFY) == 2


@pytest.fixture
def moving_twin(make_twin: Callable[..., Twin]) -> tuple[Twin, list[datetime]]:
    """A manager whose clock the test moves (``now[0]``)."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    return make_twin(clock=lambda: now[0]), now


def test_429_pauses_every_call_for_retry_after(
    moving_twin: tuple[Twin, list[datetime]], fake: FakeClerk, user_id: str
) -> None:
    twin, now = moving_twin
    sleeps = record_sleeps(twin.manager)
    secret = str(twin.create_api_key(user_id, "under test").secret)
    fake.rate_limit(retry_after="2")
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert caught.value.retry_after == 2.0 and "rate-limited" in caught.value.message
    assert sleeps == [] and fake.count(*VERIFY) == 1  # not retried into the limit
    before = fake.count()
    now[0] += timedelta(seconds=1.5)
    calls: list[Callable[[], object]] = [
        lambda: twin.validate_api_key(secret),
        lambda: twin.list_api_keys(user_id),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailableError) as paused:
            call()
        assert paused.value.retry_after == 0.5  # the pause left, for every kind of call
    assert fake.count() == before  # nothing reached Clerk meanwhile
    now[0] += timedelta(seconds=0.5)
    assert twin.validate_api_key(secret)
    assert fake.count(*VERIFY) == 2


def test_429_with_an_http_date(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float]
) -> None:
    fake.rate_limit(
        retry_after=format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    )
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert 1.0 <= (caught.value.retry_after or 0) <= 3.0
    assert sleeps == [] and fake.count(*VERIFY) == 1


def test_429_without_retry_after_pauses_a_second(
    moving_twin: tuple[Twin, list[datetime]], fake: FakeClerk, user_id: str
) -> None:
    twin, now = moving_twin
    secret = str(twin.create_api_key(user_id, "under test").secret)
    fake.rate_limit(retry_after=None)
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert caught.value.retry_after == 1.0
    now[0] += timedelta(seconds=1)
    assert twin.validate_api_key(secret)


def test_429_asking_for_a_long_wait_fails_at_once(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float]
) -> None:
    fake.rate_limit(retry_after="120", times=100)
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert caught.value.retry_after == 120.0
    assert "rate-limited" in caught.value.message
    assert sleeps == [] and fake.count(*VERIFY) == 1


def test_a_pause_is_at_most_five_minutes(
    twin: Twin, fake: FakeClerk, secret: str, sleeps: list[float]
) -> None:
    fake.rate_limit(retry_after="86400")
    with pytest.raises(BackendUnavailableError) as caught:
        twin.validate_api_key(secret)
    assert caught.value.retry_after == 300.0


def test_create_refused_by_429_is_not_retried_and_creates_nothing(
    twin: Twin, fake: FakeClerk, user_id: str, sleeps: list[float]
) -> None:
    fake.rate_limit(route="POST /api_keys", retry_after="1")
    with pytest.raises(BackendUnavailableError, match="rate-limited") as caught:
        twin.create_api_key(user_id, "second try")
    assert caught.value.retry_after == 1.0
    assert "may or may not" not in caught.value.message  # Clerk surely did nothing
    assert fake.count(*CREATE) == 1 and sleeps == []
    assert twin.manager.guard.look(None).paused_for > 0


def test_401_means_our_secret_key_is_wrong(
    fake: FakeClerk, flavour: str, user_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = FakeClerk(secret_key="sk_test_the_right_one")
    wrong._keys = fake._keys  # the same instance, seen with another key
    if flavour == "sync":
        manager: Any = ClerkKeyManager(
            "sk_test_a_wrong_one", api_url=fake.api_url, http_client=wrong.client()
        )
        call: Callable[[Any], Any] = lambda c: c  # noqa: E731
    else:
        import asyncio

        manager = AsyncClerkKeyManager(
            "sk_test_a_wrong_one", api_url=fake.api_url, http_client=wrong.async_client()
        )
        call = asyncio.run
    with pytest.raises(ConfigurationError) as caught:
        call(manager.validate_api_key("ak_" + "A" * 44))
    assert "CLERK_SECRET_KEY" in caught.value.message and "HTTP 401" in caught.value.message
    assert caught.value.status_code == 500
    assert not isinstance(caught.value, InvalidKeyError)
    with pytest.raises(ConfigurationError):
        call(manager.create_api_key(user_id, "never made"))
    assert wrong.count() == 2  # not retried
    assert "refused the instance secret key" in caplog.text
    assert "sk_test_a_wrong_one" not in caplog.text + caught.value.message


@pytest.mark.parametrize("status", [301, 418])
def test_unexpected_statuses_are_backend_unavailable(
    twin: Twin, fake: FakeClerk, secret: str, status: int
) -> None:
    fake.fail_next(status, route="POST /api_keys/verify")
    with pytest.raises(BackendUnavailableError, match=f"HTTP {status}"):
        twin.validate_api_key(secret)
    assert fake.count(*VERIFY) == 1


# --- malformed answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"<html>bad gateway</html>",
        b"",
        b"[]",
        b'{"id": "ak_x"}',
        b'{"id": "ak_x", "subject": "user_x", "name": "n", "created_at": 1, "expired": false}',
        b'{"id": "ak_x", "subject": "user_x", "name": "n", "created_at": 1e30,'
        b' "revoked": false, "expired": false}',
        b'{"id": "ak_x", "subject": "user_x", "name": "n", "created_at": 1,'
        b' "revoked": "no", "expired": false}',
    ],
)
def test_malformed_verify_answers_are_backend_unavailable(
    twin: Twin, fake: FakeClerk, secret: str, body: bytes
) -> None:
    fake.fail_next(200, route="POST /api_keys/verify", body=body)
    with pytest.raises(BackendUnavailableError, match="malformed answer to verify"):
        twin.validate_api_key(secret)
    assert twin.validate_api_key(secret)  # nothing bad was cached
    assert fake.count(*VERIFY) == 2


def test_malformed_list_answers_are_backend_unavailable(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    for body in (
        b'{"data": {}}',
        b'{"data": [], "total_count": -1}',
        b'{"data": [{}], "total_count": 1}',
        b'{"data": [], "total_count": Infinity}',
        b'{"data": [], "total_count": NaN}',
        b'{"data": [], "total_count": true}',
        b"[]",
    ):
        fake.fail_next(200, route="GET /api_keys", body=body)
        with pytest.raises(BackendUnavailableError, match="malformed answer to list"):
            twin.list_api_keys(user_id)


@pytest.mark.parametrize("flag", ["revoked", "expired"])
def test_a_200_with_a_bad_flag_is_refused(flag: str, flavour: str, user_id: str) -> None:
    fake = FakeClerk(invalid_verify="flags")
    if flavour == "sync":
        manager: Any = fake.key_manager(cache_ttl=0)
        run: Callable[[Any], Any] = lambda c: c  # noqa: E731
    else:
        import asyncio

        manager = fake.async_key_manager(cache_ttl=0)
        run = asyncio.run
    new = run(manager.create_api_key(user_id, "flagged", expiration=timedelta(minutes=1)))
    if flag == "revoked":
        run(manager.revoke_api_key(new.id))
    else:
        fake.advance(120)
    with pytest.raises(RevokedKeyError if flag == "revoked" else ExpiredKeyError) as caught:
        run(manager.validate_api_key(new.secret))
    assert caught.value.key_id == new.id
    assert fake.count(*VERIFY) == 1


# --- create is never replayed blindly ---------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_create_is_not_retried_after_a_5xx(
    twin: Twin, fake: FakeClerk, user_id: str, sleeps: list[float], status: int
) -> None:
    fake.fail_next(status, route="POST /api_keys", times=5)
    with pytest.raises(BackendUnavailableError, match="may or may not have happened"):
        twin.create_api_key(user_id, "maybe")
    assert fake.count(*CREATE) == 1 and sleeps == []


def test_create_whose_answer_was_lost_says_so(
    twin: Twin, fake: FakeClerk, user_id: str, sleeps: list[float]
) -> None:
    fake.inject(Fault(exception=httpx.ReadTimeout, after=True, route="POST /api_keys"))
    with pytest.raises(BackendUnavailableError, match="list the user's keys"):
        twin.create_api_key(user_id, "lost answer")
    assert fake.count(*CREATE) == 1
    assert twin.list_api_keys(user_id).total == 1  # it did happen, and we said it might have


def test_create_is_retried_when_clerk_surely_did_nothing(
    twin: Twin, fake: FakeClerk, user_id: str, sleeps: list[float]
) -> None:
    fake.raise_next(httpx.ConnectError, route="POST /api_keys")
    new = twin.create_api_key(user_id, "second try")
    assert fake.count(*CREATE) == 2 and len(sleeps) == 1
    assert twin.list_api_keys(user_id).items[0].id == new.id
    assert twin.list_api_keys(user_id).total == 1


def test_create_with_a_malformed_2xx_says_a_key_may_exist(
    twin: Twin, fake: FakeClerk, user_id: str
) -> None:
    fake.fail_next(201, route="POST /api_keys", body=b"{not json")
    with pytest.raises(BackendUnavailableError, match="may have been created"):
        twin.create_api_key(user_id, "unreadable")


def test_create_without_a_secret_in_the_answer(twin: Twin, fake: FakeClerk, user_id: str) -> None:
    fake.inject(
        Fault(
            status=201,
            route="POST /api_keys",
            body=b'{"id": "ak_' + b"0" * 32 + b'", "subject":'
            b' "user_x", "name": "nnn", "created_at": 1, "revoked": false, "expired": false}',
        )
    )
    with pytest.raises(BackendUnavailableError, match="revoke it") as caught:
        twin.create_api_key(user_id, "no secret")
    assert caught.value.key_id == "ak_" + "0" * 32


# --- real sockets on loopback ------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[tuple[str, Callable[[], int]]]:
    """A loopback TCP server that resets every connection, or accepts and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    mode = {"reset": False}
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            if mode["reset"]:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.recv(65536)
                connection.close()  # RST: the connection is reset mid-request
            else:
                accepted.append(connection)  # hold it open, never answer

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]

    def use_reset() -> int:
        mode["reset"] = True
        return len(accepted)

    try:
        yield f"http://127.0.0.1:{port}/v1", use_reset
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def _loopback_manager(flavour: str, api_url: str) -> tuple[Any, Callable[[Any], Any]]:
    options: dict[str, Any] = {"api_url": api_url, "timeout": 0.2, "retry_backoff": 0.0}
    if flavour == "sync":
        return ClerkKeyManager("sk_test_loopback", **options), lambda c: c
    import asyncio

    return AsyncClerkKeyManager("sk_test_loopback", **options), asyncio.run


def test_a_server_that_never_answers_times_out(
    silent_server: tuple[str, Callable[[], int]], flavour: str
) -> None:
    api_url, _ = silent_server
    manager, run = _loopback_manager(flavour, api_url)
    with pytest.raises(BackendUnavailableError, match="ReadTimeout on verify, 3 attempt"):
        run(manager.validate_api_key("ak_" + "A" * 44))
    if flavour == "sync":
        manager.close()


def test_a_server_that_resets_connections(
    silent_server: tuple[str, Callable[[], int]], flavour: str
) -> None:
    api_url, use_reset = silent_server
    use_reset()
    manager, run = _loopback_manager(flavour, api_url)
    manager.max_active_keys_per_owner = 0  # no list before the create: the create is reset
    with pytest.raises(BackendUnavailableError, match="Clerk is unreachable") as caught:
        run(manager.validate_api_key("ak_" + "A" * 44))
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    with pytest.raises(BackendUnavailableError, match="may or may not"):
        run(manager.create_api_key("user_" + "a" * 27, "reset"))
    if flavour == "sync":
        manager.close()


def test_nothing_listening_is_backend_unavailable(flavour: str) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nobody listens on
    manager, run = _loopback_manager(flavour, f"http://127.0.0.1:{port}/v1")
    with pytest.raises(BackendUnavailableError, match="ConnectError"):
        run(manager.validate_api_key("ak_" + "A" * 44))
    if flavour == "sync":
        manager.close()


# --- Retry-After parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("nan", None),
        ("soon", None),
        ("999999999", 86400.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_a_transport_raising_a_bare_os_error_fails_closed(flavour: str) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise ConnectionResetError("reset by a custom transport")

    options: dict[str, Any] = {
        "retry_backoff": 0.0,
        "cache_ttl": 0,
        "max_active_keys_per_owner": 0,  # no list before the create: the create is reset
    }
    transport = httpx.MockTransport(broken)
    if flavour == "sync":
        with httpx.Client(transport=transport) as client:
            manager = ClerkKeyManager("sk_test_x", http_client=client, **options)
            with pytest.raises(BackendUnavailableError, match="ConnectionResetError"):
                manager.validate_api_key("ak_" + "A" * 44)
    else:
        import asyncio

        async def run() -> None:
            async with httpx.AsyncClient(transport=transport) as client:
                manager = AsyncClerkKeyManager("sk_test_x", http_client=client, **options)
                with pytest.raises(BackendUnavailableError, match="may or may not"):
                    await manager.create_api_key("user_" + "a" * 27, "reset")

        asyncio.run(run())

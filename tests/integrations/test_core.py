"""The framework-free core: settings, credential parsing, error mapping, /api-keys flows."""

from __future__ import annotations

import json
import logging
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

import apikeys
from apikeys import (
    APIKeysError,
    AuthenticationError,
    BackendUnavailableError,
    ConfigurationError,
    ExpiredKeyError,
    InsufficientScopeError,
    InvalidInputError,
    InvalidKeyError,
    KeyLimitReachedError,
    KeyNotFoundError,
    LimitEscalationError,
    MissingDependencyError,
    MissingKeyError,
    RateLimitedError,
    RevocationIncompleteError,
    RevokedKeyError,
    VerifiedKey,
)
from apikeys._protocols import KeyManager
from apikeys.integrations._authentication import (
    authenticate_async,
    authenticate_sync,
    required_scopes,
)
from apikeys.integrations._clients import HeaderSource, Peer, text_pairs
from apikeys.integrations._credentials import (
    MAX_CREDENTIAL_LENGTH,
    ASGICredentials,
    RequestCredentials,
    WSGICredentials,
)
from apikeys.integrations._management import (
    CreateKey,
    ForeignUserError,
    LifetimeEscalationError,
    ManagementRequest,
    RevokeKey,
    handle_management_async,
    handle_management_sync,
    parse_json_body,
)
from apikeys.integrations._responses import CoreResponse, error_response
from apikeys.integrations._settings import (
    IntegrationSettings,
    Limiters,
    check_exempt_paths,
    is_exempt,
    split_config,
)
from tests.integrations.conftest import OTHER_OWNER, OWNER, Seeded

# What a key may hold: visible ASCII but the comma, which separates a repeated header's values.
VISIBLE_ASCII = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation.replace(",", "")
)
TOKENS = VISIBLE_ASCII.filter(lambda t: 0 < len(t) <= MAX_CREDENTIAL_LENGTH)
SPACE = st.text(alphabet=" \t", max_size=3)
DEFAULTS = IntegrationSettings()
NO_LIMITS = Limiters()


def _asgi_scope(headers: HeaderSource, query: HeaderSource = ()) -> dict[str, Any]:
    """An ASGI scope sending ``headers`` (repeats and list values as separate fields)."""

    def raw(text: str) -> bytes:
        # ASGI carries bytes; text beyond latin-1 arrives as its UTF-8 bytes.
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return text.encode()

    return {
        "type": "http",
        "headers": [(raw(name.lower()), raw(value)) for name, value in text_pairs(headers)],
        "query_string": urlencode(list(text_pairs(query))).encode(),
    }


def extract_credential(
    headers: HeaderSource, query: HeaderSource = (), settings: IntegrationSettings = DEFAULTS
) -> str:
    """The key a request with these headers and query presents, read as every ASGI adapter does."""
    return ASGICredentials(_asgi_scope(headers, query)).credential(settings)


# --- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"header_names": ()},
        {"header_names": ("X Bad",)},
        {"header_names": ("X-Key\r\nInjected",)},
        {"query_param": "a b"},
        {"realm": 'say "hi"'},
        {"realm": ""},
        {"exempt_paths": ("health",)},
        {"exempt_paths": ("/a/*/b",)},
        {"management_scope": "keys:*"},
        {"management_scope": "bad scope"},
        {"invalid_key_status": 400},
        {"management_delete": "purge"},
        {"max_body_bytes": 10},
        {"unknown_option": True},
    ],
)
def test_bad_settings_are_a_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="invalid apikeys integration settings"):
        IntegrationSettings.from_mapping(options)


def test_settings_from_mapping_take_any_case() -> None:
    settings = IntegrationSettings.from_mapping({"INVALID_KEY_STATUS": 401, "Realm": "svc"})
    assert (settings.invalid_key_status, settings.realm) == (401, "svc")


def test_lists_may_be_written_as_comma_separated_text() -> None:
    settings = IntegrationSettings.from_mapping(
        {"header_names": "Authorization, X-Token", "exempt_paths": "/health,/public/*"}
    )
    assert settings.header_names == ("Authorization", "X-Token")
    assert settings.exempt_paths == ("/health", "/public/*")


def test_split_config_separates_integration_backend_and_manager_options() -> None:
    settings, backend, manager_options = split_config(
        {
            "APIKEYS_BACKEND": "sqlite:///k.db",
            "APIKEYS_EXEMPT_PATHS": ["/health"],
            "APIKEYS_CACHE_TTL": 0,
            "SECRET_KEY": "not ours",
            "apikeys_realm": "svc",
        },
        "APIKEYS_",
    )
    assert backend == "sqlite:///k.db"
    assert settings.exempt_paths == ("/health",)
    assert settings.realm == "svc"
    assert manager_options == {"cache_ttl": 0}


def test_check_exempt_paths() -> None:
    assert check_exempt_paths(None) is None
    assert check_exempt_paths(["/health"]) == ("/health",)
    with pytest.raises(ConfigurationError):
        check_exempt_paths(["health"])


def test_required_scopes_are_checked_when_declared() -> None:
    assert required_scopes("read:data write:data") == ("read:data", "write:data")
    assert required_scopes(()) == required_scopes([]) == ()
    with pytest.raises(ConfigurationError):
        required_scopes(["data:*"])


# --- credentials ---------------------------------------------------------------------------


@given(token=TOKENS, before=SPACE, middle=SPACE.filter(bool), after=SPACE, scheme=st.sampled_from(
    ["Bearer", "bearer", "BEARER", "bEaReR"]))  # fmt: skip
def test_bearer_header_yields_the_token(
    token: str, before: str, middle: str, after: str, scheme: str
) -> None:
    headers = [("Authorization", f"{before}{scheme}{middle}{token}{after}")]
    assert extract_credential(headers) == token


@given(token=TOKENS, name=st.sampled_from(["X-API-Key", "x-api-key", "X-Api-Key"]))
def test_api_key_header_yields_the_token(token: str, name: str) -> None:
    assert extract_credential({name: f" {token} "}) == token


@given(
    headers=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(["Authorization", "X-API-Key", "x-api-key"]), st.text()),
            st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))),
        ),
        max_size=5,
    ),
    query=st.lists(st.tuples(st.sampled_from(["api_key", "x"]), st.text()), max_size=3),
    allow_query=st.booleans(),
)
def test_any_headers_give_a_key_or_an_authentication_error(
    headers: list[tuple[str, str]], query: list[tuple[str, str]], allow_query: bool
) -> None:
    settings = IntegrationSettings(allow_query_param=allow_query)
    try:
        credential = extract_credential(headers, query, settings)
    except (MissingKeyError, InvalidKeyError):
        return
    assert 0 < len(credential) <= MAX_CREDENTIAL_LENGTH
    assert credential.isascii() and credential.isprintable() and " " not in credential
    assert "," not in credential


@given(raw=st.binary(max_size=200))
def test_raw_asgi_bytes_give_the_key_or_an_authentication_error(raw: bytes) -> None:
    try:
        credential = extract_credential([(b"authorization", b"Bearer " + raw), (b"x-api-key", raw)])
    except (MissingKeyError, InvalidKeyError):
        return
    assert credential == raw.decode("ascii").strip(" \t\r\n")


@pytest.mark.parametrize(
    ("headers", "error", "code"),
    [
        ({}, MissingKeyError, "missing_api_key"),
        ({"Authorization": ""}, MissingKeyError, "missing_api_key"),
        ({"Authorization": "Bearer"}, MissingKeyError, "missing_api_key"),
        ({"Authorization": "Bearer    "}, MissingKeyError, "missing_api_key"),
        ({"Authorization": "Basic dTpw"}, MissingKeyError, "missing_api_key"),
        ({"Authorization": "Token abc"}, MissingKeyError, "missing_api_key"),
        ({"Authorization": "Bearer a b"}, InvalidKeyError, "invalid_api_key"),
        ({"X-API-Key": "clé"}, InvalidKeyError, "invalid_api_key"),
        ({"X-API-Key": "a\x00b"}, InvalidKeyError, "invalid_api_key"),
        ({"X-API-Key": "k" * (MAX_CREDENTIAL_LENGTH + 1)}, InvalidKeyError, "invalid_api_key"),
        ({"X-API-Key": "k" * 1_000_000}, InvalidKeyError, "invalid_api_key"),
        ({"Authorization": "Bearer one", "X-API-Key": "two"}, InvalidKeyError, "invalid_api_key"),
        ({"X-Other": "apk_1key"}, MissingKeyError, "missing_api_key"),
    ],
)
def test_credential_errors(headers: dict[str, str], error: type[APIKeysError], code: str) -> None:
    with pytest.raises(error) as caught:
        extract_credential(headers)
    assert caught.value.code == code


def test_same_key_in_two_key_headers_is_fine() -> None:
    assert extract_credential([("Authorization", "Bearer k1"), ("X-API-Key", "k1")]) == "k1"


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer k1"), ("authorization", "bearer k1")],
        [(b"authorization", b"Bearer k1"), (b"authorization", b"Bearer k1")],
        [("X-API-Key", "k1"), ("x-api-key", "k1"), ("Authorization", "Bearer k1")],
        {"X-API-Key": ["k1", "k1"]},
        [("Authorization", "Bearer k1"), ("Authorization", "Basic dTpw")],
        [("Authorization", "Bearer k1"), ("Authorization", "")],
        # What WSGI servers make of the same header sent twice: one value, a list.
        {"Authorization": "Bearer k1, Bearer k1"},
        {"Authorization": "Bearer k1,Bearer k1"},
        {"X-API-Key": "k1,k1"},
    ],
    ids=["auth-twice", "asgi-auth-twice", "x-api-key-twice", "list-value", "bearer-then-basic",
         "bearer-then-empty", "wsgi-joined", "gunicorn-joined", "x-api-key-joined"],
)  # fmt: skip
def test_a_key_header_sent_more_than_once_is_refused(headers: HeaderSource) -> None:
    with pytest.raises(InvalidKeyError, match="more than once") as caught:
        extract_credential(headers)
    assert caught.value.status_code == 403


def test_a_repeated_authorization_that_starts_with_another_scheme_is_no_key() -> None:
    # Combined, it is one Authorization value of another scheme: no key, as a WSGI server sees it.
    with pytest.raises(MissingKeyError):
        extract_credential([("Authorization", "Basic dTpw"), ("Authorization", "Bearer k1")])
    with pytest.raises(MissingKeyError):
        extract_credential({"Authorization": "Basic dTpw, Bearer k1"})


def test_query_key_is_refused_unless_enabled() -> None:
    with pytest.raises(MissingKeyError, match="query string"):
        extract_credential({}, {"api_key": "k1"})
    assert extract_credential({"X-API-Key": "k1"}, {"api_key": "k2"}) == "k1"
    enabled = IntegrationSettings(allow_query_param=True, query_param="token")
    assert extract_credential({}, {"token": "k1"}, enabled) == "k1"
    # Pairs whose value is a list are read like a mapping's list values; HeaderSource omits them.
    repeated = cast("HeaderSource", [("token", ["k1", "k1"])])
    assert extract_credential({}, repeated, enabled) == "k1"
    with pytest.raises(InvalidKeyError):
        extract_credential({"X-API-Key": "k1"}, {"token": "k2"}, enabled)


def test_custom_header_names_replace_the_defaults() -> None:
    settings = IntegrationSettings(header_names=("X-Token",))
    assert extract_credential({"x-token": "k1"}, settings=settings) == "k1"
    with pytest.raises(MissingKeyError):
        extract_credential({"Authorization": "Bearer k1"}, settings=settings)


def _documented_credential(value: str, *, bearer: bool) -> str | None:
    """The header rule as docs/integrations/index.md states it, written plainly as an oracle."""
    value = value.strip(" \t\r\n")
    if value.lower().startswith("bearer") and value[6:7] in (" ", "\t"):
        value = value[6:].strip(" \t")
    elif bearer:
        return None
    if not value:
        return None
    if "," in value:
        raise InvalidKeyError()  # a list: the header came more than once
    visible = all("!" <= char <= "~" for char in value)
    if not visible or len(value) > MAX_CREDENTIAL_LENGTH:
        raise InvalidKeyError()
    return value


NEAR_KEYS = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=255), max_size=20),
    st.builds(
        lambda scheme, gap, token, tail: f"{scheme}{gap}{token}{tail}",
        st.sampled_from(["Bearer", "bearer", "BEARER", "BeaRer", "Basic", "", "Bearer\t"]),
        st.sampled_from(["", " ", "\t", "  "]),
        st.one_of(TOKENS, st.text(alphabet=st.characters(max_codepoint=255), max_size=8)),
        st.sampled_from(["", " ", "\r\n", "\x00", "\x7f", "é"]),
    ),
    st.integers(MAX_CREDENTIAL_LENGTH - 2, MAX_CREDENTIAL_LENGTH + 2).map(
        lambda size: "Bearer " + "k" * size
    ),
)


@given(value=NEAR_KEYS, header=st.sampled_from(["Authorization", "X-API-Key"]))
def test_header_values_follow_the_documented_rule(value: str, header: str) -> None:
    bearer = header == "Authorization"
    try:
        expected: str | type[APIKeysError] | None = _documented_credential(value, bearer=bearer)
    except InvalidKeyError:
        expected = InvalidKeyError
    try:
        got: str | type[APIKeysError] | None = extract_credential({header: value})
    except InvalidKeyError:
        got = InvalidKeyError
    except MissingKeyError:
        got = None
    assert got == expected


HEADER_NAME_SETS = [
    ("Authorization", "X-API-Key"),
    ("X-Token",),
    ("x-api-key", "Authorization"),
    ("Content-Type",),
]


def _outcome(credentials: RequestCredentials, settings: IntegrationSettings) -> object:
    try:
        return credentials.credential(settings)
    except (MissingKeyError, InvalidKeyError) as exc:
        return (type(exc), exc.message)


@given(
    headers=st.dictionaries(
        st.sampled_from(["Authorization", "X-API-Key", "X-Token", "X-Other", "Content-Type"]),
        NEAR_KEYS,
        max_size=4,
    ),
    query=st.lists(
        st.tuples(st.sampled_from(["api_key", "token", "x", "api key"]), NEAR_KEYS), max_size=3
    ),
    header_names=st.sampled_from(HEADER_NAME_SETS),
    allow_query=st.booleans(),
    query_param=st.sampled_from(["api_key", "token"]),
)
def test_wsgi_and_asgi_requests_present_what_their_headers_say(
    headers: dict[str, str],
    query: list[tuple[str, str]],
    header_names: tuple[str, ...],
    allow_query: bool,
    query_param: str,
) -> None:
    """The adapters' two readers (WSGI environ, ASGI scope) give the same answer."""
    settings = IntegrationSettings(
        header_names=header_names, allow_query_param=allow_query, query_param=query_param
    )
    query_string = urlencode(query)
    environ = {"QUERY_STRING": query_string, "REMOTE_ADDR": "192.0.2.1"}
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else "HTTP_" + key] = value
    scope = {
        "type": "http",
        "headers": [(n.lower().encode(), v.encode("latin-1")) for n, v in headers.items()],
        "query_string": query_string.encode(),
    }
    assert _outcome(WSGICredentials(environ), settings) == _outcome(
        ASGICredentials(scope), settings
    )


@given(
    fields=st.lists(
        st.tuples(st.sampled_from(["Authorization", "authorization", "X-API-Key"]), NEAR_KEYS),
        min_size=1,
        max_size=4,
    ),
    separator=st.sampled_from([",", ", "]),
)
def test_repeated_key_headers_get_one_answer_over_wsgi_and_asgi(
    fields: list[tuple[str, str]], separator: str
) -> None:
    """A header sent several times: separate fields in ASGI, one joined value in WSGI.

    WSGI servers join repeats with ``","`` (werkzeug, gunicorn) or ``", "``
    (waitress, werkzeug's test client); whichever, every adapter answers alike.
    """
    environ: dict[str, str] = {}
    for name, value in fields:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = environ[key] + separator + value if key in environ else value
    scope = {
        "type": "http",
        "headers": [(n.lower().encode(), v.encode("latin-1")) for n, v in fields],
        "query_string": b"",
    }
    expected = _outcome(ASGICredentials(scope), DEFAULTS)
    assert _outcome(WSGICredentials(environ), DEFAULTS) == expected
    if isinstance(expected, str):
        # A repeated header never gives the key: at most it holds none (an
        # Authorization list of another scheme), and another header gave it.
        values: dict[str, list[str]] = {}
        for name, value in fields:
            values.setdefault(name.lower(), []).append(value)
        for name, repeated in values.items():
            if len(repeated) > 1:
                joined = _asgi_scope({name: ", ".join(repeated)})
                alone = _outcome(ASGICredentials(joined), DEFAULTS)
                assert isinstance(alone, tuple) and alone[0] is MissingKeyError, (name, repeated)


def test_wsgi_and_asgi_clients_come_from_the_connection_or_trusted_proxies() -> None:
    settings = IntegrationSettings(trusted_proxies=("10.0.0.0/8",))
    forwarded = {"HTTP_X_FORWARDED_FOR": "198.51.100.7", "HTTP_X_FORWARDED_PROTO": "https"}
    direct = WSGICredentials({"REMOTE_ADDR": "192.0.2.1", "wsgi.url_scheme": "http", **forwarded})
    assert direct.client(settings) == Peer("192.0.2.1", "http")
    proxied = WSGICredentials({"REMOTE_ADDR": "10.1.2.3", **forwarded})
    assert proxied.client(settings) == Peer("198.51.100.7", "https")
    assert WSGICredentials({}, lambda: "https").client(settings) == Peer(None, "https")
    headers = [(b"x-forwarded-for", b"198.51.100.7"), (b"x-forwarded-proto", b"https")]
    scope = {"client": ("10.1.2.3", 1234), "scheme": "http", "headers": headers}
    assert ASGICredentials(scope).client(settings) == Peer("198.51.100.7", "https")
    assert ASGICredentials({**scope, "client": None}).client(settings) == Peer(None, "http")


# --- exempt paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "exempt"),
    [
        ("/health", True),
        ("/health/", True),
        ("/healthz", False),
        ("/health/deep", False),
        ("/public", True),
        ("/public/", True),
        ("/public/a/b", True),
        ("/publicity", False),
        ("/public/../admin", False),
        ("/public/./x", False),
        ("/", False),
        ("", False),
        ("health", False),
    ],
)
def test_is_exempt(path: str, exempt: bool) -> None:
    assert is_exempt(path, ("/health", "/public/*")) is exempt


def test_root_patterns() -> None:
    assert is_exempt("/", ("/",))
    assert not is_exempt("/x", ("/",))
    assert is_exempt("/anything/at/all", ("/*",))
    assert not is_exempt("/x", ())


@given(prefix=st.text(), suffix=st.text(), dots=st.sampled_from([".", ".."]))
def test_dot_segments_are_never_exempt(prefix: str, suffix: str, dots: str) -> None:
    path = f"/public/{prefix.replace('/', '')}/{dots}/{suffix}"
    assert not is_exempt(path, ("/public/*", "/*"))


# --- error responses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MissingKeyError(), 401, "missing_api_key"),
        (InvalidKeyError(), 403, "invalid_api_key"),
        (ExpiredKeyError(key_id="k"), 403, "expired_api_key"),
        (RevokedKeyError(key_id="k"), 403, "revoked_api_key"),
        (InsufficientScopeError(missing_scopes=["a:b"]), 403, "insufficient_scope"),
        (AuthenticationError(), 403, "authentication_failed"),
        (ForeignUserError(), 403, "forbidden_user"),
        (LifetimeEscalationError(), 403, "expiration_beyond_caller"),
        (LimitEscalationError(), 403, "limits_beyond_caller"),
        (KeyNotFoundError(), 404, "api_key_not_found"),
        (KeyLimitReachedError(limit=100), 409, "key_limit_reached"),
        (InvalidInputError("bad", field="user_id"), 422, "invalid_input"),
        (RateLimitedError(retry_after=2.1), 429, "rate_limited"),
        (ConfigurationError("DSN postgres://u:pw@db"), 500, "configuration_error"),
        (MissingDependencyError("flask", "flask"), 500, "missing_dependency"),
        (BackendUnavailableError("host db.internal refused"), 503, "backend_unavailable"),
        (RevocationIncompleteError(key_id="p"), 503, "revocation_incomplete"),
        (APIKeysError(), 500, "apikeys_error"),
    ],
)
def test_every_error_maps_through_its_status_code(
    error: APIKeysError, status: int, code: str
) -> None:
    response = error_response(error)
    assert response.status == status == error.status_code
    assert response.body is not None
    assert response.body["code"] == code
    assert json.loads(response.content())["code"] == code


def test_an_incomplete_revocation_names_the_keys_still_active() -> None:
    response = error_response(RevocationIncompleteError(key_id="parent", still_active=["c1"]))
    assert response.status == 503
    assert response.body is not None
    assert response.body["stillActive"] == ["c1"]
    assert response.body["message"] == RevocationIncompleteError.default_message
    assert dict(response.headers)["Retry-After"] == "1"


def test_missing_key_challenge() -> None:
    response = error_response(MissingKeyError(), IntegrationSettings(realm="svc"))
    assert dict(response.headers) == {"WWW-Authenticate": 'Bearer realm="svc"'}


def test_invalid_key_in_rfc6750_mode() -> None:
    settings = IntegrationSettings(invalid_key_status=401)
    for error in (InvalidKeyError(), ExpiredKeyError(), RevokedKeyError()):
        response = error_response(error, settings)
        assert response.status == 401
        assert dict(response.headers)["WWW-Authenticate"] == (
            f'Bearer realm="api", error="invalid_token", error_description="{error.message}"'
        )
    assert error_response(InsufficientScopeError(), settings).status == 403
    assert error_response(InvalidKeyError()).headers == ()


def test_insufficient_scope_names_the_missing_scopes() -> None:
    response = error_response(InsufficientScopeError(missing_scopes=["a:b", "c"]))
    assert response.body is not None
    assert response.body["missingScopes"] == ["a:b", "c"]
    assert dict(response.headers)["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="a:b c"'
    )


def test_challenge_parameters_drop_quotes_and_control_characters() -> None:
    error = InvalidKeyError('bad "key"\r\nX-Injected: 1')
    challenge = dict(error_response(error, IntegrationSettings(invalid_key_status=401)).headers)
    assert challenge["WWW-Authenticate"].endswith('error_description="bad keyX-Injected: 1"')


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(None, "5"), (0.2, "1"), (2.1, "3"), (float("nan"), "5"), (-4, "5"), (10**9, "86400")],
)
def test_retry_after(retry_after: float | None, header: str) -> None:
    for error in (BackendUnavailableError(retry_after=retry_after),
                  RateLimitedError(retry_after=retry_after)):  # fmt: skip
        response = error_response(error)
        assert dict(response.headers) == {"Retry-After": header}
        assert response.body is not None
        assert response.body["retryAfter"] == int(header)


def test_server_errors_show_only_the_generic_message() -> None:
    secret = apikeys.generate_key().key
    for error in (BackendUnavailableError(f"pool for {secret} failed"),
                  ConfigurationError(f"bad pepper {secret}")):  # fmt: skip
        response = error_response(error)
        assert secret not in response.content().decode()
        assert response.body is not None
        assert response.body["message"] == type(error).default_message


def test_server_errors_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="apikeys.integrations"):
        error_response(BackendUnavailableError("database unavailable (OperationalError)"))
        error_response(InvalidKeyError())
    assert [record.getMessage() for record in caplog.records] == [
        "API key request failed: BackendUnavailableError: database unavailable (OperationalError)"
    ]


def test_input_errors_carry_json_field_names() -> None:
    response = error_response(InvalidInputError("user_id must be a string", field="user_id"))
    assert response.body is not None
    assert response.body["errors"] == [{"field": "userId", "message": "user_id must be a string"}]
    assert error_response(InvalidInputError("bad")).body == {
        "code": "invalid_input",
        "message": "bad",
        "errors": [],
    }


def test_body_less_response_has_no_content() -> None:
    assert CoreResponse(204).content() == b""


# --- authentication ------------------------------------------------------------------------


def test_manager_calls_show_no_argument() -> None:
    secret = apikeys.generate_key().key
    calls = (
        CreateKey("u", secret, ("read:data",), None, {"note": secret}, "k", None, None),
        RevokeKey("k", secret, "u"),
    )
    for call in calls:
        for shown in (repr(call), str(call), f"{call}", repr([call])):
            assert secret not in shown
            assert type(call).__name__ in shown


class _AnsweringManager:
    """A sync manager whose ``validate_api_key`` records its call and gives ``answer``."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def validate_api_key(self, secret: str, *, required_scopes: tuple[str, ...]) -> object:
        self.calls.append((secret, required_scopes))
        return self.answer


def _answered_with(
    result: object, scopes: tuple[str, ...] = (), headers: HeaderSource = (("X-API-Key", "apk_1x"),)
) -> VerifiedKey:
    manager = _AnsweringManager(result)
    credentials = ASGICredentials(_asgi_scope(headers))
    try:
        return authenticate_sync(
            cast(KeyManager, manager), credentials, DEFAULTS, scopes, limiters=NO_LIMITS
        )
    finally:
        assert manager.calls in ([], [("apk_1x", scopes)])


def test_authentication_fails_closed_on_a_backend_answer_that_is_no_verified_key() -> None:
    with pytest.raises(BackendUnavailableError):
        _answered_with(None)
    with pytest.raises(BackendUnavailableError):
        _answered_with({"user_id": "u"})


def test_authentication_checks_scopes_again_whatever_the_backend_says() -> None:
    verified = VerifiedKey(id="k", user_id="u", name="n", scopes=("read:data",))
    assert _answered_with(verified, ("read:data",)) is verified
    with pytest.raises(InsufficientScopeError) as caught:
        _answered_with(verified, ("write:data",))
    assert caught.value.missing_scopes == ("write:data",)


def test_authentication_refuses_before_any_call_when_no_key_is_sent() -> None:
    manager = _AnsweringManager(None)
    credentials = ASGICredentials(_asgi_scope({}))
    with pytest.raises(MissingKeyError):
        authenticate_sync(cast(KeyManager, manager), credentials, DEFAULTS, limiters=NO_LIMITS)
    assert manager.calls == []


# --- request bodies --------------------------------------------------------------------------


@given(body=st.binary(max_size=300))
def test_any_body_parses_or_is_an_input_error(body: bytes) -> None:
    try:
        parsed = parse_json_body(body, DEFAULTS)
    except InvalidInputError:
        return
    assert isinstance(parsed, dict)


@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
))  # fmt: skip
def test_only_json_objects_are_bodies(value: object) -> None:
    encoded = json.dumps(value).encode()
    if isinstance(value, dict):
        assert parse_json_body(encoded, DEFAULTS) == value
    else:
        with pytest.raises(InvalidInputError):
            parse_json_body(encoded, DEFAULTS)


def test_deeply_nested_body_is_an_input_error() -> None:
    with pytest.raises(InvalidInputError):
        parse_json_body(b"[" * 10_000 + b"]" * 10_000, IntegrationSettings(max_body_bytes=30_000))


# --- management flows, with sync and async managers ------------------------------------------

Serve = Callable[..., Awaitable[CoreResponse]]
"""``await serve(request, settings, limiters=None)``: limiters default to fresh ones."""


@pytest.fixture(params=["sync", "async"])
async def serve(request: pytest.FixtureRequest, seeded: Seeded) -> AsyncIterator[Serve]:
    """Serve a management request with a real sync or async SQLite manager."""
    if request.param == "sync":
        manager = apikeys.create_key_manager(seeded.url)

        async def serve_sync(
            call: ManagementRequest, settings: IntegrationSettings, limiters: Limiters | None = None
        ) -> CoreResponse:
            limiters = limiters or Limiters.of(settings)
            return handle_management_sync(manager, call, settings, limiters=limiters)

        yield serve_sync
        manager.close()
    else:
        async_manager = apikeys.create_async_key_manager(seeded.url)

        async def serve_async(
            call: ManagementRequest, settings: IntegrationSettings, limiters: Limiters | None = None
        ) -> CoreResponse:
            limiters = limiters or Limiters.of(settings)
            return await handle_management_async(async_manager, call, settings, limiters=limiters)

        yield serve_async
        await async_manager.close()


def _caller(seeded: Seeded, which: str = "admin") -> VerifiedKey:
    manager = apikeys.create_key_manager(seeded.url)
    try:
        return manager.validate_api_key(getattr(seeded, which).secret)
    finally:
        manager.close()


async def test_list_create_revoke_round_trip(serve: Serve, seeded: Seeded) -> None:
    caller = _caller(seeded)
    listed = await serve(ManagementRequest("GET", caller, query={"limit": "10"}), DEFAULTS)
    assert listed.status == 200
    assert listed.body is not None
    assert {item["name"] for item in listed.body["items"]} == {"admin", "reader"}

    body = json.dumps({"name": "new", "scopes": "keys:read", "metadata": {"team": "ci"}})
    created = await serve(ManagementRequest("post", caller, body=body.encode()), DEFAULTS)
    assert created.status == 201
    assert created.body is not None
    assert created.body["metadata"] == {"team": "ci"}
    assert created.body["secret"].startswith("apk_")
    assert ("Cache-Control", "no-store") in created.headers

    revoked = await serve(
        ManagementRequest("DELETE", caller, key_id=created.body["id"], query={"reason": "done"}),
        DEFAULTS,
    )
    assert revoked.status == 200
    assert revoked.body is not None
    assert revoked.body["revocationReason"] == "done"


async def test_foreign_key_is_404_and_foreign_user_403(serve: Serve, seeded: Seeded) -> None:
    caller = _caller(seeded)
    foreign = await serve(ManagementRequest("DELETE", caller, key_id=seeded.other.id), DEFAULTS)
    assert foreign.status == 404
    before = seeded.count_keys()
    body = json.dumps({"name": "x", "userId": OTHER_OWNER}).encode()
    refused = await serve(ManagementRequest("POST", caller, body=body), DEFAULTS)
    assert refused.status == 403
    assert refused.body is not None
    assert refused.body["code"] == "forbidden_user"
    assert seeded.count_keys() == before


async def test_no_escalation(serve: Serve, seeded: Seeded) -> None:
    caller = _caller(seeded, "reader").model_copy(update={"scopes": ("read:data", "keys:manage")})
    body = json.dumps({"name": "x", "scopes": ["read:data", "keys:*"]}).encode()
    refused = await serve(ManagementRequest("POST", caller, body=body), DEFAULTS)
    assert refused.status == 403
    assert refused.body is not None
    assert refused.body["missingScopes"] == ["keys:*"]
    own = json.dumps({"name": "x", "scopes": ["read:data"], "userId": OWNER}).encode()
    assert (await serve(ManagementRequest("POST", caller, body=own), DEFAULTS)).status == 201


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_the_flow_itself_requires_the_management_scope(
    serve: Serve, seeded: Seeded, method: str
) -> None:
    # An adapter that forgot to ask for the scope when authenticating is still covered.
    caller = _caller(seeded, "reader")
    before = seeded.count_keys()
    body = json.dumps({"name": "x"}).encode() if method == "POST" else b""
    key_id = seeded.admin.id if method == "DELETE" else None
    request = ManagementRequest(method, caller, key_id=key_id, body=body)
    refused = await serve(request, DEFAULTS)
    assert refused.status == 403
    assert refused.body is not None
    assert refused.body["missingScopes"] == ["keys:manage"]
    assert dict(refused.headers)["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="keys:manage"'
    )
    assert seeded.count_keys() == before
    opened = await serve(request, IntegrationSettings(management_scope=None))
    assert opened.status in (200, 201)


async def test_body_size_cap(serve: Serve, seeded: Seeded) -> None:
    settings = IntegrationSettings(max_body_bytes=256)
    caller = _caller(seeded)
    body = json.dumps({"name": "x" * 300}).encode()
    refused = await serve(ManagementRequest("POST", caller, body=body), settings)
    assert refused.status == 422
    assert refused.body is not None
    assert refused.body["errors"] == [{"field": "body", "message": "must be at most 256 bytes"}]


async def test_delete_mode(serve: Serve, seeded: Seeded) -> None:
    settings = IntegrationSettings(management_delete="delete")
    caller = _caller(seeded)
    deleted = await serve(ManagementRequest("DELETE", caller, key_id=seeded.reader.id), settings)
    assert (deleted.status, deleted.body) == (204, None)
    again = await serve(ManagementRequest("DELETE", caller, key_id=seeded.reader.id), settings)
    assert again.status == 404


async def test_head_lists_like_get(serve: Serve, seeded: Seeded) -> None:
    caller = _caller(seeded)
    head = await serve(ManagementRequest("HEAD", caller), DEFAULTS)
    get = await serve(ManagementRequest("GET", caller), DEFAULTS)
    assert head.status == get.status == 200
    assert head.body == get.body


@pytest.mark.parametrize(("method", "key_id", "allow"), [
    ("PUT", None, "GET, POST, DELETE"), ("PATCH", "k", "DELETE"), ("GET", "k", "DELETE"),
    ("POST", "k", "DELETE"),
])  # fmt: skip
async def test_other_methods_are_405(
    serve: Serve, seeded: Seeded, method: str, key_id: str | None, allow: str
) -> None:
    response = await serve(ManagementRequest(method, _caller(seeded), key_id=key_id), DEFAULTS)
    assert response.status == 405
    assert dict(response.headers) == {"Allow": allow}


async def test_backend_down_is_503(unavailable_url: str, seeded: Seeded) -> None:
    caller = _caller(seeded)
    manager = apikeys.create_async_key_manager(unavailable_url)
    try:
        response = await handle_management_async(
            manager, ManagementRequest("GET", caller), DEFAULTS, limiters=NO_LIMITS
        )
    finally:
        await manager.close()
    assert response.status == 503
    sync_manager = apikeys.create_key_manager(unavailable_url)
    try:
        credentials = ASGICredentials(_asgi_scope({"X-API-Key": seeded.admin.secret}))
        with pytest.raises(BackendUnavailableError):
            authenticate_sync(sync_manager, credentials, DEFAULTS, limiters=NO_LIMITS)
    finally:
        sync_manager.close()


async def test_authentication_with_both_drivers(seeded: Seeded) -> None:
    headers = {"Authorization": f"Bearer {seeded.reader.secret}"}
    sync_manager = apikeys.create_key_manager(seeded.url)
    async_manager = apikeys.create_async_key_manager(seeded.url)
    try:
        credentials = ASGICredentials(_asgi_scope(headers))
        scopes = ("read:data",)
        by_sync = authenticate_sync(sync_manager, credentials, DEFAULTS, scopes, limiters=NO_LIMITS)
        by_async = await authenticate_async(
            async_manager, credentials, DEFAULTS, scopes, limiters=NO_LIMITS
        )
    finally:
        sync_manager.close()
        await async_manager.close()
    assert by_sync == by_async
    assert by_sync.user_id == OWNER


async def test_creation_limit_zero_is_off_and_counts_only_creations(
    serve: Serve, seeded: Seeded
) -> None:
    caller = _caller(seeded)
    unlimited = IntegrationSettings(max_key_creations=0)
    assert Limiters.of(unlimited).creation is None
    body = json.dumps({"name": "x"}).encode()
    statuses = [
        (await serve(ManagementRequest("POST", caller, body=body), unlimited)).status
        for _ in range(25)
    ]
    assert statuses == [201] * 25
    limited = IntegrationSettings(max_key_creations=1)
    limiters = Limiters.of(limited)  # one app's
    for method in ("GET", "DELETE"):  # listing and revoking count nothing
        key_id = seeded.reader.id if method == "DELETE" else None
        request = ManagementRequest(method, caller, key_id=key_id)
        assert (await serve(request, limited, limiters)).status == 200
    create = ManagementRequest("POST", caller, body=body)
    assert (await serve(create, limited, limiters)).status == 201
    assert (await serve(create, limited, limiters)).status == 429

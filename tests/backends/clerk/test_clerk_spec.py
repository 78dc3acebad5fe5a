"""Conformance with Clerk's official OpenAPI spec (``tests/backends/clerk/spec/2026-05-12.yml``).

Every request the managers send is checked against the spec's request body
and parameter schemas; every example answer the spec gives (assembled from
its property examples) is parsed by the backend; and the fake's own answers
are checked against the spec's answer schemas, so the fake cannot drift from
the real API unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import example as hypothesis_example
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator

from apikeys import ExpiredKeyError, InvalidInputError
from apikeys.backends._clerk import error_details, parse_key_object, to_api_key, to_verified
from apikeys.backends.clerk import ClerkKeyManager
from apikeys.testing import FakeClerk
from tests.backends.clerk.openapi import REPO_ROOT, SPEC_PATH, SPEC_SHA256, load_spec
from tests.redis_server import RedisServer

pytestmark = pytest.mark.clerk

API_KEY_PATHS = (
    "/api_keys",
    "/api_keys/{apiKeyID}",
    "/api_keys/{apiKeyID}/revoke",
    "/api_keys/verify",
)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    @property
    def matcher(self) -> re.Pattern[str]:
        return re.compile("/v1" + re.sub(r"\{[^}]+\}", "([^/]+)", self.path))


def _operations(spec: dict[str, Any]) -> list[Operation]:
    found = []
    for path in API_KEY_PATHS:
        for method, operation in spec["paths"][path].items():
            found.append(Operation(method.upper(), path, operation))
    return found


def _operation_for(spec: dict[str, Any], request: httpx.Request) -> Operation:
    matches = [
        op
        for op in _operations(spec)
        if op.method == request.method and op.matcher.fullmatch(request.url.path)
    ]
    # /api_keys/verify also matches /api_keys/{apiKeyID}: the literal path wins.
    matches.sort(key=lambda op: "{" in op.path)
    assert matches, f"{request.method} {request.url.path} is not an API-key operation of the spec"
    return matches[0]


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "number":
        return float(value)
    return value


def check_request(spec: dict[str, Any], request: httpx.Request) -> Operation:
    """Assert that ``request`` is exactly what the spec allows; return its operation."""
    operation = _operation_for(spec, request)
    assert request.headers["Authorization"].startswith("Bearer sk_")
    parameters = {p["name"]: p for p in operation.spec.get("parameters", [])}
    sent = dict(request.url.params.items())
    assert set(sent) <= {n for n, p in parameters.items() if p["in"] == "query"}, sent
    path_values = operation.matcher.fullmatch(request.url.path)
    assert path_values is not None
    path_names = re.findall(r"\{([^}]+)\}", operation.path)
    for name, value in zip(path_names, path_values.groups(), strict=True):
        OAS30Validator(parameters[name]["schema"]).validate(value)
    for name, parameter in parameters.items():
        if parameter["in"] != "query":
            continue
        if name in sent:
            OAS30Validator(parameter["schema"]).validate(_coerce(sent[name], parameter["schema"]))
        else:
            assert not parameter.get("required"), f"required query parameter {name} missing"
    body_spec = operation.spec.get("requestBody")
    if body_spec is None:
        assert not request.content, f"{operation.method} {operation.path} takes no body"
    else:
        assert request.headers["Content-Type"] == "application/json"
        schema = body_spec["content"]["application/json"]["schema"]
        OAS30Validator(schema).validate(json.loads(request.content))
    return operation


def check_response(operation: Operation, response: httpx.Response) -> None:
    """Assert that an answer of the fake matches the spec's schema for its status."""
    status = str(201 if response.status_code == 201 else response.status_code)
    documented = operation.spec["responses"].get(
        "200" if status == "201" and operation.method == "POST" else status
    )
    if documented is None:
        return  # e.g. 401 or 429: the spec documents none for these paths
    schema = documented["content"]["application/json"]["schema"]
    OAS30Validator(schema).validate(response.json())


class SpecSpy:
    """A transport over the fake that checks every exchange against the spec."""

    def __init__(self, spec: dict[str, Any], fake: FakeClerk) -> None:
        self.spec = spec
        self.fake = fake
        self.operations: list[str] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        operation = check_request(self.spec, request)
        self.operations.append(operation.spec["operationId"])
        self.requests.append(request)
        response = self.fake.transport.handle_request(request)
        response.read()
        check_response(operation, response)
        return response


@pytest.fixture
def spied(
    clerk_spec: dict[str, Any], fake: FakeClerk, shared_redis: RedisServer
) -> Iterator[tuple[ClerkKeyManager, SpecSpy]]:
    spy = SpecSpy(clerk_spec, fake)
    manager = ClerkKeyManager(
        fake.secret_key,
        api_url=fake.api_url,
        http_client=httpx.Client(transport=httpx.MockTransport(spy)),
        cache_ttl=0,
        redis_url=shared_redis.url,  # where Clerk counts quotas
        verification_budget=None,  # which all fakes, one Clerk instance, would share there
    )
    yield manager, spy
    manager.http_client.close()


def test_every_operation_the_backend_uses_conforms(
    spied: tuple[ClerkKeyManager, SpecSpy], fake: FakeClerk, user_id: str
) -> None:
    manager, spy = spied
    full = manager.create_api_key(
        user_id, "everything", ["read:data", "billing:*"], "2099-12-31", metadata={"a": [1, None]}
    )
    bare = manager.create_api_key(user_id, "bare")
    limited = manager.create_api_key(
        user_id, "limited", rate_limit="100/1m", quota="100000/30d", metadata={"a": 1}
    )
    manager.update_api_key_limits(limited.id, rate_limit=None, quota="500")
    manager.update_api_key_limits(limited.id, quota=None)
    manager.validate_api_key(full.secret, required_scopes=["billing:invoices"])
    manager.list_api_keys(user_id)
    manager.list_api_keys(user_id, include_invalid=True, limit=100, offset=5)
    manager.get_api_key(full.id)
    manager.rotate_api_key(full.id, grace=timedelta(minutes=5))
    manager.rotate_api_key(bare.id, expiration=timedelta(days=3))
    manager.revoke_api_key(bare.id)
    manager.revoke_api_key(full.id, reason="done")
    manager.delete_api_key(full.id)
    fake.fail_next(400, route="POST /api_keys/{id}/revoke")
    manager.revoke_api_key(bare.id, reason="again")
    # A key made elsewhere, with every optional field: its rotation copies them all.
    with fake.client() as client:
        made = client.post(
            f"{fake.api_url}/api_keys",
            json={
                "name": "from the dashboard",
                "subject": user_id,
                "description": "made elsewhere",
                "claims": ["not", "an", "object"],
                "scopes": ["odd scope"],
                "created_by": fake.new_user_id(),
                "type": "api_key",
                "seconds_until_expiration": 3600,
            },
            headers={"Authorization": f"Bearer {fake.secret_key}"},
        ).json()
    # A key created by a key, rotated (its child handed over), then revoked with its child.
    parent = manager.create_api_key(user_id, "parent")
    child = manager.create_api_key(user_id, "child", created_by=parent.id)
    manager.rotate_api_key(parent.id, grace=30)
    assert manager.get_api_key(child.id).created_by != parent.id
    manager.revoke_api_key(manager.get_api_key(child.id).created_by or "", reason="cascade")
    assert manager.get_api_key(child.id).revoked
    manager.rotate_api_key(made["id"], grace=30)
    creates = [r for r in spy.requests if r.method == "POST" and r.url.path.endswith("/api_keys")]
    copied = json.loads(creates[-1].content)
    assert set(copied) == {
        "name",
        "subject",
        "description",
        "claims",
        "scopes",
        "created_by",
        "seconds_until_expiration",
    }
    assert set(spy.operations) == {
        "createApiKey",
        "verifyApiKey",
        "getApiKeys",
        "getApiKey",
        "updateApiKey",
        "revokeApiKey",
        "deleteApiKey",
    }


def test_a_refused_verification_of_a_known_key_conforms(
    spied: tuple[ClerkKeyManager, SpecSpy], user_id: str
) -> None:
    manager, spy = spied
    new = manager.create_api_key(user_id, "explained", expiration=timedelta(hours=1))
    manager.validate_api_key(new.secret)
    manager.revoke_api_key(new.id)
    with pytest.raises(Exception, match="revoked"):
        manager.validate_api_key(new.secret)
    assert spy.operations[-2:] == ["verifyApiKey", "getApiKey"]


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=40)
scopes = st.lists(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}(:[a-z0-9_.-]{1,8}){0,2}", fullmatch=True))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=names,
    scopes=scopes,
    metadata=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    lifetime=st.none() | st.floats(min_value=0.5, max_value=3e9),
    limits=st.sampled_from([(None, None), ("100/1m", None), (None, "500"), ("10/1s", "9/30d")]),
)
@hypothesis_example(name="k", scopes=[], metadata=None, lifetime=0.7, limits=(None, None))
@hypothesis_example(name="k", scopes=[], metadata=None, lifetime=1.0, limits=(None, None))
def test_every_create_the_backend_can_send_conforms(
    name: str,
    scopes: list[str],
    metadata: dict[str, Any] | None,
    lifetime: float | None,
    limits: tuple[str | None, str | None],
    shared_redis: RedisServer,
) -> None:
    # A still clock: the rotation's "is the grace period sooner" cannot depend on how
    # long the machine took between the creation and the rotation.
    now = datetime(2030, 1, 1, tzinfo=UTC)
    fake = FakeClerk(clock=lambda: now)
    spy = SpecSpy(load_spec(), fake)
    with ClerkKeyManager(
        fake.secret_key,
        api_url=fake.api_url,
        http_client=httpx.Client(transport=httpx.MockTransport(spy)),
        clock=lambda: now,
        redis_url=shared_redis.url,  # where Clerk counts quotas
        verification_budget=None,  # which all fakes, one Clerk instance, would share there
    ) as manager:
        expiration = None if lifetime is None else timedelta(seconds=lifetime)
        try:
            new = manager.create_api_key(
                fake.new_user_id(),
                name,
                scopes,
                expiration,
                metadata=metadata,
                rate_limit=limits[0],
                quota=limits[1],
            )
        except InvalidInputError:
            assert spy.operations == []  # refused here: nothing was sent
            return
        if new.expires_at is not None and new.expires_at <= now:
            # Under a second: Clerk's expiry reads back rounded down to the whole second,
            # so the key is already over (never reported to live longer than it does).
            with pytest.raises(InvalidInputError, match="expired"):
                manager.rotate_api_key(new.id, grace=1)
            return
        manager.rotate_api_key(new.id, grace=1)
    # A key that expires within the grace period is left to expire: no update then.
    assert spy.operations[:6] == [
        "getApiKeys",  # the owner's active keys, counted against the limit
        "createApiKey",
        "getApiKey",
        "getApiKeys",  # with a grace period both keys are active: counted again
        "createApiKey",
        "getApiKeys",  # the keys the old one created, handed over
    ]
    # (Expiries are reported to the second, so "sooner" is decided a second early.)
    assert spy.operations[6:] in ([], ["updateApiKey"])
    if lifetime is None or lifetime > 2:
        assert spy.operations[6:] == ["updateApiKey"]


# --- the spec's example answers --------------------------------------------------------


def example_of(schema: dict[str, Any]) -> Any:
    """Assemble the example document a schema describes from its property examples."""
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example_of(schema["items"])]
    if kind == "boolean":
        return False
    if kind == "number":
        return 0
    if kind == "string":
        return "text"
    return None


def _examples(spec: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    for operation in _operations(spec):
        for status, response in operation.spec["responses"].items():
            schema = response["content"]["application/json"]["schema"]
            yield operation.spec["operationId"], status, example_of(schema)


def test_the_spec_has_the_examples_we_rely_on(clerk_spec: dict[str, Any]) -> None:
    found = {(op, status) for op, status, _ in _examples(clerk_spec)}
    for operation in ("createApiKey", "getApiKey", "revokeApiKey", "verifyApiKey", "updateApiKey"):
        assert (operation, "200") in found and (operation, "400") in found
    assert ("getApiKeys", "200") in found and ("deleteApiKey", "200") in found


def test_every_example_answer_parses(clerk_spec: dict[str, Any]) -> None:
    checked = 0
    for operation, status, example in _examples(clerk_spec):
        if status != "200":
            fake_answer = httpx.Response(int(status), json=example)
            details = error_details(fake_answer)
            assert details.startswith(f"HTTP {status}: ")
            assert example["errors"][0]["code"] in details
        elif operation == "getApiKeys":
            for item in example["data"]:
                listed = to_api_key(parse_key_object(item, "list"))
                assert listed.id == "ak_3beecc9c60adb5f9b850e91a8ee1e992"
        elif operation == "deleteApiKey":
            assert example == {"id": example["id"], "object": "api_key", "deleted": True}
        else:
            key = parse_key_object(example, operation)
            mapped = to_api_key(key)
            assert (mapped.id, mapped.user_id, mapped.name) == (
                "ak_3beecc9c60adb5f9b850e91a8ee1e992",
                "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk",
                "MY_SERVICE_API_KEY",
            )
            assert mapped.scopes == ("read", "write") and mapped.metadata == {"foo": "bar"}
            # The spec's example times are 1716883200 "milliseconds": 1970-01-20.
            assert mapped.created_at == datetime(1970, 1, 20, 20, 54, 43, 200000, UTC)
            assert to_verified(key).id == mapped.id
        checked += 1
    assert checked >= 15


def test_example_answers_drive_every_operation(clerk_spec: dict[str, Any]) -> None:
    """Serve the spec's examples as Clerk's answers and run each manager method on them."""
    answers = {op: ex for op, status, ex in _examples(clerk_spec) if status == "200"}

    def serve(request: httpx.Request) -> httpx.Response:
        operation = _operation_for(clerk_spec, request).spec["operationId"]
        return httpx.Response(201 if operation == "createApiKey" else 200, json=answers[operation])

    manager = ClerkKeyManager(
        "sk_test_examples",
        http_client=httpx.Client(transport=httpx.MockTransport(serve)),
        cache_ttl=0,
    )
    key_id = "ak_3beecc9c60adb5f9b850e91a8ee1e992"
    subject = "user_2xhFjEI5X2qWRvtV13BzSj8H6Dk"
    created = manager.create_api_key(subject, "MY_SERVICE_API_KEY", ["read", "write"])
    assert created.secret == "ak_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" and created.id == key_id
    assert manager.get_api_key(key_id).name == "MY_SERVICE_API_KEY"
    page = manager.list_api_keys(subject)
    assert page.total == 0 and [k.id for k in page.items] == [key_id]
    assert manager.update_api_key_limits(key_id, rate_limit="10/1s").id == key_id
    assert manager.revoke_api_key(key_id).id == key_id
    manager.delete_api_key(key_id)
    with pytest.raises(ExpiredKeyError):  # its example expiry is in 1970
        manager.validate_api_key("ak_" + "A" * 44)
    manager.http_client.close()


def test_the_vendored_spec_is_the_unmodified_upstream_file() -> None:
    """The spec lives in the repository, byte for byte as Clerk published it.

    The tests read nothing outside the repository, so a clone with nothing
    beside it runs them; the digest keeps a local edit from passing as Clerk's.
    """
    assert SPEC_PATH.resolve().is_relative_to(REPO_ROOT)
    assert hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest() == SPEC_SHA256
    assert (SPEC_PATH.parent / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")

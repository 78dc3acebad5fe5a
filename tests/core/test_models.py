"""The frozen models, and the secret of NewAPIKey kept out of every default rendering."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from apikeys import APIKey, APIKeyPage, NewAPIKey, VerifiedKey, generate_key

T = TypeVar("T")


def pickled_copy(value: T) -> T:
    """Round-trip ``value`` through pickle (our own bytes, so loading them is safe)."""
    copy: T = pickle.loads(pickle.dumps(value))  # noqa: S301
    return copy


NOW = datetime.now(UTC)


def api_key_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": "AbCdEf123456",
        "user_id": "user_1",
        "name": "CI",
        "scopes": ("read:data",),
        "created_at": NOW,
        "metadata": {"team": "infra"},
        "hint": "apk_1AbC…wxyz",
    }
    return {**fields, **overrides}


def new_key() -> NewAPIKey:
    return NewAPIKey(secret=generate_key().key, **api_key_fields())


# --- frozen ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (APIKey(**api_key_fields()), "name", "other"),
        (new_key(), "secret", "other"),
        (VerifiedKey(id="k", user_id="u", name="n"), "scopes", ("admin",)),
        (APIKeyPage(items=(), total=0, limit=10, offset=0), "total", 5),
    ],
    ids=["APIKey", "NewAPIKey", "VerifiedKey", "APIKeyPage"],
)
def test_models_are_frozen(model: Any, field: str, value: object) -> None:
    before = getattr(model, field)
    with pytest.raises(ValidationError, match="frozen"):
        setattr(model, field, value)
    assert getattr(model, field) == before


@pytest.mark.parametrize("cls", [APIKey, NewAPIKey, VerifiedKey, APIKeyPage])
def test_unknown_fields_are_refused(cls: type[Any]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        cls(unexpected=1)


def test_api_key_has_no_secret_field() -> None:
    assert "secret" not in APIKey.model_fields
    with pytest.raises(ValidationError):
        APIKey(**api_key_fields(), secret=generate_key().key)  # type: ignore[call-arg]


def test_defaults_and_coercion() -> None:
    key = APIKey(id="k", user_id="u", name="n", created_at="2030-01-01T00:00:00Z", scopes=["a"])  # type: ignore[arg-type]
    assert key.created_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert key.scopes == ("a",)
    assert (key.expires_at, key.last_used_at, key.revoked_at, key.revocation_reason) == (None,) * 4
    assert key.metadata == {}
    assert key.hint == ""
    # Each model gets its own metadata dict.
    assert APIKey(**api_key_fields(metadata={})).metadata is not key.metadata


# --- the secret of a new key ------------------------------------------------------------------------


def test_the_secret_is_readable_from_the_attribute() -> None:
    secret = generate_key().key
    assert NewAPIKey(secret=secret, **api_key_fields()).secret == secret


def test_a_new_key_requires_its_secret() -> None:
    with pytest.raises(ValidationError, match="secret"):
        NewAPIKey(**api_key_fields())


def test_the_secret_is_left_out_of_repr_str_and_dumps() -> None:
    new = new_key()
    renderings = {
        "repr": repr(new),
        "str": str(new),
        "format": f"{new}",
        "model_dump": str(new.model_dump()),
        "model_dump_json_mode": str(new.model_dump(mode="json")),
        "model_dump_json": new.model_dump_json(),
        "model_dump_json_include": new.model_dump_json(include={"id", "secret"}),
        "model_dump_by_alias": str(new.model_dump(by_alias=True, exclude_none=True)),
        "api_key": repr(new.api_key) + new.api_key.model_dump_json(),
    }
    for name, text in renderings.items():
        assert new.secret not in text, name
        assert new.secret[5:-6] not in text, name
    assert "secret" not in new.model_dump()
    assert "secret" not in json.loads(new.model_dump_json())
    assert new.id in renderings["repr"]


def test_the_secret_stays_out_of_the_json_schema_serialisation_too() -> None:
    schema = NewAPIKey.model_json_schema(mode="serialization")
    assert "secret" not in schema["properties"]


def test_api_key_property_is_the_stored_key_without_its_secret() -> None:
    new = new_key()
    stored = new.api_key
    assert type(stored) is APIKey
    assert stored == APIKey(**api_key_fields())
    assert not hasattr(stored, "secret")
    assert stored.model_dump() == new.model_dump()


def test_a_new_key_is_an_api_key() -> None:
    assert isinstance(new_key(), APIKey)


def test_a_new_key_pickles_with_its_secret() -> None:
    # Pickling is explicit and process-internal; the secret must survive it.
    new = new_key()
    assert pickled_copy(new).secret == new.secret


# --- state properties ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "revoked", "expired", "active"),
    [
        ({}, False, False, True),
        ({"expires_at": NOW + timedelta(days=1)}, False, False, True),
        ({"expires_at": NOW - timedelta(seconds=1)}, False, True, False),
        ({"revoked_at": NOW, "revocation_reason": "leaked"}, True, False, False),
        ({"revoked_at": NOW, "expires_at": NOW - timedelta(days=1)}, True, True, False),
        ({"expires_at": datetime(2000, 1, 1)}, False, True, False),  # naive means UTC
    ],
)
def test_revoked_expired_active(
    overrides: dict[str, Any], revoked: bool, expired: bool, active: bool
) -> None:
    key = APIKey(**api_key_fields(**overrides))
    assert (key.revoked, key.expired, key.active) == (revoked, expired, active)


@pytest.mark.parametrize(
    ("total", "offset", "count", "has_more"),
    [
        (0, 0, 0, False),
        (3, 0, 3, False),
        (4, 0, 3, True),
        (10, 5, 5, False),
        (10, 4, 5, True),
        (10, 20, 0, False),
    ],
)
def test_page_has_more(total: int, offset: int, count: int, has_more: bool) -> None:
    items = tuple(APIKey(**api_key_fields(id=f"k{i}")) for i in range(count))
    page = APIKeyPage(items=items, total=total, limit=max(count, 1), offset=offset)
    assert page.has_more is has_more


@pytest.mark.parametrize(
    ("scopes", "required", "expected"),
    [
        ((), (), True),
        (("read:data",), (), True),
        (("read:data",), ("read:data",), True),
        (("read:data",), ("read:data", "write:data"), False),
        (("data:*",), ("data:read", "data:write:all"), True),
        (("data:*",), ("data",), False),
        (("data:*",), ("database:read",), False),
        ((), ("read:data",), False),
    ],
)
def test_verified_key_has_scopes(
    scopes: tuple[str, ...], required: tuple[str, ...], expected: bool
) -> None:
    verified = VerifiedKey(id="k", user_id="u", name="n", scopes=scopes)
    assert verified.has_scopes(*required) is expected


def test_verified_key_holds_no_secret() -> None:
    assert set(VerifiedKey.model_fields) == {
        "id",
        "user_id",
        "name",
        "scopes",
        "expires_at",
        "metadata",
        "rate_limit",
        "quota",
        "quota_anchor",
        "meter_id",
        "usage",
    }


# --- the deprecated key_id of VerifiedKey ------------------------------------------------------


def test_the_deprecated_key_id_attribute_reads_the_id() -> None:
    verified = VerifiedKey(id="k", user_id="u", name="n")
    with pytest.warns(DeprecationWarning, match=r"VerifiedKey\.id"):
        assert verified.key_id == "k"


def test_the_deprecated_key_id_argument_builds_the_same_key() -> None:
    with pytest.warns(DeprecationWarning, match=r"VerifiedKey\(id=\.\.\.\)"):
        verified = VerifiedKey(key_id="k", user_id="u", name="n")  # type: ignore[call-arg]
    assert verified == VerifiedKey(id="k", user_id="u", name="n")
    with pytest.warns(DeprecationWarning, match="key_id"):
        validated = VerifiedKey.model_validate({"key_id": "k", "user_id": "u", "name": "n"})
    assert validated == verified


def test_the_deprecated_key_id_is_left_out_of_dumps() -> None:
    verified = VerifiedKey(id="k", user_id="u", name="n")
    assert verified.model_dump() == {
        "id": "k",
        "user_id": "u",
        "name": "n",
        "scopes": (),
        "expires_at": None,
        "metadata": {},
        "rate_limit": None,
        "quota": None,
        "quota_anchor": None,
        "meter_id": "k",
    }
    assert "key_id" not in json.loads(verified.model_dump_json())
    assert "key_id" not in VerifiedKey.model_json_schema()["properties"]


def test_id_and_the_deprecated_key_id_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="key_id"):
        VerifiedKey(id="k", key_id="j", user_id="u", name="n")  # type: ignore[call-arg]


# --- metadata is read-only all the way down --------------------------------------------------------

NESTED = {"plan": "free", "limits": {"rpm": 60, "tags": ["a", {"b": 1}]}}


def every_model(metadata: dict[str, Any]) -> list[APIKey | VerifiedKey]:
    return [
        APIKey(**api_key_fields(metadata=metadata)),
        NewAPIKey(secret=generate_key().key, **api_key_fields(metadata=metadata)),
        VerifiedKey(id="k", user_id="u", name="n", metadata=metadata),
    ]


MUTATIONS: dict[str, Any] = {
    "set": lambda m: m.__setitem__("plan", "enterprise"),
    "delete": lambda m: m.__delitem__("plan"),
    "update": lambda m: m.update(plan="enterprise"),
    "setdefault": lambda m: m.setdefault("new", 1),
    "pop": lambda m: m.pop("plan"),
    "popitem": lambda m: m.popitem(),
    "clear": lambda m: m.clear(),
    "ior": lambda m: m.__ior__({"plan": "x"}),
    "nested dict": lambda m: m["limits"].__setitem__("rpm", 10**6),
    "nested list append": lambda m: m["limits"]["tags"].append("admin"),
    "nested list set": lambda m: m["limits"]["tags"].__setitem__(0, "admin"),
    "nested list extend": lambda m: m["limits"]["tags"].extend(["x"]),
    "nested list iadd": lambda m: m["limits"]["tags"].__iadd__(["x"]),
    "nested list sort": lambda m: m["limits"]["tags"].reverse(),
    "dict in list": lambda m: m["limits"]["tags"][1].__setitem__("b", 2),
}


@pytest.mark.parametrize("mutation", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_metadata_refuses_every_change(mutation: Any) -> None:
    for model in every_model(NESTED):
        with pytest.raises(TypeError, match="read-only"):
            mutation(model.metadata)
        assert model.metadata == NESTED


def test_read_only_metadata_still_behaves_like_json_data() -> None:
    source = json.loads(json.dumps(NESTED))
    for model in every_model(source):
        metadata = model.metadata
        assert metadata == NESTED
        assert isinstance(metadata, dict)
        assert isinstance(metadata["limits"]["tags"], list)
        assert json.loads(json.dumps(metadata)) == NESTED
        assert json.loads(model.model_dump_json())["metadata"] == NESTED
        dumped = model.model_dump()["metadata"]
        dumped["limits"]["tags"].append("mutable copy")  # model_dump() gives plain types
        assert model.metadata == NESTED
        assert pickled_copy(model) == model
        assert copy.deepcopy(model) == model
        assert model.model_copy(deep=True) == model
    source["limits"]["rpm"] = 0  # the models took a copy
    assert every_model(NESTED)[0].metadata["limits"]["rpm"] == 60


def test_deeply_nested_metadata_is_frozen_without_recursion() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    frozen = VerifiedKey(id="k", user_id="u", name="n", metadata={"deep": deep}).metadata
    with pytest.raises(TypeError):
        frozen["deep"].append(1)


def test_a_cached_validation_cannot_be_changed_by_one_request() -> None:
    pytest.importorskip("sqlalchemy")
    from apikeys import create_key_manager

    manager = create_key_manager("sqlite://", cache_ttl=60)
    try:
        new = manager.create_api_key("u", "n", metadata={"plan": "free"})
        first = manager.validate_api_key(new.secret)
        with pytest.raises(TypeError):
            first.metadata["plan"] = "enterprise"
        assert manager.validate_api_key(new.secret).metadata == {"plan": "free"}
    finally:
        manager.close()

"""``/api-keys`` with arbitrary JSON bodies and query strings, in every framework.

Each example is one request by a key of ``OWNER``; the whole table is read
before and after it. Whatever was sent: no 5xx; a refused request changes
nothing; no row of another owner is ever created, changed or listed; a new
key belongs to the caller's owner and holds only scopes the caller holds.
"""

from __future__ import annotations

import json
import string
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import apikeys
from tests.integrations.conftest import OTHER_OWNER, OWNER, Seeded
from tests.integrations.contract import bearer
from tests.security.conftest import OpenClient, snapshot

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
SCOPES = st.sampled_from(
    [
        "read:data",
        "write:data",
        "keys:read",
        "keys:*",
        "admin:write",
        "*",
        "read:*",
        "",
        "READ:DATA",
    ]
)
DATES = st.sampled_from(["2099-12-31", "2001-01-01", "P30D", "soon", "2099-12-31T23:59:59+14:00"])


def covered(scope: str, held: tuple[str, ...]) -> bool:
    """Whether ``held`` grants ``scope``: written out here, not taken from the library."""
    return any(scope == h or (h.endswith(":*") and scope.startswith(h[:-1])) for h in held)


def test_management_endpoints_hold_under_arbitrary_requests(
    open_client: OpenClient, seeded: Seeded
) -> None:
    targets = [seeded.reader.id, seeded.other.id, seeded.revoked.id, seeded.expired.id]
    callers = {
        "admin": (seeded.admin.secret, ("read:data", "keys:*")),
        "reader": (seeded.reader.secret, ("read:data",)),
    }
    create_bodies = st.fixed_dictionaries(
        {"name": st.sampled_from(["ci", "deploy key", ""]) | st.text(max_size=30) | JSON_VALUES},
        optional={
            "scopes": st.lists(SCOPES | st.text(max_size=10), max_size=4) | JSON_VALUES,
            "expiration": DATES | JSON_VALUES,
            "userId": st.sampled_from([OWNER, OTHER_OWNER, "", OWNER.upper()]) | JSON_VALUES,
            "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5)) | JSON_VALUES,
        },
    )
    delete_bodies = st.fixed_dictionaries(
        {},
        optional={
            "id": st.sampled_from(targets) | JSON_VALUES,
            "reason": st.text(max_size=30) | JSON_VALUES,
        },
    )
    # Well-formed bodies, so that requests get past the parser and reach the
    # ownership and escalation rules (another owner, scopes the caller lacks).
    well_formed_creates = st.fixed_dictionaries(
        {"name": st.sampled_from(["ci", "deploy key"])},
        optional={
            "scopes": st.lists(SCOPES.filter(bool), max_size=3, unique=True),
            "userId": st.sampled_from([OWNER, OTHER_OWNER]),
            "expiration": st.sampled_from(["2099-12-31", "P30D"]),
        },
    )
    plausible = well_formed_creates | create_bodies | delete_bodies
    bodies = st.one_of(
        st.none(),
        plausible.map(lambda body: json.dumps(body).encode()),
        JSON_VALUES.map(lambda body: json.dumps(body).encode()),
        st.binary(max_size=64),
    )
    queries = st.dictionaries(
        st.sampled_from(["limit", "offset", "includeInvalid", "id", "reason", "userId", "x"]),
        st.sampled_from([*targets, "1", "0", "-1", "true", "100", "101", OTHER_OWNER])
        | st.text(max_size=12),
        max_size=3,
    )
    path_ids = st.sampled_from(targets) | st.text(
        string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=20
    ).filter(lambda segment: segment not in (".", ".."))
    # "." and ".." are dot segments: the HTTP client resolves them (as any client
    # must, RFC 3986), so such a request never reaches /api-keys/{id} but "/" or
    # "/api-keys/", which are not management endpoints.

    seen: set[tuple[str, int]] = set()
    with open_client(seeded.url) as client:

        @settings(
            max_examples=200,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=True,  # the same requests on every run: CI stays reproducible
        )
        @given(
            caller=st.sampled_from(sorted(callers)),
            method=st.sampled_from(["GET", "POST", "DELETE", "DELETE-ID"]),
            path_id=path_ids,
            body=bodies,
            query=queries,
        )
        def check(
            caller: str, method: str, path_id: str, body: bytes | None, query: dict[str, str]
        ) -> None:
            secret, held = callers[caller]
            path = "/api-keys"
            if method == "DELETE-ID":
                method, path = "DELETE", f"/api-keys/{quote(path_id, safe='')}"
            before = snapshot(seeded.url)
            reply = client.request(
                method,
                path,
                headers={**bearer(secret), "Content-Type": "application/json"},
                params=query,
                content=body,
            )
            after = snapshot(seeded.url)
            assert reply.status < 500, reply.text
            event(f"{method} {reply.status}")
            seen.add((method, reply.status))
            answer: Any = reply.json if reply.text else None
            assert set(before) <= set(after)  # revoke mode: nothing is ever removed
            for key_id, row in before.items():
                if row[0] != OWNER:
                    assert after[key_id] == row  # another owner's key is never touched
            created = set(after) - set(before)
            changed = {key_id for key_id in before if after[key_id] != before[key_id]}
            if reply.status >= 400:
                assert not created and not changed, (reply.status, reply.text)
                assert set(answer) >= {"code", "message"}
                return
            if method == "POST":
                assert reply.status == 201
                assert len(created) == 1 and not changed
                (new_id,) = created
                owner, _, scopes, _, _ = after[new_id]
                assert owner == OWNER
                assert all(covered(scope, held) for scope in scopes), (scopes, held)
                assert answer["id"] == new_id and answer["secret"].startswith("apk_")
                # A foreign userId is refused (403 forbidden_user), not silently replaced.
                assert json.loads(body or b"{}").get("userId", OWNER) == OWNER
            elif method == "DELETE":
                assert not created and len(changed) <= 1
                assert all(after[key_id][0] == OWNER for key_id in changed)
            else:
                assert reply.status == 200 and not created and not changed
                assert all(item["userId"] == OWNER for item in answer["items"])
                assert "secret" not in reply.text
            assert seeded.other.secret not in reply.text

        check()

    # The run reached every kind of answer, not only the parser's refusals.
    statuses = {status for _, status in seen}
    assert {("POST", 201), ("GET", 200)} <= seen, sorted(seen)
    assert {403, 422} <= statuses, sorted(seen)
    # The other owner's key still works after everything the fuzzing threw at it.
    manager = apikeys.create_key_manager(seeded.url)
    try:
        assert manager.validate_api_key(seeded.other.secret).user_id == OTHER_OWNER
    finally:
        manager.close()

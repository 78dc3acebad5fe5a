"""The Flask integration: the shared contract, plus what only Flask has."""

from __future__ import annotations

import importlib
import sys

import pytest
from flask import Flask, g

import apikeys
from apikeys import ConfigurationError, MissingDependencyError
from apikeys.integrations.flask import (
    APIKeyMiddleware,
    APIKeys,
    IntegrationSettings,
    require_api_key,
)
from tests.integrations.apps import flask_app, flask_client
from tests.integrations.conftest import OWNER, Seeded
from tests.integrations.contract import (
    AppOptions,
    ClientFactory,
    IntegrationContract,
    assert_a_refused_costly_call_charges_nothing,
)

pytestmark = pytest.mark.flask


class TestFlaskContract(IntegrationContract):
    @pytest.fixture
    def make_client(self) -> ClientFactory:
        return lambda url, options: flask_client(flask_app(url, options))


# --- what only Flask has ---------------------------------------------------------------------


def _protected_app(app: Flask) -> Flask:
    @app.get("/protected")
    @require_api_key
    def protected() -> dict[str, str]:
        return {"user": g.api_key.user_id}

    return app


def test_behind_the_middleware_a_costly_call_its_limits_refuse_charges_nothing(
    seeded: Seeded,
) -> None:
    app = flask_app(seeded.url, AppOptions(middleware=True))
    assert_a_refused_costly_call_charges_nothing(lambda: flask_client(app), seeded, "/costly")


def test_settings_come_from_app_config(seeded: Seeded) -> None:
    app = Flask(__name__)
    app.config.update(
        APIKEYS_BACKEND=seeded.url,
        APIKEYS_INVALID_KEY_STATUS=401,
        APIKEYS_HEADER_NAMES=["X-Token"],
        APIKEYS_CACHE_TTL=0,
    )
    APIKeys(app)
    with flask_client(_protected_app(app)) as client:
        refused = client.request("GET", "/protected", headers={"X-Token": "apk_1nope"})
        ok = client.request("GET", "/protected", headers={"X-Token": seeded.admin.secret})
    assert refused.status == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert ok.json == {"user": OWNER}


def test_application_factory_with_init_app(seeded: Seeded) -> None:
    manager = apikeys.create_key_manager(seeded.url)
    extension = APIKeys(manager=manager)
    try:
        apps = []
        for realm in ("one", "two"):
            app = Flask(__name__)
            app.config["APIKEYS_REALM"] = realm
            extension.init_app(app)
            apps.append(_protected_app(app))
        for app, realm in zip(apps, ("one", "two"), strict=True):
            reply = app.test_client().get("/protected")
            assert reply.headers["WWW-Authenticate"] == f'Bearer realm="{realm}"'
            good = app.test_client().get("/protected", headers={"X-API-Key": seeded.admin.secret})
            assert good.json == {"user": OWNER}
    finally:
        manager.close()


def test_explicit_settings_win_over_app_config(seeded: Seeded) -> None:
    manager = apikeys.create_key_manager(seeded.url)
    try:
        app = Flask(__name__)
        app.config["APIKEYS_REALM"] = "from-config"
        APIKeys(app, manager=manager, settings=IntegrationSettings(realm="explicit"))
        reply = _protected_app(app).test_client().get("/protected")
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="explicit"'
    finally:
        manager.close()


@pytest.mark.parametrize(
    "config",
    [{"APIKEYS_INVALID_KEY_STATUS": 400}, {"APIKEYS_NO_SUCH_OPTION": 1},
     {"APIKEYS_BACKEND": "nosuchscheme://x"}],
)  # fmt: skip
def test_bad_config_fails_at_init(config: dict[str, object]) -> None:
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigurationError):
        APIKeys(app)


def test_async_manager_is_refused(seeded: Seeded) -> None:
    manager = apikeys.create_async_key_manager(seeded.url)
    with pytest.raises(ConfigurationError, match="sync manager"):
        APIKeys(Flask(__name__), manager=manager)  # type: ignore[arg-type]  # the wrong kind on purpose


def test_without_the_extension_the_app_fails_closed() -> None:
    app = _protected_app(Flask(__name__))
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(ConfigurationError, match=r"APIKeys\(app\)"):
        app.test_client().get("/protected", headers={"X-API-Key": "apk_1x"})


def test_default_manager_comes_from_configuration(seeded: Seeded) -> None:
    apikeys.configure(url=seeded.url)
    try:
        app = Flask(__name__)
        APIKeys(app)
        reply = (
            _protected_app(app)
            .test_client()
            .get("/protected", headers={"Authorization": f"Bearer {seeded.admin.secret}"})
        )
        assert reply.json == {"user": OWNER}
    finally:
        apikeys.configure()


def test_views_keep_their_names_and_arguments(seeded: Seeded) -> None:
    manager = apikeys.create_key_manager(seeded.url)
    try:
        app = Flask(__name__)
        APIKeys(app, manager=manager)

        @app.get("/items/<int:item_id>")
        @require_api_key(scopes=["read:data"])
        def show_item(item_id: int) -> dict[str, object]:
            return {"item": item_id, "user": g.api_key.user_id}

        assert show_item.__name__ == "show_item"
        reply = app.test_client().get("/items/7", headers={"X-API-Key": seeded.reader.secret})
        assert reply.json == {"item": 7, "user": OWNER}
    finally:
        manager.close()


def test_bad_route_scopes_fail_when_declared() -> None:
    with pytest.raises(ConfigurationError):
        require_api_key(scopes=["bad scope!"])
    with pytest.raises(ConfigurationError):
        APIKeyMiddleware(Flask(__name__), exempt_paths=["relative"])


def test_import_guard_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)
    monkeypatch.delitem(sys.modules, "apikeys.integrations.flask", raising=False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'apikeys\[flask\]'"):
        importlib.import_module("apikeys.integrations.flask")


def test_forged_keys_for_a_known_id_never_lock_its_holder_out(seeded: Seeded) -> None:
    app = Flask(__name__)
    app.config.update(APIKEYS_BACKEND=seeded.url, APIKEYS_CACHE_TTL=0)
    APIKeys(app)
    forged = [apikeys.generate_key(id=seeded.admin.id).key for _ in range(150)]
    with flask_client(_protected_app(app)) as client:
        statuses = {
            client.request("GET", "/protected", headers={"X-API-Key": key}).status for key in forged
        }
        holder = client.request("GET", "/protected", headers={"X-API-Key": seeded.admin.secret})
    assert statuses == {403}
    assert holder.status == 200


def test_the_removed_per_key_id_limit_is_refused_from_app_config(seeded: Seeded) -> None:
    app = Flask(__name__)
    app.config.update(APIKEYS_BACKEND=seeded.url, APIKEYS_MAX_FAILURES_PER_KEY=2)
    with pytest.raises(ConfigurationError, match=r"was removed: .*lock its holder out"):
        APIKeys(app)


def test_middleware_takes_exempt_paths_from_app_config(seeded: Seeded) -> None:
    app = Flask(__name__)
    app.config.update(APIKEYS_BACKEND=seeded.url, APIKEYS_EXEMPT_PATHS="/health")
    APIKeys(app)
    APIKeyMiddleware(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    with flask_client(_protected_app(app)) as client:
        assert client.request("GET", "/health").status == 200
        assert client.request("GET", "/protected").status == 401


def test_one_extension_serves_each_app_with_its_own_state(seeded: Seeded) -> None:
    """The context is resolved once per request: each request still reads its own app's
    settings and limiters, and publishes on its own ``g``, whichever app answered before."""
    keys = APIKeys()
    apps = []
    for realm, limit in (("first", 1), ("second", 3)):
        app = Flask(realm)
        app.config.update(
            APIKEYS_BACKEND=seeded.url, APIKEYS_REALM=realm, APIKEYS_CLIENT_MAX_FAILURES=limit
        )
        keys.init_app(app)
        apps.append(_protected_app(app))
    with flask_client(apps[0]) as first, flask_client(apps[1]) as second:
        challenges = [
            client.request("GET", "/protected").headers["www-authenticate"]
            for client in (first, second, first)
        ]
        wrong = {"X-API-Key": "apk_1wrong"}
        first_statuses = [
            first.request("GET", "/protected", headers=wrong).status for _ in range(2)
        ]
        second_statuses = [
            second.request("GET", "/protected", headers=wrong).status for _ in range(2)
        ]
        users = [
            client.request("GET", "/protected", headers={"X-API-Key": secret}).json
            for client, secret in ((second, seeded.admin.secret), (first, seeded.other.secret))
        ]
    assert challenges == ['Bearer realm="first"', 'Bearer realm="second"', 'Bearer realm="first"']
    assert first_statuses == [403, 429] and second_statuses == [403, 403]
    assert users[0] == {"user": OWNER} and users[1] != users[0]

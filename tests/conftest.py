"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import tomllib
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from tests import postgres_server, redis_server

# Selected by `make mutate` (--hypothesis-profile=mutation), which runs the same tests once per
# mutant: every run must draw the same examples, and none may replay one saved by another run.
# A mutant is killed by any failing example: no time goes to shrinking it, and none to a
# deadline, which a loaded machine would miss for reasons no mutant caused.
settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mutation-scope",
        action="store_true",
        help="in a mutmut run, test a mutant only with its module's tests "
        "([tool.apikeys.mutation.tests] in pyproject.toml)",
    )


def _testing_a_mutant(config: pytest.Config) -> str | None:
    """The mutant under test in a mutation run, if any.

    mutmut names it in the environment; its own runs (the stats, the clean and the
    forced-fail runs) name none and run every test they ask for.
    """
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if config.getoption("--mutation-scope") and "__mutmut_" in mutant:
        return mutant
    return None


# A mutant that makes a test hang (an endless loop) fails the test after this long, instead
# of holding a worker until mutmut's own timeout, which it counts from every test calling the
# code mutated, in every file.
MUTANT_TEST_SECONDS = 180


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if _testing_a_mutant(item.config) is None:
        return (yield)

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"the test ran over {MUTANT_TEST_SECONDS} s with the mutant")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(MUTANT_TEST_SECONDS)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mutant = _testing_a_mutant(config)
    if mutant is None:
        return
    pyproject = tomllib.loads((config.rootpath / "pyproject.toml").read_text())
    tests_by_module: dict[str, list[str]] = pyproject["tool"]["apikeys"]["mutation"]["tests"]
    # The module's test files in the order listed; in each, tests needing a server last:
    # the first failure ends the run, and it comes soonest from the quick tests.
    rank = {
        test: index
        for path, tests in tests_by_module.items()
        if mutant.startswith(path.removesuffix(".py").replace("/", ".") + ".")
        for index, test in enumerate(tests)
    }
    kept = [item for item in items if item.nodeid.split("::", 1)[0] in rank]
    config.hook.pytest_deselected(
        items=[item for item in items if item.nodeid.split("::", 1)[0] not in rank]
    )
    kept.sort(
        key=lambda item: (
            item.get_closest_marker("e2e") is not None,
            rank[item.nodeid.split("::", 1)[0]],
        )
    )
    items[:] = kept


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("APIKEYS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required (APIKEYS_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(
        f"PostgreSQL tests skipped: {reason}; set APIKEYS_TEST_POSTGRES_URL or install postgresql"
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL of a real PostgreSQL server: ``APIKEYS_TEST_POSTGRES_URL``,
    or a throwaway server started on 127.0.0.1 for this session."""
    configured = os.environ.get("APIKEYS_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    if postgres_server.find_binary("initdb") is None:
        _postgres_unavailable("no PostgreSQL server binaries were found")
    base = Path(tempfile.mkdtemp(prefix="apikeys-pg-"))
    base.chmod(0o755)  # the server may run as the postgres user
    data_dir = base / "pg"
    try:
        url = postgres_server.start(data_dir, postgres_server.free_port())
    except Exception as exc:  # surfaced as the skip/fail reason
        shutil.rmtree(base, ignore_errors=True)
        _postgres_unavailable(f"the server did not start ({exc})")
    try:
        yield url
    finally:
        postgres_server.stop(data_dir)
        shutil.rmtree(base, ignore_errors=True)


def _redis_unavailable(reason: str) -> None:
    if os.environ.get("APIKEYS_REQUIRE_REDIS") == "1":
        pytest.fail(f"Redis is required (APIKEYS_REQUIRE_REDIS=1) but {reason}")
    pytest.skip(f"Redis tests skipped: {reason}; install redis-server")


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_server.RedisServer]:
    """A real Redis server shared by the tests of a session that never stop it (each
    uses keys of its own): the Clerk backend counts quotas there."""
    if redis_server.find_binary() is None:
        _redis_unavailable("redis-server was not found")
    server = redis_server.RedisServer(tmp_path_factory.mktemp("shared-redis"))
    try:
        server.start()
    except Exception as exc:  # surfaced as the skip/fail reason
        _redis_unavailable(f"the server did not start ({exc})")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[redis_server.RedisServer]:
    """A real Redis server on 127.0.0.1 for one test, which the test may kill and restart."""
    if redis_server.find_binary() is None:
        _redis_unavailable("redis-server was not found")
    server = redis_server.RedisServer(tmp_path / "redis")
    try:
        server.start()
    except Exception as exc:  # surfaced as the skip/fail reason
        _redis_unavailable(f"the server did not start ({exc})")
    try:
        yield server
    finally:
        server.kill()

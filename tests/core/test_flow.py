"""run_sync and run_async drive one generator flow the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any

import pytest

from apikeys._flow import run_async, run_sync


class Failed(Exception):
    """What the test 'IO' raises."""


def double_then_add() -> Generator[str, Any, int]:
    first = yield "a"
    second = yield "b"
    return int(first) * 2 + int(second)


def recovering() -> Generator[str, Any, str]:
    try:
        yield "explode"
    except Failed as exc:
        recovered = yield f"recover:{exc}"
        return f"recovered with {recovered}"
    return "did not fail"


def not_recovering() -> Generator[str, Any, str]:
    yield "explode"
    return "unreachable"


def no_io() -> Generator[str, Any, str]:
    return "done"
    yield "never"  # a generator that returns before its first request


class IO:
    """Performs requests, recording them; 'explode' fails."""

    def __init__(self) -> None:
        self.performed: list[str] = []

    def perform(self, request: str) -> str:
        self.performed.append(request)
        if request == "explode":
            raise Failed("boom")
        return {"a": "20", "b": "2"}.get(request, request.upper())

    async def aperform(self, request: str) -> str:
        await asyncio.sleep(0)  # really suspend, as IO does
        return self.perform(request)


Runner = Callable[[Generator[str, Any, Any], IO], Any]


def sync_runner(flow: Generator[str, Any, Any], io: IO) -> Any:
    return run_sync(flow, io.perform)


def async_runner(flow: Generator[str, Any, Any], io: IO) -> Any:
    return asyncio.run(run_async(flow, io.aperform))


@pytest.fixture(params=[sync_runner, async_runner], ids=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Runner:
    runner: Runner = request.param
    return runner


def test_results_are_sent_back_and_the_return_value_is_returned(run: Runner) -> None:
    io = IO()
    assert run(double_then_add(), io) == 42
    assert io.performed == ["a", "b"]


def test_a_flow_without_io_returns_at_once(run: Runner) -> None:
    io = IO()
    assert run(no_io(), io) == "done"
    assert io.performed == []


def test_an_io_error_is_thrown_into_the_flow_which_may_recover(run: Runner) -> None:
    io = IO()
    assert run(recovering(), io) == "recovered with RECOVER:BOOM"
    assert io.performed == ["explode", "recover:boom"]


def test_an_uncaught_io_error_propagates_unchanged(run: Runner) -> None:
    io = IO()
    flow = not_recovering()
    with pytest.raises(Failed, match="boom"):
        run(flow, io)
    assert io.performed == ["explode"]
    # The flow saw the error at its yield and finished with it.
    with pytest.raises(StopIteration):
        next(flow)


def test_an_error_raised_by_the_flow_itself_propagates(run: Runner) -> None:
    def refusing() -> Generator[str, Any, None]:
        yield "a"
        raise ValueError("refused after IO")

    io = IO()
    with pytest.raises(ValueError, match="refused after IO"):
        run(refusing(), io)
    assert io.performed == ["a"]


def test_a_flow_can_translate_an_io_error(run: Runner) -> None:
    def translating() -> Generator[str, Any, None]:
        try:
            yield "explode"
        except Failed as exc:
            raise LookupError("translated") from exc

    with pytest.raises(LookupError, match="translated") as caught:
        run(translating(), IO())
    assert isinstance(caught.value.__cause__, Failed)


def test_nested_flows_compose_with_yield_from(run: Runner) -> None:
    def outer() -> Generator[str, Any, int]:
        inner = yield from double_then_add()
        extra = yield "x"
        return inner + len(extra)

    io = IO()
    assert run(outer(), io) == 43
    assert io.performed == ["a", "b", "x"]


def test_many_requests(run: Runner) -> None:
    def counting() -> Generator[str, Any, int]:
        total = 0
        for n in range(1000):
            total += len((yield f"r{n}"))
        return total

    io = IO()
    assert run(counting(), io) == sum(len(f"R{n}") for n in range(1000))
    assert len(io.performed) == 1000


async def test_run_async_awaits_each_request_in_order() -> None:
    events: list[str] = []

    async def perform(request: str) -> str:
        events.append(f"start {request}")
        await asyncio.sleep(0)
        events.append(f"end {request}")
        return request

    def flow() -> Generator[str, Any, list[str]]:
        return [(yield "a"), (yield "b")]

    assert await run_async(flow(), perform) == ["a", "b"]
    assert events == ["start a", "end a", "start b", "end b"]


async def test_cancellation_reaches_the_flow_and_propagates() -> None:
    cleaned_up: list[bool] = []
    started = asyncio.Event()

    async def perform(request: str) -> str:
        started.set()
        await asyncio.sleep(3600)
        return request

    def flow() -> Generator[str, Any, str]:
        try:
            result: str = yield "slow"
            return result
        finally:
            cleaned_up.append(True)

    task = asyncio.create_task(run_async(flow(), perform))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up == [True]


def test_a_flow_may_return_straight_from_its_error_handler(run: Runner) -> None:
    def fallback() -> Generator[str, Any, str]:
        try:
            yield "explode"
        except Failed:
            return "fallback"
        return "unreachable"

    assert run(fallback(), IO()) == "fallback"

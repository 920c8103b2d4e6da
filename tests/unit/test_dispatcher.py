"""HubDispatcher: lookup, argument binding, ASP.NET error texts, non-blocking calls, metrics."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.hub.dispatcher import HubDispatcher, HubError, HubMethod
from gateway.metrics import GatewayMetrics
from gateway.signalr.messages import Completion, Invocation, StreamInvocation

CALLER = object()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def echo(self, caller: object, text: str | None) -> dict[str, Any]:
        self.calls.append((caller, text))
        return {"echo": text}

    async def add(self, caller: object, a: int, b: float) -> float:
        return a + b

    async def nothing(self, caller: object) -> None:
        return None

    async def refuse(self, caller: object) -> None:
        raise HubError("Not today.")

    async def crash(self, caller: object) -> None:
        raise RuntimeError("secret database password in message")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
def dispatcher(recorder: Recorder, metrics: GatewayMetrics) -> HubDispatcher[object]:
    return HubDispatcher(
        [
            HubMethod("Echo", recorder.echo, ((str, type(None)),)),
            HubMethod("Add", recorder.add, ((int,), (int, float))),
            HubMethod("Nothing", recorder.nothing),
            HubMethod("Refuse", recorder.refuse),
            HubMethod("Crash", recorder.crash),
        ],
        metrics=metrics,
    )


def count(metrics: GatewayMetrics, method: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value("realtime_hub_invocations_total", {"method": method, "outcome": outcome})


async def test_result_is_returned_in_a_completion(
    dispatcher: HubDispatcher[object], recorder: Recorder, metrics: GatewayMetrics
) -> None:
    completion = await dispatcher.invoke(CALLER, Invocation("Echo", ("hi",), "1"))
    assert completion == Completion.with_result("1", {"echo": "hi"})
    assert recorder.calls == [(CALLER, "hi")]
    assert count(metrics, "Echo", "ok") == 1.0


async def test_none_result_is_an_explicit_result(dispatcher: HubDispatcher[object]) -> None:
    assert await dispatcher.invoke(CALLER, Invocation("Nothing", (), "2")) == Completion.with_result("2", None)


@pytest.mark.parametrize("target", ["echo", "ECHO", "eChO"])
async def test_lookup_is_case_insensitive(
    dispatcher: HubDispatcher[object], metrics: GatewayMetrics, target: str
) -> None:
    assert await dispatcher.invoke(CALLER, Invocation(target, ("x",), "1")) == Completion.with_result(
        "1", {"echo": "x"}
    )
    assert count(metrics, "Echo", "ok") == 1.0


async def test_unknown_method(dispatcher: HubDispatcher[object], metrics: GatewayMetrics) -> None:
    completion = await dispatcher.invoke(CALLER, Invocation("DropTables", (), "7"))
    assert completion == Completion.with_error(
        "7", "Failed to invoke 'DropTables' due to an error on the server. HubException: Method does not exist."
    )
    assert count(metrics, "unknown", "unknown_method") == 1.0
    assert count(metrics, "DropTables", "unknown_method") is None


@pytest.mark.parametrize(
    ("target", "arguments"),
    [
        ("Echo", ()),
        ("Echo", ("a", "b")),
        ("Echo", (5,)),
        ("Echo", (True,)),
        ("Echo", ({"a": 1},)),
        ("Add", (1,)),
        ("Add", (True, 2)),
        ("Add", (1, False)),
        ("Add", (1.5, 2)),
        ("Add", (None, 2)),
        ("Nothing", (None,)),
    ],
)
async def test_wrong_argument_count_or_type(
    dispatcher: HubDispatcher[object],
    recorder: Recorder,
    metrics: GatewayMetrics,
    target: str,
    arguments: tuple[Any, ...],
) -> None:
    completion = await dispatcher.invoke(CALLER, Invocation(target, arguments, "3"))
    assert completion == Completion.with_error("3", f"Failed to invoke '{target}' due to an error on the server.")
    assert recorder.calls == []
    assert count(metrics, target, "bad_arguments") == 1.0


async def test_none_is_accepted_where_none_type_is_listed(dispatcher: HubDispatcher[object]) -> None:
    assert await dispatcher.invoke(CALLER, Invocation("Echo", (None,), "4")) == Completion.with_result(
        "4", {"echo": None}
    )


async def test_int_accepted_for_int_or_float(dispatcher: HubDispatcher[object]) -> None:
    assert await dispatcher.invoke(CALLER, Invocation("Add", (1, 2), "5")) == Completion.with_result("5", 3)
    assert await dispatcher.invoke(CALLER, Invocation("Add", (1, 0.5), "6")) == Completion.with_result("6", 1.5)


async def test_hub_error_message_reaches_the_client(dispatcher: HubDispatcher[object], metrics: GatewayMetrics) -> None:
    completion = await dispatcher.invoke(CALLER, Invocation("Refuse", (), "8"))
    assert completion == Completion.with_error(
        "8", "An unexpected error occurred invoking 'Refuse' on the server. HubException: Not today."
    )
    assert count(metrics, "Refuse", "hub_error") == 1.0


async def test_other_exceptions_are_hidden_from_the_client(
    dispatcher: HubDispatcher[object], metrics: GatewayMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.hub.dispatcher"):
        completion = await dispatcher.invoke(CALLER, Invocation("crash", (), "9"))
    assert completion == Completion.with_error("9", "An unexpected error occurred invoking 'crash' on the server.")
    assert completion is not None and "password" not in (completion.error or "")
    assert count(metrics, "Crash", "exception") == 1.0
    assert [record.getMessage() for record in caplog.records] == ["hub method Crash failed"]


async def test_stream_invocation_of_a_non_streaming_method(
    dispatcher: HubDispatcher[object], recorder: Recorder, metrics: GatewayMetrics
) -> None:
    completion = await dispatcher.invoke(CALLER, StreamInvocation("10", "Echo", ("x",)))
    assert completion == Completion.with_error(
        "10", "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
    )
    assert recorder.calls == []
    assert count(metrics, "Echo", "wrong_kind") == 1.0


async def test_stream_invocation_of_an_unknown_method(dispatcher: HubDispatcher[object]) -> None:
    completion = await dispatcher.invoke(CALLER, StreamInvocation("11", "Nope", ()))
    assert completion is not None
    assert (
        completion.error
        == "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."
    )


async def test_upload_streams_are_refused(dispatcher: HubDispatcher[object], recorder: Recorder) -> None:
    completion = await dispatcher.invoke(CALLER, Invocation("Echo", ("x",), "12", stream_ids=("0",)))
    assert completion == Completion.with_error(
        "12",
        "An unexpected error occurred invoking 'Echo' on the server. HubException: "
        "Client sent 1 stream(s), Hub method expects 0.",
    )
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("target", "arguments", "outcome", "method"),
    [
        ("Echo", ("x",), "ok", "Echo"),
        ("Missing", (), "unknown_method", "unknown"),
        ("Echo", (1,), "bad_arguments", "Echo"),
        ("Refuse", (), "hub_error", "Refuse"),
        ("Crash", (), "exception", "Crash"),
    ],
)
async def test_non_blocking_invocation_never_answers(
    dispatcher: HubDispatcher[object],
    metrics: GatewayMetrics,
    target: str,
    arguments: tuple[Any, ...],
    outcome: str,
    method: str,
) -> None:
    assert await dispatcher.invoke(CALLER, Invocation(target, arguments)) is None
    assert count(metrics, method, outcome) == 1.0


async def test_counters_accumulate(dispatcher: HubDispatcher[object], metrics: GatewayMetrics) -> None:
    for index in range(3):
        await dispatcher.invoke(CALLER, Invocation("Echo", ("x",), str(index + 1)))
    await dispatcher.invoke(CALLER, Invocation("Echo", (), "9"))
    assert count(metrics, "Echo", "ok") == 3.0
    assert count(metrics, "Echo", "bad_arguments") == 1.0

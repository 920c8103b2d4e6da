"""Binding hub invocations to hub methods, with ASP.NET Core's error texts.

Clients see only these texts (never an exception message or a trace):

* unknown method - ``Failed to invoke 'X' due to an error on the server. HubException: Method does not exist.``
* wrong argument count or types - ``Failed to invoke 'X' due to an error on the server.``
* the method raised :class:`HubError` -
  ``An unexpected error occurred invoking 'X' on the server. HubException: <message>``
* the method raised anything else - ``An unexpected error occurred invoking 'X' on the server.``
* a streaming invocation of a non-streaming method -
  ``The client attempted to invoke the non-streaming 'X' method with a streaming invocation.``
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gateway.metrics import GatewayMetrics
from gateway.signalr.messages import Completion, Invocation, StreamInvocation

log = logging.getLogger(__name__)

CallerT = TypeVar("CallerT")


class HubError(Exception):
    """Raised by a hub method for an error whose message the client may see."""


@dataclass(frozen=True, slots=True)
class HubMethod(Generic[CallerT]):
    """A callable hub method: ``handler(caller, *arguments)``; each parameter lists accepted types."""

    name: str
    handler: Callable[..., Awaitable[Any]]
    parameters: tuple[tuple[type, ...], ...] = ()


def _argument_fits(value: Any, accepted: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in accepted:
        return False  # JSON true is not a number, as for System.Text.Json
    if value is None:
        return type(None) in accepted
    return isinstance(value, accepted)


class HubDispatcher(Generic[CallerT]):
    """Looks methods up case-insensitively (as ASP.NET does) and runs them."""

    def __init__(self, methods: Iterable[HubMethod[CallerT]], *, metrics: GatewayMetrics) -> None:
        self._methods = {method.name.lower(): method for method in methods}
        self._metrics = metrics

    async def invoke(self, caller: CallerT, message: Invocation | StreamInvocation) -> Completion | None:
        """Run one invocation; return its Completion, or None for a non-blocking invocation."""
        invocation_id = message.invocation_id
        target = message.target
        method = self._methods.get(target.lower())
        label = method.name if method else "unknown"
        if method is None:
            error = f"Failed to invoke '{target}' due to an error on the server. HubException: Method does not exist."
            return self._failed(invocation_id, label, "unknown_method", error)
        if isinstance(message, StreamInvocation):
            error = f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation."
            return self._failed(invocation_id, label, "wrong_kind", error)
        if message.stream_ids:
            error = (
                f"An unexpected error occurred invoking '{target}' on the server. HubException: "
                f"Client sent {len(message.stream_ids)} stream(s), Hub method expects 0."
            )
            return self._failed(invocation_id, label, "bad_arguments", error)
        arguments = message.arguments
        if len(arguments) != len(method.parameters) or not all(
            _argument_fits(value, accepted) for value, accepted in zip(arguments, method.parameters, strict=True)
        ):
            error = f"Failed to invoke '{target}' due to an error on the server."
            return self._failed(invocation_id, label, "bad_arguments", error)
        try:
            result = await method.handler(caller, *arguments)
        except HubError as exc:
            error = f"An unexpected error occurred invoking '{target}' on the server. HubException: {exc}"
            return self._failed(invocation_id, label, "hub_error", error)
        except Exception:
            log.exception("hub method %s failed", method.name)
            error = f"An unexpected error occurred invoking '{target}' on the server."
            return self._failed(invocation_id, label, "exception", error)
        self._metrics.invocations.labels(method=label, outcome="ok").inc()
        return Completion.with_result(invocation_id, result) if invocation_id is not None else None

    def _failed(self, invocation_id: str | None, method: str, outcome: str, error: str) -> Completion | None:
        self._metrics.invocations.labels(method=method, outcome=outcome).inc()
        # Like ASP.NET: a non-blocking invocation never gets an answer, not even an error.
        return Completion.with_error(invocation_id, error) if invocation_id is not None else None

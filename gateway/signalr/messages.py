"""One frozen dataclass per SignalR hub message, independent of the wire encoding.

Every class has a class-level ``type`` tag (a ``MessageType`` literal) so code can dispatch with ``match``
over the :data:`HubMessage` union and end with ``assert_never``. Constructors validate the invariants the
official clients rely on (non-empty invocation ids and error strings), so an invalid message cannot be
built and then encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final, Literal, TypeAlias

__all__ = [
    "PING",
    "Ack",
    "CancelInvocation",
    "Close",
    "Completion",
    "HubMessage",
    "Invocation",
    "MessageType",
    "Ping",
    "Sequence",
    "StreamInvocation",
    "StreamItem",
]


class MessageType(IntEnum):
    """The ``type`` number of each hub message on the wire."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


def _check_id(invocation_id: str) -> None:
    # The JS client rejects empty ids ("Invalid payload"), so they are never valid in either direction.
    if not invocation_id:
        raise ValueError("invocation_id must be a non-empty string")


def _check_call(invocation_id: str | None, target: str) -> None:
    # Shared by Invocation and StreamInvocation: a call names a method, and its id (when it has one) is non-empty.
    if invocation_id is not None:
        _check_id(invocation_id)
    if not target:
        raise ValueError("target must be a non-empty string")


@dataclass(frozen=True, slots=True)
class Invocation:
    """Call ``target``; with an ``invocation_id`` a Completion is expected, without one no reply is sent."""

    type: ClassVar[Literal[MessageType.INVOCATION]] = MessageType.INVOCATION
    target: str
    arguments: tuple[Any, ...]
    invocation_id: str | None = None
    stream_ids: tuple[str, ...] = ()
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_call(self.invocation_id, self.target)


@dataclass(frozen=True, slots=True)
class StreamInvocation:
    """Call a streaming method; answered by StreamItems and a final Completion."""

    type: ClassVar[Literal[MessageType.STREAM_INVOCATION]] = MessageType.STREAM_INVOCATION
    invocation_id: str
    target: str
    arguments: tuple[Any, ...]
    stream_ids: tuple[str, ...] = ()
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_call(self.invocation_id, self.target)


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One item of a stream (server result stream or client upload stream); ``item`` may be None."""

    type: ClassVar[Literal[MessageType.STREAM_ITEM]] = MessageType.STREAM_ITEM
    invocation_id: str
    item: Any
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_id(self.invocation_id)


@dataclass(frozen=True, slots=True)
class Completion:
    """End of an invocation or stream: void, with a result (``has_result``), or with an error.

    Use :meth:`void`, :meth:`with_result` or :meth:`with_error` rather than the raw constructor.
    """

    type: ClassVar[Literal[MessageType.COMPLETION]] = MessageType.COMPLETION
    invocation_id: str
    result: Any = None
    error: str | None = None
    has_result: bool = False
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_id(self.invocation_id)
        if self.error is not None:
            # JS treats "" as success, so an empty error would silently turn a failure into a result.
            if not self.error:
                raise ValueError("error must be a non-empty string")
            if self.has_result:
                raise ValueError("a Completion cannot carry both a result and an error")
        if not self.has_result and self.result is not None:
            # Without has_result the encoders drop the value; refuse instead of losing it silently.
            raise ValueError("result given without has_result=True; use Completion.with_result()")

    @classmethod
    def void(cls, invocation_id: str) -> Completion:
        """Completion without a result (ends a stream, or a void method)."""
        return cls(invocation_id)

    @classmethod
    def with_result(cls, invocation_id: str, value: Any) -> Completion:
        """Completion carrying ``value`` (which may be None, sent as an explicit null)."""
        return cls(invocation_id, result=value, has_result=True)

    @classmethod
    def with_error(cls, invocation_id: str, error: str) -> Completion:
        """Completion reporting ``error`` (a non-empty text shown to the caller)."""
        return cls(invocation_id, error=error)


@dataclass(frozen=True, slots=True)
class CancelInvocation:
    """Ask the receiver to stop the stream started with ``invocation_id``."""

    type: ClassVar[Literal[MessageType.CANCEL_INVOCATION]] = MessageType.CANCEL_INVOCATION
    invocation_id: str
    headers: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        _check_id(self.invocation_id)


@dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive; carries nothing."""

    type: ClassVar[Literal[MessageType.PING]] = MessageType.PING


@dataclass(frozen=True, slots=True)
class Close:
    """The sender is closing the connection; ``allow_reconnect`` lets the JS client reconnect."""

    type: ClassVar[Literal[MessageType.CLOSE]] = MessageType.CLOSE
    error: str | None = None
    allow_reconnect: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """Stateful reconnect: every trackable message up to ``sequence_id`` has been processed."""

    type: ClassVar[Literal[MessageType.ACK]] = MessageType.ACK
    sequence_id: int


@dataclass(frozen=True, slots=True)
class Sequence:
    """Stateful reconnect: the next trackable message has id ``sequence_id``."""

    type: ClassVar[Literal[MessageType.SEQUENCE]] = MessageType.SEQUENCE
    sequence_id: int


HubMessage: TypeAlias = (
    Invocation | StreamInvocation | StreamItem | Completion | CancelInvocation | Ping | Close | Ack | Sequence
)

# Ping has no fields, so one shared instance avoids an allocation per keep-alive.
PING: Final = Ping()

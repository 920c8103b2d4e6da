"""The payload on every fan-out subject: ``{"target": "<client method>", "arguments": [...]}``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from shared import jsoncodec

# Client method names are identifiers; a bound keeps junk from reaching every dashboard.
MAX_TARGET_LENGTH: Final = 128


class InvalidEnvelopeKind(enum.Enum):
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    BAD_TARGET = "bad_target"
    BAD_ARGUMENTS = "bad_arguments"


class InvalidEnvelope(ValueError):
    """A fan-out payload that cannot be delivered; ``kind`` says which rule it broke."""

    def __init__(self, kind: InvalidEnvelopeKind) -> None:
        super().__init__(kind.value)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Envelope:
    """One client method call to deliver to many connections, as read from a fan-out subject."""

    target: str
    arguments: tuple[Any, ...]


def encode_event(target: str, *arguments: Any) -> bytes:
    if not target or len(target) > MAX_TARGET_LENGTH:
        raise InvalidEnvelope(InvalidEnvelopeKind.BAD_TARGET)
    return jsoncodec.dumps({"target": target, "arguments": arguments})


def decode_event(payload: bytes) -> Envelope:
    try:
        value = jsoncodec.loads(payload)
    except jsoncodec.JSONDecodeError:
        raise InvalidEnvelope(InvalidEnvelopeKind.NOT_JSON) from None
    if not isinstance(value, dict):
        raise InvalidEnvelope(InvalidEnvelopeKind.NOT_AN_OBJECT)
    target = value.get("target")
    if not isinstance(target, str) or not target or len(target) > MAX_TARGET_LENGTH:
        raise InvalidEnvelope(InvalidEnvelopeKind.BAD_TARGET)
    arguments = value.get("arguments", [])
    if not isinstance(arguments, list):
        raise InvalidEnvelope(InvalidEnvelopeKind.BAD_ARGUMENTS)
    return Envelope(target, tuple(arguments))

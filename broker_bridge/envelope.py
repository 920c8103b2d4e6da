"""The payload on every fan-out subject: ``{"target": "<client method>", "arguments": [...]}``.

A payload that breaks a rule is refused as a whole (:class:`InvalidEnvelope` names the rule), never
delivered in part: not JSON, not an object, a bad target or arguments, larger than the limit, or
nested deeper than the limit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

from shared import jsoncodec
from shared.nesting import text_nesting_exceeds

# Client method names are identifiers; a bound keeps junk from reaching every dashboard.
MAX_TARGET_LENGTH: Final = 128


class InvalidEnvelopeKind(enum.Enum):
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    BAD_TARGET = "bad_target"
    BAD_ARGUMENTS = "bad_arguments"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    UNENCODABLE = "unencodable"


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


def decode_event(payload: bytes, *, max_bytes: int | None = None, max_depth: int | None = None) -> Envelope:
    """Read one fan-out payload; ``max_depth`` counts the envelope object itself as level 1."""
    if max_bytes is not None and len(payload) > max_bytes:
        raise InvalidEnvelope(InvalidEnvelopeKind.TOO_LARGE)
    try:
        value = jsoncodec.loads(payload)
    except jsoncodec.JSONDecodeError:
        raise InvalidEnvelope(InvalidEnvelopeKind.NOT_JSON) from None
    if not isinstance(value, dict):
        raise InvalidEnvelope(InvalidEnvelopeKind.NOT_AN_OBJECT)
    if max_depth is not None and text_nesting_exceeds(payload, value, max_depth):
        raise InvalidEnvelope(InvalidEnvelopeKind.TOO_DEEP)
    target = value.get("target")
    if not isinstance(target, str) or not target or len(target) > MAX_TARGET_LENGTH:
        raise InvalidEnvelope(InvalidEnvelopeKind.BAD_TARGET)
    arguments = value.get("arguments", [])
    if not isinstance(arguments, list):
        raise InvalidEnvelope(InvalidEnvelopeKind.BAD_ARGUMENTS)
    return Envelope(target, tuple(arguments))

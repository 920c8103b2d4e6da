"""Request-body validation for the REST API.

Pure code: :class:`BodyValidator` collects ``{field: [messages]}`` while typed getters read the
fields, and raises :class:`ValidationFailed`; the REST layer answers it with
:func:`gateway.http.responses.validation_problem`. Field keys are the JSON property names the client
sent (camelCase); ``$`` is the body itself.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from shared import jsoncodec
from shared.nesting import nesting_exceeds, text_nesting_exceeds

# Free-text fields are bounded so one request cannot push a huge string to every dashboard.
MAX_TEXT_LENGTH: Final = 2000
MAX_NAME_LENGTH: Final = 200
# An integer in a query string: optional sign, digits (more than 18 cannot be in any range we accept).
_QUERY_INTEGER: Final = re.compile(r"[+-]?[0-9]{1,18}")


class ValidationFailed(Exception):
    """The body broke one or more rules; ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("validation failed")
        self.errors = errors


def parse_json_object(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """The body as a JSON object, or ValidationFailed: a ``$`` error, or, for nesting deeper than
    ``max_depth`` (the body itself is level 1), an error naming each field that nests too deep."""
    if not raw.strip():
        raise ValidationFailed({"$": ["A non-empty request body is required."]})
    try:
        value = jsoncodec.loads(raw)
    except jsoncodec.JSONDecodeError:
        raise ValidationFailed({"$": ["The request body is not valid JSON."]}) from None
    if not isinstance(value, dict):
        raise ValidationFailed({"$": ["The request body must be a JSON object."]})
    if text_nesting_exceeds(raw, value, max_depth):
        message = f"is nested deeper than {max_depth} levels."
        deep = {
            name: [f"The {name} field {message}"]
            for name, item in value.items()
            if nesting_exceeds(item, max_depth - 1)
        }
        raise ValidationFailed(deep or {"$": [f"The request body {message}"]})
    return value


class BodyValidator:
    """Reads typed fields from a JSON object and records every rule broken (not just the first)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self.errors: dict[str, list[str]] = {}

    def _error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def _present(self, name: str, required: bool) -> bool:
        if self._body.get(name) is None:
            if required:
                self._error(name, f"The {name} field is required.")
            return False
        return True

    def text(
        self,
        name: str,
        *,
        required: bool = True,
        choices: Sequence[str] | None = None,
        max_length: int = MAX_TEXT_LENGTH,
    ) -> str | None:
        if not self._present(name, required):
            return None
        value = self._body[name]
        if not isinstance(value, str) or (required and not value.strip()):
            self._error(name, f"The {name} field must be a non-empty string.")
            return None
        if len(value) > max_length:
            self._error(name, f"The {name} field must be at most {max_length} characters long.")
            return None
        if choices is not None and value not in choices:
            self._error(name, f"The {name} field must be one of: {', '.join(choices)}.")
            return None
        return value

    def number(
        self, name: str, *, required: bool = True, integer: bool = False, minimum: float | None = None
    ) -> float | int | None:
        if not self._present(name, required):
            return None
        value = self._body[name]
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            self._error(name, f"The {name} field must be {kind}.")
            return None
        if not math.isfinite(value):
            self._error(name, f"The {name} field must be {kind}.")
            return None
        if minimum is not None and value < minimum:
            self._error(name, f"The {name} field must be {kind} >= {minimum:g}.")
            return None
        return value

    def uuid(self, name: str, *, required: bool = True) -> str | None:
        value = self.text(name, required=required, max_length=64)
        if value is None:
            return None
        try:
            return str(uuid.UUID(value))
        except ValueError:
            self._error(name, f"The {name} field must be a UUID.")
            return None

    def obj(self, name: str, *, max_bytes: int, required: bool = False) -> dict[str, Any] | None:
        """A JSON object of at most ``max_bytes`` when written as JSON (it goes to every dashboard)."""
        if not self._present(name, required):
            return None
        value = self._body[name]
        if not isinstance(value, dict):
            self._error(name, f"The {name} field must be a JSON object.")
            return None
        if len(jsoncodec.dumps(value)) > max_bytes:
            self._error(name, f"The {name} field must be at most {max_bytes} bytes as JSON.")
            return None
        return value

    def text_or_number(self, name: str, *, required: bool = True) -> str | float | int | None:
        if not self._present(name, required):
            return None
        value = self._body[name]
        if isinstance(value, str) and value.strip() and len(value) <= MAX_NAME_LENGTH:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return value
        self._error(name, f"The {name} field must be a number or a non-empty string.")
        return None

    def check(self) -> None:
        """Raise ValidationFailed if any rule was broken."""
        if self.errors:
            raise ValidationFailed(self.errors)


def query_integer(query: Mapping[str, str], name: str, *, minimum: int, maximum: int) -> int:
    """The required integer query parameter ``name`` (its first value) within ``[minimum, maximum]``, or
    ValidationFailed naming it, with ASP.NET Core's model-binding texts."""
    raw = query.get(name)
    if raw is None or raw == "":
        raise ValidationFailed({name: [f"The {name} field is required."]})
    if not _QUERY_INTEGER.fullmatch(raw):
        shown = raw if len(raw) <= MAX_NAME_LENGTH else raw[:MAX_NAME_LENGTH] + "..."
        raise ValidationFailed({name: [f"The value '{shown}' is not valid for {name}."]})
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ValidationFailed({name: [f"The field {name} must be between {minimum} and {maximum}."]})
    return value

"""Payload shapes: each field's type declared once, giving both the check and the JSON Schema.

A :class:`Shape` answers two questions about a JSON value: :meth:`Shape.problems` (what is wrong with a
value, for the builders' checks and the tests) and :meth:`Shape.schema` (the JSON Schema, for the published
AsyncAPI and OpenAPI documents). The schemas use only keywords that mean the same in JSON Schema draft-07
(AsyncAPI 3.0's Schema Object) and 2020-12 (OpenAPI 3.1): ``type``, ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties``, ``items``, ``anyOf``, ``minimum``, ``maximum``, ``maxLength``, ``pattern``,
``format``, ``description``.

Pure: no I/O. The payload catalog (:mod:`broker_bridge.catalog`) declares its payloads with these; nothing
else writes a payload's shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

# ISO 8601 UTC with a "Z", as :func:`shared.timeutil.iso_utc` writes it.
UTC_TIMESTAMP_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"
_UTC_TIMESTAMP: Final = re.compile(UTC_TIMESTAMP_PATTERN)


class Undeclared(str):
    """A problem that is only a field the shape does not declare (see :func:`checked`)."""


class PayloadShapeError(ValueError):
    """A built payload does not match its declared shape (a programming error); ``problems`` says where."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__(f"{name}: {'; '.join(problems)}")
        self.problems = problems


class Shape(Protocol):
    @property
    def description(self) -> str: ...

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the values this shape accepts."""
        ...

    def problems(self, value: Any, at: str) -> Iterator[str]:
        """What is wrong with ``value`` (at JSON path ``at``); nothing when it fits."""
        ...


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description} if description else schema


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ranged_schema(json_type: str, minimum: float | None, maximum: float | None, description: str) -> dict[str, Any]:
    """The schema of an ``integer`` or ``number`` with its optional bounds."""
    schema: dict[str, Any] = {"type": json_type}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return _described(schema, description)


def _range_problems(value: float, at: str, minimum: float | None, maximum: float | None) -> Iterator[str]:
    """What is wrong with a number of the right type: below ``minimum`` or above ``maximum``."""
    if minimum is not None and value < minimum:
        yield f"{at} must be >= {_bound_text(minimum)}"
    elif maximum is not None and value > maximum:
        yield f"{at} must be <= {_bound_text(maximum)}"


def _bound_text(bound: float) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


@dataclass(frozen=True, slots=True)
class Text:
    """A string; ``choices`` makes it an enumeration."""

    description: str = ""
    choices: tuple[str, ...] | None = None
    max_length: int | None = None
    min_length: int | None = None
    pattern: str | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.min_length is not None:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return _described(schema, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if not isinstance(value, str):
            yield f"{at} must be a string"
        elif self.choices is not None and value not in self.choices:
            yield f"{at} must be one of {', '.join(self.choices)}"
        elif self.max_length is not None and len(value) > self.max_length:
            yield f"{at} must be at most {self.max_length} characters"
        elif self.min_length is not None and len(value) < self.min_length:
            yield f"{at} must be at least {self.min_length} characters"
        elif self.pattern is not None and re.search(self.pattern, value) is None:
            yield f"{at} must match {self.pattern}"


@dataclass(frozen=True, slots=True)
class Const:
    """Exactly one JSON value (a type tag such as ``"role-assignment"``)."""

    value: str | int | bool
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return _described({"const": self.value}, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if value != self.value or type(value) is not type(self.value):
            yield f"{at} must be {self.value!r}"


@dataclass(frozen=True, slots=True)
class Timestamp:
    """ISO 8601 UTC with a ``Z`` (what :func:`shared.timeutil.iso_utc` writes)."""

    description: str = ""

    def schema(self) -> dict[str, Any]:
        schema = {"type": "string", "format": "date-time", "pattern": UTC_TIMESTAMP_PATTERN}
        return _described(schema, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if not isinstance(value, str) or not _UTC_TIMESTAMP.match(value):
            yield f"{at} must be an ISO 8601 UTC timestamp ending in Z"


@dataclass(frozen=True, slots=True)
class Integer:
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None

    def schema(self) -> dict[str, Any]:
        return _ranged_schema("integer", self.minimum, self.maximum, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if isinstance(value, bool) or not isinstance(value, int):
            yield f"{at} must be an integer"
        else:
            yield from _range_problems(value, at, self.minimum, self.maximum)


@dataclass(frozen=True, slots=True)
class Number:
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None

    def schema(self) -> dict[str, Any]:
        return _ranged_schema("number", self.minimum, self.maximum, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if not _is_number(value):
            yield f"{at} must be a finite number"
        else:
            yield from _range_problems(value, at, self.minimum, self.maximum)


@dataclass(frozen=True, slots=True)
class Boolean:
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return _described({"type": "boolean"}, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if not isinstance(value, bool):
            yield f"{at} must be true or false"


@dataclass(frozen=True, slots=True)
class AnyJson:
    """Any JSON value (an echo, a free-form ``data`` object or null...)."""

    description: str = ""
    object_only: bool = False

    def schema(self) -> dict[str, Any]:
        return _described({"type": "object"} if self.object_only else {}, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if self.object_only and not isinstance(value, dict):
            yield f"{at} must be an object"


@dataclass(frozen=True, slots=True)
class Nullable:
    """``inner`` or null."""

    inner: Shape
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return _described({"anyOf": [self.inner.schema(), {"type": "null"}]}, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if value is not None:
            yield from self.inner.problems(value, at)


@dataclass(frozen=True, slots=True)
class Either:
    """One of several shapes (``threshold``: a number or a text)."""

    options: tuple[Shape, ...]
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return _described({"anyOf": [option.schema() for option in self.options]}, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        every = [list(option.problems(value, at)) for option in self.options]
        if all(every):
            yield " or ".join(problem for found in every for problem in found)


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Shape
    description: str = ""

    def schema(self) -> dict[str, Any]:
        return _described({"type": "array", "items": self.item.schema()}, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if not isinstance(value, list):
            yield f"{at} must be an array"
            return
        for index, item in enumerate(value):
            yield from self.item.problems(item, f"{at}[{index}]")


@dataclass(frozen=True, slots=True)
class Field:
    """One property of a :class:`Record`: its shape and whether it must be present."""

    shape: Shape
    required: bool = True


def optional(shape: Shape) -> Field:
    return Field(shape, required=False)


@dataclass(frozen=True, slots=True)
class Record:
    """A JSON object with named fields; unknown fields are problems unless ``open``."""

    fields: Mapping[str, Field | Shape]
    description: str = ""
    open: bool = False
    _fields: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        normalised = {name: item if isinstance(item, Field) else Field(item) for name, item in self.fields.items()}
        object.__setattr__(self, "_fields", normalised)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._fields)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: item.shape.schema() for name, item in self._fields.items()},
            "required": [name for name, item in self._fields.items() if item.required],
        }
        if not self.open:
            schema["additionalProperties"] = False
        return _described(schema, self.description)

    def problems(self, value: Any, at: str) -> Iterator[str]:
        if not isinstance(value, dict):
            yield f"{at} must be an object"
            return
        for name, item in self._fields.items():
            if name in value:
                yield from item.shape.problems(value[name], f"{at}.{name}")
            elif item.required:
                yield f"{at}.{name} is required"
        if not self.open:
            for name in sorted(value.keys() - self._fields.keys()):
                yield Undeclared(f"{at}.{name} is not a declared field")

    def extended(self, **more: Field | Shape) -> Record:
        """This record with more fields (later ones replace earlier ones of the same name)."""
        return Record({**self._fields, **more}, self.description, self.open)

    def without(self, *names: str, description: str = "") -> Record:
        """This record without ``names`` (a REST body is an event payload less what the server fills in)."""
        kept = {name: item for name, item in self._fields.items() if name not in names}
        return Record(kept, description or self.description, self.open)

    def fields_required(self) -> dict[str, bool]:
        return {name: item.required for name, item in self._fields.items()}


def checked(name: str, shape: Shape, value: Any, *, strict: bool = False) -> Any:
    """``value`` if it fits ``shape``, else :class:`PayloadShapeError` naming ``name`` and each problem.

    A declared field that is missing or of the wrong type always fails. A field the shape does not declare
    fails only when ``strict`` (the tests): at run time it goes out as built, so a field added to a builder
    before its declaration costs the documents a line, not the process its alerts; the catalog's tests
    check every builder strictly, so the declaration is never forgotten for long.
    """
    problems = [problem for problem in shape.problems(value, "$") if strict or not isinstance(problem, Undeclared)]
    if problems:
        raise PayloadShapeError(name, problems)
    return value

"""The JSON codec every process uses (orjson), with the API's conventions for datetimes."""

from __future__ import annotations

from typing import Any, Final

import orjson

# Datetimes become ISO 8601 with a "Z"; naive ones are taken as UTC, like ASP.NET's DateTime.UtcNow.
_OPTIONS: Final = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)

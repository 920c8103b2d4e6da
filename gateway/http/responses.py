"""The one way the gateway builds JSON answers: plain JSON, and RFC 9457 problem details.

Problem bodies have ASP.NET Core's shape: ``{type, title, status}`` plus ``detail`` and, for 400,
``errors`` (ValidationProblemDetails: ``{field: [messages]}``). ``type`` is the RFC 9110 section of
the status, as ASP.NET Core writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from shared import jsoncodec

JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"
VALIDATION_TITLE: Final = "One or more validation errors occurred."

_PROBLEM_TYPES: Final = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    409: "https://tools.ietf.org/html/rfc9110#section-15.5.10",
    413: "https://tools.ietf.org/html/rfc9110#section-15.5.14",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    502: "https://tools.ietf.org/html/rfc9110#section-15.6.3",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
    504: "https://tools.ietf.org/html/rfc9110#section-15.6.5",
}


def json_response(
    body: Mapping[str, Any], *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(body=jsoncodec.dumps(body), status=status, content_type=JSON, headers=headers)


def problem_response(
    status: int,
    title: str,
    *,
    detail: str | None = None,
    errors: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> web.Response:
    """``extensions``: further members of the problem (RFC 9457 section 3.2), e.g. the line of a bad file."""
    body: dict[str, Any] = {"type": _PROBLEM_TYPES[status], "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = dict(errors)
    if extensions is not None:
        body.update(extensions)
    return web.Response(body=jsoncodec.dumps(body), status=status, content_type=PROBLEM_JSON, headers=headers)


def validation_problem(errors: Mapping[str, list[str]]) -> web.Response:
    """400 ValidationProblemDetails; field keys are the JSON names the client sent, ``$`` the body."""
    return problem_response(400, VALIDATION_TITLE, errors=errors)


def too_many_requests(detail: str, retry_after: float) -> web.Response:
    """429 problem+json with ``Retry-After`` in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    return problem_response(429, "Too Many Requests", detail=detail, headers={"Retry-After": str(seconds)})

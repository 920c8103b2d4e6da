"""The OpenAPI 3.1 document of the REST API, generated from the route table and the route contracts.

Every route the app registered under the API prefix, and every route with a contract (the documents
themselves, the probes), becomes an operation: its method and path from the route table, whether it
needs a token from :func:`gateway.paths.needs_authentication`, its body and answer from
:data:`gateway.http.rest_contract.ROUTE_CONTRACTS` (shapes of :mod:`broker_bridge.catalog`). A route
without a contract is listed all the same, marked ``x-contract-declared: false``. Pure: the caller hands
in the routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.http.rest_contract import JSON, ROUTE_CONTRACTS, RouteContract
from gateway.paths import API_PREFIX, needs_authentication

OPENAPI_VERSION: Final = "3.1.0"
DOCUMENTED_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
PROBLEM: Final = "application/problem+json"
_PATH_PARAMETER: Final = re.compile(r"\{([^}:]+)(:[^}]*)?\}")

_PROBLEM_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "field name as sent ($: the body) -> messages (400 only)",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["type", "title", "status"],
}
_ERRORS: Final = {
    "400": "Invalid body: ValidationProblemDetails naming each field",
    "401": "No token or an invalid one (WWW-Authenticate: Bearer)",
    "403": "A valid token without a required role",
    "413": "Body larger than REALTIME_MAX_BODY_BYTES",
    "429": "Over the per-user POST rate (Retry-After)",
    "503": "NATS unavailable: nothing was sent",
}


def _problem(code: str) -> dict[str, Any]:
    if code in ("401", "403"):  # empty bodies, as ASP.NET Core's, unless a route refuses with a reason
        return {"description": _ERRORS[code]}
    return {
        "description": _ERRORS.get(code, ""),
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _operation_id(method: str, path: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", path.removeprefix(API_PREFIX))
    return method.lower() + "".join(word[:1].upper() + word[1:] for word in words if word)


def _operation(method: str, path: str, contract: RouteContract | None) -> dict[str, Any]:
    secured = needs_authentication(path)
    operation: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": contract.summary if contract else f"{method} {path}",
        "tags": [contract.tag if contract else "REST API"],
        "security": [{"bearer": []}] if secured else [],
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name, _ in _PATH_PARAMETER.findall(path)
    ]
    if contract is not None and contract.query is not None:
        query = contract.query.schema()
        parameters += [
            {"name": name, "in": "query", "required": name in query["required"], "schema": schema}
            for name, schema in query["properties"].items()
        ]
    if parameters:
        operation["parameters"] = parameters
    answer: dict[str, Any] = {"description": "OK"}
    if contract is None:
        operation["x-contract-declared"] = False
        operation["description"] = "No shapes declared in gateway/http/rest_contract.py for this route."
        answer["content"] = {JSON: {"schema": {}}}
    elif contract.answer is not None:
        answer["content"] = {contract.answer_type: {"schema": contract.answer.schema()}}
    responses: dict[str, Any] = {"200": answer}
    if contract is not None and contract.body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": contract.body.schema()}}}
    if method != "GET" and path.startswith(API_PREFIX):
        codes = ("400", "413", "429", "503") if contract is None or contract.body is not None else ("429", "503")
        responses.update({code: _problem(code) for code in codes})
    if secured:
        responses.update({code: _problem(code) for code in ("401", "403")})
    # A route's own statuses; one of the common ones keeps its body and takes the route's description.
    for status, description in (contract.also or {}).items() if contract else ():
        responses[str(status)] = {**responses.get(str(status), {}), "description": description}
    for status, description in (contract.refusals or {}).items() if contract else ():
        responses[str(status)] = {**_problem(str(status)), "description": description}
    operation["responses"] = responses
    return operation


def documented(method: str, path: str, contracts: Mapping[tuple[str, str], RouteContract]) -> bool:
    """Whether a registered route belongs in the document."""
    in_api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
    return method in DOCUMENTED_METHODS and (in_api or (method, path) in contracts)


def openapi_document(
    routes: Iterable[tuple[str, str]],
    *,
    version: str,
    contracts: Mapping[tuple[str, str], RouteContract] = ROUTE_CONTRACTS,
) -> dict[str, Any]:
    """The document for the registered ``(method, path)`` routes (aiohttp's canonical paths)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(set(routes), key=lambda route: (route[1], route[0])):
        if documented(method, path, contracts):
            template = _PATH_PARAMETER.sub(lambda found: "{" + found.group(1) + "}", path)
            paths.setdefault(template, {})[method.lower()] = _operation(method, path, contracts.get((method, path)))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "realtime-admin REST API",
            "version": version,
            "description": (
                "Generated from the gateway's route table and the payload catalog. Every POST publishes "
                "through NATS and answers once NATS accepted it. The hub itself (/hubs/admin, SignalR) "
                "and the NATS subjects are described by the AsyncAPI document at /asyncapi.json."
            ),
        },
        "servers": [{"url": "/", "description": "this gateway (any replica)"}],
        "tags": [
            {"name": "REST API", "description": "The API document's endpoints (Admin role but health)"},
            {"name": "Contracts", "description": "The generated documents (Admin role)"},
            {"name": "Probes", "description": "Liveness, readiness and metrics (not routed by the Ingress)"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token with a required role (Admin by default)",
                }
            },
            "schemas": {"Problem": _PROBLEM_SCHEMA},
        },
    }

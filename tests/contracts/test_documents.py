"""The published contracts: /asyncapi.json and /openapi.json, served by the app with the in-memory broker.

Both validate against the specifications' official JSON schemas (vendored in ``schemas/``), cover every
route and hub method the app registered, and agree with what the routes and the hub really answer: each
declared answer validates what the route returned, each declared body is accepted, each required field
of it is enforced, and each hub method's Completion validates against its documented result.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient

from broker_bridge import catalog
from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.shapes import AnyJson, Either, Integer, Nullable, Number, Record, Shape, Text
from broker_bridge.subjects import COLLECTOR_RULES_LIST, COLLECTOR_RULES_RELOAD
from gateway.app import build_app
from gateway.http.openapi import documented
from gateway.http.rest_contract import ROUTE_CONTRACTS
from gateway.paths import API_DOCS_PATH, ASYNCAPI_PATH, OPENAPI_PATH
from gateway.settings import GatewaySettings
from shared.timeutil import iso_utc
from stats_collector.alerts import AlertRule

SECRET = "contracts-test-secret-0123456789abcdef"
SCHEMAS = Path(__file__).with_name("schemas")
RS = "\x1e"
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def token(roles: list[str] | None = None) -> str:
    claims = {"sub": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "name": "Alice", "exp": int(time.time()) + 600}
    return jwt.encode({**claims, "role": ["Admin"] if roles is None else roles}, SECRET, algorithm="HS256")


def bearer(roles: list[str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(roles)}"}


@cache
def official_schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


def problems(document: dict[str, Any], schema_file: str) -> list[str]:
    schema = official_schema(schema_file)
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(error.absolute_path)}: {error.message[:300]}" for error in validator.iter_errors(document)]


async def collector_rules(request: bytes) -> bytes:
    """The stats collector's answer to listing or reloading its rules (its real builder, one real rule)."""
    rule = AlertRule("cpu_usage_high", "cpu_usage", "avg", 60, ">", 90, "high", "warning").to_wire()
    listing = catalog.alert_rules(rules=[rule], file="alert-rules.toml", loaded_at=iso_utc())
    return orjson.dumps({"status": 200, "body": listing})


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    settings = GatewaySettings(jwt_secret=SECRET, shutdown_grace_seconds=1.0, replica_id="contracts")
    broker = InMemoryBroker()
    # A collector answering the rules requests, so the routes that ask it answer 200 as in a deployment.
    for subject in (COLLECTOR_RULES_LIST, COLLECTOR_RULES_RELOAD):
        await broker.serve(subject, collector_rules, max_in_flight=4, busy_reply=b"")
    return await aiohttp_client(build_app(settings, broker=broker))


async def path_values(client: TestClient[Any, Any]) -> dict[str, str]:
    """A value for each path parameter of the routes: an alert id is that of an alert sent just now."""
    sent = await client.post("/api/admin/realtime/alert/warning", headers=bearer(), data=b'{"message": "m"}')
    assert sent.status == 200, await sent.text()
    return {"alert_id": (await sent.json())["id"]}


async def fetch(client: TestClient[Any, Any], path: str) -> dict[str, Any]:
    response = await client.get(path, headers=bearer())
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    document: dict[str, Any] = await response.json()
    return document


# -- valid against the official schemas ---------------------------------------------------------------


async def test_the_asyncapi_document_is_valid_asyncapi_3(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, ASYNCAPI_PATH)
    assert document["asyncapi"] == "3.0.0"
    assert problems(document, "asyncapi-3.0.0.json") == []


async def test_the_openapi_document_is_valid_openapi_3_1(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, OPENAPI_PATH)
    assert document["openapi"].startswith("3.1.")
    assert problems(document, "openapi-3.1.json") == []


def test_the_validators_do_reject_a_broken_document() -> None:
    # A check that cannot fail proves nothing: the vendored schemas refuse obvious mistakes.
    assert problems({"asyncapi": "3.0.0", "info": {"title": "x"}}, "asyncapi-3.0.0.json")
    assert problems({"openapi": "3.1.0", "info": {"version": "1"}, "paths": {}}, "openapi-3.1.json")
    assert problems(
        {"asyncapi": "3.0.0", "info": {"title": "x", "version": "1"}, "channels": {"a": 1}}, "asyncapi-3.0.0.json"
    )


# -- who may read them --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ASYNCAPI_PATH, OPENAPI_PATH])
async def test_the_documents_need_the_api_token_and_role(client: TestClient[Any, Any], path: str) -> None:
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers=bearer(roles=["User"]))).status == 403
    assert (await client.get(path, headers=bearer())).status == 200


async def test_the_docs_page_is_public_static_and_under_the_csp(client: TestClient[Any, Any]) -> None:
    page = await client.get(API_DOCS_PATH)
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    # Every script is a file of this origin: no inline script, no CDN.
    assert "<script" in html and "<script>" not in html and "http" not in html.split("<body")[0].replace('href="/', "")
    for asset, content_type in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        response = await client.get(API_DOCS_PATH + asset)
        assert response.status == 200 and response.content_type == content_type, asset
        assert response.headers["Content-Security-Policy"] == csp
        assert ".innerHTML" not in await response.text()


# -- generated from the route table and the hub ---------------------------------------------------------


async def test_every_registered_api_route_is_documented(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, OPENAPI_PATH)
    registered = {
        (route.method, route.resource.canonical) for route in client.app.router.routes() if route.resource is not None
    }
    expected = {(method, path) for method, path in registered if documented(method, path, ROUTE_CONTRACTS)}
    listed = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    assert listed == expected
    assert ("POST", "/api/admin/realtime/alert/performance") in listed and ("GET", "/healthz") in listed
    undeclared = [
        f"{method} {path}"
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if op.get("x-contract-declared") is False
    ]
    assert not undeclared, f"routes without a contract in gateway/http/rest_contract.py: {undeclared}"
    # The public health route is the only API route without the bearer scheme.
    public = sorted(path for path, ops in document["paths"].items() for op in ops.values() if not op["security"])
    assert public == ["/api/admin/realtime/health", "/healthz", "/metrics", "/readyz"]


async def test_every_hub_method_and_client_event_is_documented(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, ASYNCAPI_PATH)
    operations = document["operations"]
    for method in ("SubscribeToAnalytics", "UnsubscribeFromAlerts", "GetPlatformStats", "SendTestMessage"):
        assert operations[f"invoke{method}"]["reply"], method
    for event in ("AnalyticsUpdate", "SystemAlert", "AdminNotification", "ConnectionEstablished", "ErrorOccurred"):
        assert operations[f"send{event}"]["action"] == "send"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"realtime.group.{group}", "realtime.user.{userId}", "realtime.all"} <= addresses
    assert {
        "platform.events.user.registered",
        "platform.events.payment.succeeded",
        "platform.metrics.{name}",
    } <= addresses
    undeclared = [
        name
        for name, message in document["components"]["messages"].items()
        if "x-contract-declared" in json.dumps(message)
    ]
    undeclared += [
        name for name, schema in document["components"]["schemas"].items() if schema.get("x-contract-declared") is False
    ]
    assert not undeclared, f"payloads or results not declared in broker_bridge/catalog.py: {undeclared}"
    send_test = document["components"]["messages"]["SendTestMessageInvocation"]["payload"]["properties"]["arguments"]
    assert send_test["items"] == [{"type": ["string", "null"], "title": "payload"}]


# -- the documents agree with what the server does -----------------------------------------------------


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``components`` beside it, so its local ``$ref``s resolve."""
    return {**schema, "components": document.get("components", {})}


def validate(document: dict[str, Any], schema: dict[str, Any], value: Any, what: str) -> None:
    errors = [error.message for error in jsonschema.Draft7Validator(resolved(document, schema)).iter_errors(value)]
    assert not errors, f"{what}: {errors} in {value!r}"


async def test_every_get_route_answers_what_its_contract_says(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, OPENAPI_PATH)
    for path, operations in document["paths"].items():
        operation = operations.get("get")
        if operation is None or path in (ASYNCAPI_PATH, OPENAPI_PATH) or operation.get("x-contract-declared") is False:
            continue  # an undeclared route fails test_every_registered_api_route_is_documented instead
        contract = ROUTE_CONTRACTS[("GET", path)]
        query = example(contract.query) if contract.query is not None else {}
        response = await client.get(path, headers=bearer(), params=query)
        assert response.status == 200, path
        for name in query:  # a required query parameter is enforced
            refused = await client.get(path, headers=bearer())
            assert refused.status == 400 and name in (await refused.json())["errors"], (path, name)
        (content_type, content), *_ = operation["responses"]["200"]["content"].items()
        assert response.content_type == content_type, path
        value = await response.json() if content_type == "application/json" else await response.text()
        validate(document, content["schema"], value, f"GET {path}")


def example(shape: Shape) -> Any:
    """A value of ``shape`` (the smallest sensible one), built from the declaration alone."""
    if isinstance(shape, Record):
        return {name: example(item.shape) for name, item in shape._fields.items() if item.required}
    if isinstance(shape, Text):
        if shape.choices:
            return shape.choices[0]
        return "7c9e6679-7425-40de-944b-e07fc1f90ae7" if shape.pattern else "x"
    if isinstance(shape, Integer | Number):
        return 1
    if isinstance(shape, Either):
        return example(shape.options[0])
    if isinstance(shape, Nullable):
        return example(shape.inner)
    if isinstance(shape, AnyJson):
        return {}
    raise AssertionError(f"no example for {shape!r}")


@pytest.mark.parametrize(
    ("method", "path"),
    sorted(key for key, contract in ROUTE_CONTRACTS.items() if key[0] == "POST"),
)
async def test_every_post_route_takes_the_declared_body_and_enforces_its_required_fields(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    contract = ROUTE_CONTRACTS[(method, path)]
    path = path.format(**await path_values(client)) if "{" in path else path
    body = example(contract.body) if contract.body is not None else None
    sent = await client.post(path, headers=bearer(), data=orjson.dumps(body or {"unused": True}))
    assert sent.status == 200, (path, body, await sent.text())
    assert contract.answer is not None
    answer = await sent.json()
    assert not list(contract.answer.problems(answer, "$")), (path, answer)
    if contract.body is None:
        return
    for name, required in contract.body.fields_required().items():
        if required:
            without = {key: value for key, value in body.items() if key != name}
            refused = await client.post(path, headers=bearer(), data=orjson.dumps(without or {"unused": True}))
            assert refused.status == 400, (path, name)
            assert name in (await refused.json())["errors"], (path, name)


async def test_every_hub_method_answers_its_documented_result(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, ASYNCAPI_PATH)
    messages = document["components"]["messages"]
    socket = await client.ws_connect(f"/hubs/admin?access_token={token()}")
    await socket.send_str(json.dumps({"protocol": "json", "version": 1}) + RS)
    received: list[dict[str, Any]] = []

    async def next_message(kind: int, invocation_id: str | None = None) -> dict[str, Any]:
        while True:
            for message in received:
                if message.get("type") == kind and (
                    invocation_id is None or message.get("invocationId") == invocation_id
                ):
                    received.remove(message)
                    return message
            frame = await socket.receive_str(timeout=5)
            received.extend(json.loads(part) for part in frame.split(RS) if part and part != "{}")

    greeting = await next_message(1)
    assert greeting["target"] == "ConnectionEstablished"
    validate(document, messages["ConnectionEstablished"]["payload"], greeting, "ConnectionEstablished")
    methods = [name.removesuffix("Invocation") for name in messages if name.endswith("Invocation")]
    assert len(methods) >= 9
    for number, name in enumerate(methods):
        invocation = messages[f"{name}Invocation"]["payload"]
        arguments = [example_argument(item) for item in invocation["properties"]["arguments"].get("items", [])]
        call = {"type": 1, "invocationId": str(number), "target": name, "arguments": arguments}
        validate(document, invocation, call, f"{name} invocation")
        await socket.send_str(json.dumps(call) + RS)
        completion = await next_message(3, str(number))
        # A method without arguments must answer; one with arguments may refuse a made-up value (an unknown
        # id), with an error text in the documented place.
        assert "error" not in completion or arguments, completion
        validate(document, messages[f"{name}Completion"]["payload"], completion, f"{name} completion")
    # Events the subscriptions sent on the way (SubscribeToAnalytics sends the latest figures) fit too.
    for event in [message for message in received if message.get("type") == 1]:
        validate(document, messages[event["target"]]["payload"], event, event["target"])
    await socket.close()


def example_argument(schema: dict[str, Any]) -> Any:
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {"string": "hello", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kinds[0], {})


# -- generic: what other modules register appears without editing the generators ----------------------


def test_a_hub_method_or_route_added_elsewhere_appears_marked_undeclared() -> None:
    from gateway.http.asyncapi import asyncapi_document
    from gateway.http.openapi import openapi_document
    from gateway.hub.dispatcher import HubMethod

    async def get_weather(caller: object, group: str, limit: int | None) -> dict[str, Any]:
        return {}

    document = asyncapi_document([HubMethod("GetWeather", get_weather, ((str,), (int, type(None))))], version="1")
    assert problems(document, "asyncapi-3.0.0.json") == []
    invocation = document["components"]["messages"]["GetWeatherInvocation"]
    assert invocation["title"] == "GetWeather(group, limit)"
    assert invocation["payload"]["properties"]["arguments"]["items"] == [
        {"type": "string", "title": "group"},
        {"type": ["integer", "null"], "title": "limit"},
    ]
    result = document["components"]["messages"]["GetWeatherCompletion"]["payload"]["properties"]["result"]
    assert result["x-contract-declared"] is False

    routes = [("GET", "/api/admin/realtime/weather"), ("POST", "/api/admin/realtime/things/{id}/poke")]
    openapi = openapi_document([*routes, ("GET", "/assets/{path}")], version="1")
    assert problems(openapi, "openapi-3.1.json") == []
    assert set(openapi["paths"]) == {"/api/admin/realtime/weather", "/api/admin/realtime/things/{id}/poke"}
    poke = openapi["paths"]["/api/admin/realtime/things/{id}/poke"]["post"]
    assert poke["parameters"][0]["name"] == "id" and poke["x-contract-declared"] is False
    assert poke["security"] == [{"bearer": []}]


async def test_the_declared_refusals_are_what_the_alert_routes_answer(client: TestClient[Any, Any]) -> None:
    document = await fetch(client, OPENAPI_PATH)
    acknowledge = document["paths"]["/api/admin/realtime/alerts/{alert_id}/acknowledge"]["post"]["responses"]
    silences = document["paths"]["/api/admin/realtime/alert-silences"]["post"]["responses"]
    for responses, status in ((acknowledge, "400"), (acknowledge, "404"), (acknowledge, "409"), (silences, "409")):
        assert "application/problem+json" in responses[status]["content"], status
    answers = [
        await client.post("/api/admin/realtime/alerts/not-kept/acknowledge", headers=bearer()),
        await client.post("/api/admin/realtime/alerts/a.b/acknowledge", headers=bearer()),
        await client.post(
            "/api/admin/realtime/alert-silences", headers=bearer(), data=b'{"target": "cpu", "minutes": 1e9}'
        ),
    ]
    assert [answer.status for answer in answers] == [404, 400, 400]
    assert all(answer.content_type == "application/problem+json" for answer in answers)

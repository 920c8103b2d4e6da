"""Every REST endpoint of the API document against a real gateway, NATS server and SignalR client.

The module has its own nats-server, so the platform snapshot in NATS KV starts empty, whatever
other modules do. One subscriber (in ``analytics``, ``alerts`` and ``user-activity``; every Admin
is in ``admins``) and one bystander (only ``admins``) stay connected for the whole module; each
test marks both clients and looks only at what arrived since.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
import pytest_asyncio

from scripts.processes import NatsServer
from tests.support.expect import SNAPSHOT_FIGURES, assert_recent_iso_z
from tests.support.fanout import API, ClientPool, FanoutClient, HttpAnswer, http, metric_value
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token, make_token

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PROBLEM_JSON = "application/problem+json"
USER_ID = "550e8400-e29b-41d4-a716-446655440000"
ZEROS = dict.fromkeys(SNAPSHOT_FIGURES, 0)
# The API document's example snapshot (plus the average generation time).
SEED_SNAPSHOT = {
    "totalUsers": 5432,
    "activeUsers": 234,
    "newUsersToday": 12,
    "websitesGenerated": 1203,
    "imagesGenerated": 3847,
    "failedGenerations": 5,
    "totalRevenue": 98765.43,
    "revenueToday": 1234.56,
    "averageGenerationTime": 4.2,
}
SEED_TIMESTAMP = "2025-10-17T10:30:00Z"

POST_ENDPOINTS = (
    "broadcast/platform-update",
    "broadcast/user-count",
    "broadcast/generation-metrics",
    "broadcast/revenue",
    "alert",
    "alert/warning",
    "alert/error",
    "alert/performance",
    "notify/user-action",
    "notify/role-assignment",
    "notify/system-event",
)
ADMIN_GETS = ("status", "platform-snapshot", "presence")


@pytest.fixture(scope="module")
def gateway_nats(module_nats: NatsServer) -> NatsServer:
    """The module's gateway uses the module's own nats-server, so the KV snapshot starts empty."""
    return module_nats


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(gateway: GatewayProcess) -> AsyncIterator[tuple[FanoutClient, FanoutClient]]:
    async with ClientPool() as pool:
        subscriber, bystander = await pool.connect_many(
            (gateway.hub_url, admin_token(), "subscriber"), (gateway.hub_url, admin_token(), "bystander")
        )
        for method, group in (
            ("SubscribeToAnalytics", "analytics"),
            ("SubscribeToAlerts", "alerts"),
            ("SubscribeToUserActivity", "user-activity"),
        ):
            answer = await subscriber.invoke(method)
            assert (answer["group"], answer["subscribed"]) == (group, True), answer
        await subscriber.sync_with_broker()
        await bystander.sync_with_broker()
        yield subscriber, bystander
        for client in (subscriber, bystander):
            assert client.errors_logged() == [], client.diagnostics()


@pytest.fixture
def subscriber(clients: tuple[FanoutClient, FanoutClient]) -> FanoutClient:
    clients[0].mark()
    return clients[0]


@pytest.fixture
def bystander(clients: tuple[FanoutClient, FanoutClient]) -> FanoutClient:
    clients[1].mark()
    return clients[1]


async def post(gateway: GatewayProcess, path: str, body: Any = None, *, raw: bytes | None = None) -> HttpAnswer:
    return await http("POST", gateway.base_url, path, token=admin_token(), json_body=body, data=raw)


def assert_problem(answer: HttpAnswer, status: int) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.content_type == PROBLEM_JSON, answer
    body = answer.json
    assert isinstance(body, dict), answer
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"].startswith("https://tools.ietf.org/html/rfc9110#")
    assert isinstance(body["title"], str) and body["title"]
    return body


# -- public and Admin GETs, probes --------------------------------------------------------------


async def test_health_is_public_and_healthy(gateway: GatewayProcess) -> None:
    answer = await http("GET", gateway.base_url, "health")
    assert answer.status == 200, answer
    assert answer.content_type == "application/json"
    body = answer.json
    assert set(body) == {"status", "service", "timestamp", "websocketEndpoint"}, body
    assert (body["status"], body["service"], body["websocketEndpoint"]) == ("healthy", "real-time", "/hubs/admin")
    assert_recent_iso_z(body["timestamp"])


async def test_status_for_admins(gateway: GatewayProcess) -> None:
    answer = await http("GET", gateway.base_url, "status", token=admin_token())
    assert answer.status == 200, answer
    body = answer.json
    assert set(body) == {"status", "timestamp", "message"}, body
    assert body["status"] == "connected"
    assert body["message"] == "Real-time service is operational"
    assert_recent_iso_z(body["timestamp"])


async def test_probes_and_metrics(gateway: GatewayProcess, clients: tuple[FanoutClient, FanoutClient]) -> None:
    assert (await http("GET", gateway.base_url, "/healthz")).status == 200
    assert (await http("GET", gateway.base_url, "/readyz")).status == 200
    metrics = (await http("GET", gateway.base_url, "/metrics")).text
    assert "realtime_connections" in metrics and "realtime_http_requests_total" in metrics
    assert metric_value(metrics, "realtime_connections") >= 2, "the module's two clients are connected"
    assert metric_value(metrics, "realtime_http_requests_total", route=f"{API}/status", status="200") >= 1


# -- platform data before any collector wrote KV ------------------------------------------------


async def test_platform_snapshot_is_zeros_with_a_timestamp_before_any_collector(
    gateway: GatewayProcess, subscriber: FanoutClient
) -> None:
    answer = await http("GET", gateway.base_url, "platform-snapshot", token=admin_token())
    assert answer.status == 200, answer
    assert set(answer.json) == {"timestamp", "data"}
    assert answer.json["data"] == ZEROS
    assert_recent_iso_z(answer.json["timestamp"])

    stats = await subscriber.invoke("GetPlatformStats")
    assert {k: v for k, v in stats.items() if k != "timestamp"} == ZEROS
    assert_recent_iso_z(stats["timestamp"])


# -- every POST: answer exactly as the document, event to the right group -----------------------


def analytics_update(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The AnalyticsUpdate for a snapshot: the document's fields plus every snapshot field."""
    return {
        "totalUsers": snapshot["totalUsers"],
        "activeUsers": snapshot["activeUsers"],
        "websitesGenerated": snapshot["websitesGenerated"],
        "imagesGenerated": snapshot["imagesGenerated"],
        "revenue": snapshot["totalRevenue"],
        **snapshot,
    }


GENERATION_METRICS = {
    "websitesGenerated": 125,
    "imagesGenerated": 342,
    "failedGenerations": 5,
    "averageGenerationTime": 4.2,
}
REVENUE = {"dailyRevenue": 1250.75, "totalRevenue30d": 35420.50}
GENERIC_ALERT = {
    "type": "info",
    "message": "Test alert from API",
    "data": {"timestamp": "2025-10-17T10:30:00Z", "severity": "low"},
}
WARNING_ALERT = {
    "message": "System performance degradation detected",
    "data": {"cpuUsage": 92, "memoryUsage": 88, "threshold": 85},
}
ERROR_ALERT = {
    "message": "API rate limit exceeded for multiple users",
    "data": {"affectedUsers": 3, "limitExceeded": "1000 req/hour"},
}
PERFORMANCE_ALERT = {"metric": "ApiResponseTime", "value": 2500, "threshold": "2000ms"}
USER_ACTION = {
    "userId": USER_ID,
    "action": "website_generated",
    "details": {"projectId": "proj-12345", "templateId": "tmpl-789", "generationTime": 3.5},
}
ROLE_ASSIGNMENT = {"userId": USER_ID, "roleName": "Moderator", "action": "assigned"}
SYSTEM_EVENT = {
    "eventType": "database_maintenance",
    "description": "Scheduled maintenance completed successfully",
    "data": {
        "duration": "15 minutes",
        "affectedServices": ["auth-service", "generator-service"],
        "status": "completed",
    },
}

# (endpoint, body, exact answer, client method, expected event without its timestamp, reaches bystander)
SUCCESS_CASES: list[tuple[str, Any, dict[str, Any], str, dict[str, Any], bool]] = [
    (
        "broadcast/platform-update",
        None,
        {"message": "Platform update broadcasted"},
        "AnalyticsUpdate",
        analytics_update(ZEROS),
        False,
    ),
    (
        "broadcast/user-count",
        None,
        {"message": "User count update broadcasted", "totalUsers": 0, "activeUsers": 0, "newUsersToday": 0},
        "UserCountUpdate",
        {"totalUsers": 0, "activeUsers": 0, "newUsersToday": 0},
        False,
    ),
    (
        "broadcast/generation-metrics",
        GENERATION_METRICS,
        {"message": "Generation metrics broadcasted"},
        "GenerationMetricsUpdate",
        GENERATION_METRICS,
        False,
    ),
    ("broadcast/revenue", REVENUE, {"message": "Revenue update broadcasted"}, "RevenueUpdate", REVENUE, False),
    (
        "alert",
        GENERIC_ALERT,
        {"message": "Alert sent successfully"},
        "SystemAlert",
        {"type": "info", "message": GENERIC_ALERT["message"], "severity": "low", "data": GENERIC_ALERT["data"]},
        False,
    ),
    (
        "alert",
        {"type": "success", "message": "Deployed", "severity": "critical"},
        {"message": "Alert sent successfully"},
        "SystemAlert",
        {"type": "success", "message": "Deployed", "severity": "critical", "data": None},
        False,
    ),
    (
        "alert/warning",
        WARNING_ALERT,
        {"message": "Alert sent successfully"},
        "SystemAlert",
        {"type": "warning", "message": WARNING_ALERT["message"], "severity": "medium", "data": WARNING_ALERT["data"]},
        False,
    ),
    (
        "alert/error",
        ERROR_ALERT,
        {"message": "Alert sent successfully"},
        "SystemAlert",
        {"type": "error", "message": ERROR_ALERT["message"], "severity": "high", "data": ERROR_ALERT["data"]},
        False,
    ),
    (
        "alert/performance",
        PERFORMANCE_ALERT,
        {"message": "Performance alert sent successfully"},
        "SystemAlert",
        {
            "type": "warning",
            "message": "Performance alert: ApiResponseTime is 2500 (threshold 2000ms)",
            "severity": "high",
            "data": PERFORMANCE_ALERT,
        },
        False,
    ),
    (
        "notify/user-action",
        USER_ACTION,
        {"message": "User action notification sent"},
        "UserActivityUpdate",
        USER_ACTION,
        False,
    ),
    (
        "notify/role-assignment",
        ROLE_ASSIGNMENT,
        {"message": "Role assignment notification sent"},
        "AdminNotification",
        {
            "type": "role-assignment",
            **ROLE_ASSIGNMENT,
            "message": f"Role 'Moderator' assigned to user {USER_ID}",
        },
        True,
    ),
    (
        "notify/system-event",
        SYSTEM_EVENT,
        {"message": "System event notification sent"},
        "AdminNotification",
        {"type": "system-event", **SYSTEM_EVENT},
        True,
    ),
]


@pytest.mark.parametrize(
    ("endpoint", "body", "response", "target", "event", "admins_group"),
    SUCCESS_CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(SUCCESS_CASES)],
)
async def test_post_answers_as_documented_and_delivers_its_event(
    gateway: GatewayProcess,
    subscriber: FanoutClient,
    bystander: FanoutClient,
    endpoint: str,
    body: Any,
    response: dict[str, Any],
    target: str,
    event: dict[str, Any],
    admins_group: bool,
) -> None:
    answer = await post(gateway, endpoint, body)
    assert answer.status == 200, answer
    assert answer.content_type == "application/json"

    got = await subscriber.wait_event(target)
    assert_recent_iso_z(got.get("timestamp"))
    if target == "SystemAlert":
        # Every alert gets an id (by which it is acknowledged): in the answer and in the event.
        assert answer.json == {**response, "id": got.pop("id")}, answer
    else:
        assert answer.json == response
    assert {k: v for k, v in got.items() if k != "timestamp"} == event
    if admins_group:
        # Every Admin is in "admins": the bystander gets it too, identical.
        assert await bystander.wait_event(target) == got
    else:
        await bystander.assert_no_event(target, within=0.4)
    assert subscriber.events(target) == [got], "delivered more than once"
    assert subscriber.event_names() == [target], "some other client method was called"


async def test_near_limit_body_is_accepted(gateway: GatewayProcess, subscriber: FanoutClient) -> None:
    """A body just under the body limit, with ``data`` just under its own 8 KB limit (the rest is a
    field the endpoint ignores): the alert goes out with the whole ``data``."""
    data = {"padding": "x" * (8192 - len('{"padding":""}'))}
    body = {"type": "info", "message": "big", "data": data, "ignored": "y" * 55_000}
    answer = await post(gateway, "alert", body)
    got = await subscriber.wait_event("SystemAlert")
    assert (answer.status, answer.json) == (200, {"message": "Alert sent successfully", "id": got["id"]}), answer
    assert got["data"] == data


# -- 400: every validation rule ----------------------------------------------------------------

# (endpoint, raw body, fields expected in `errors`)
INVALID_BODIES: list[tuple[str, bytes, set[str]]] = [
    ("alert", b'{"type": "info", "message": ', {"$"}),  # malformed JSON
    ("alert", b"", {"$"}),  # empty body
    ("alert", b"   ", {"$"}),
    ("broadcast/revenue", b"[1, 2]", {"$"}),  # not an object
    ("alert", b"{}", {"type", "message"}),  # missing required fields
    ("alert", json.dumps({"type": "critical", "message": "m"}).encode(), {"type"}),  # bad alert type
    ("alert", json.dumps({"type": "info", "message": 42}).encode(), {"message"}),
    ("alert", json.dumps({"type": "info", "message": "  "}).encode(), {"message"}),
    ("alert", json.dumps({"type": "info", "message": "m", "data": [1]}).encode(), {"data"}),
    ("alert", json.dumps({"type": "info", "message": "m", "severity": "extreme"}).encode(), {"severity"}),
    ("alert/warning", b"{}", {"message"}),
    ("alert/error", json.dumps({"message": None, "data": "text"}).encode(), {"message", "data"}),
    ("alert/performance", b"{}", {"metric", "value", "threshold"}),
    (
        "alert/performance",
        json.dumps({"metric": "x", "value": "fast", "threshold": True}).encode(),
        {"value", "threshold"},
    ),
    (
        "broadcast/generation-metrics",
        json.dumps(
            {
                "websitesGenerated": "many",
                "imagesGenerated": 1.5,
                "failedGenerations": -1,
                "averageGenerationTime": True,
            }
        ).encode(),
        {"websitesGenerated", "imagesGenerated", "failedGenerations", "averageGenerationTime"},
    ),
    (
        "broadcast/generation-metrics",
        b"{}",
        {"websitesGenerated", "imagesGenerated", "failedGenerations", "averageGenerationTime"},
    ),
    (
        "broadcast/revenue",
        json.dumps({"dailyRevenue": "1250.75", "totalRevenue30d": None}).encode(),
        {"dailyRevenue", "totalRevenue30d"},
    ),
    ("notify/user-action", json.dumps({"userId": "not-a-uuid", "action": "login"}).encode(), {"userId"}),  # non-UUID
    ("notify/user-action", b"{}", {"userId", "action"}),
    ("notify/user-action", json.dumps({"userId": USER_ID, "action": "x", "details": 5}).encode(), {"details"}),
    (
        "notify/role-assignment",
        json.dumps({"userId": USER_ID, "roleName": "Moderator", "action": "promoted"}).encode(),
        {"action"},
    ),
    (
        "notify/role-assignment",
        json.dumps({"userId": "12345", "roleName": "Moderator", "action": "revoked"}).encode(),
        {"userId"},
    ),
    ("notify/role-assignment", b"{}", {"userId", "roleName", "action"}),
    ("notify/system-event", json.dumps({"eventType": "x"}).encode(), {"description"}),
    (
        "notify/system-event",
        json.dumps({"eventType": 1, "description": "d", "data": "x"}).encode(),
        {"eventType", "data"},
    ),
]


@pytest.mark.parametrize(
    ("endpoint", "raw", "fields"), INVALID_BODIES, ids=[f"{c[0]}-{i}" for i, c in enumerate(INVALID_BODIES)]
)
async def test_invalid_body_is_a_validation_problem(
    gateway: GatewayProcess, endpoint: str, raw: bytes, fields: set[str]
) -> None:
    body = assert_problem(await post(gateway, endpoint, raw=raw), 400)
    assert body["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    assert body["title"] == "One or more validation errors occurred."
    errors = body["errors"]
    assert set(errors) == fields, errors
    for messages in errors.values():
        assert isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages)


async def test_rejected_requests_deliver_nothing(
    gateway: GatewayProcess, subscriber: FanoutClient, bystander: FanoutClient
) -> None:
    for endpoint, raw, _ in INVALID_BODIES[:6]:
        assert (await post(gateway, endpoint, raw=raw)).status == 400
    no_admin = make_token(roles=["User"])
    body = {"type": "info", "message": "should not arrive"}
    assert (await http("POST", gateway.base_url, "alert", token=no_admin, json_body=body)).status == 403
    assert (await http("POST", gateway.base_url, "alert", json_body=body)).status == 401
    await asyncio.gather(subscriber.assert_no_event(within=0.5), bystander.assert_no_event(within=0.5))


# -- 401, 403, 413 ----------------------------------------------------------------------------

BAD_TOKENS = {
    "garbage": "not-a-jwt",
    "wrong secret": make_token(roles=["Admin"], secret="another-secret-0123456789abcdef-xyz"),
    "expired": make_token(roles=["Admin"], ttl=-3600),
}


@pytest.mark.parametrize(
    ("method", "endpoint"), [("GET", e) for e in ADMIN_GETS] + [("POST", e) for e in POST_ENDPOINTS]
)
async def test_admin_endpoints_need_a_valid_admin_token(gateway: GatewayProcess, method: str, endpoint: str) -> None:
    body = {"type": "info", "message": "m"} if method == "POST" else None
    missing = await http(method, gateway.base_url, endpoint, json_body=body)
    assert missing.status == 401, missing
    assert missing.headers.get("WWW-Authenticate", "").startswith("Bearer"), missing.headers
    for name, token in BAD_TOKENS.items():
        answer = await http(method, gateway.base_url, endpoint, token=token, json_body=body)
        assert answer.status == 401, (name, answer)
        assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer"), (name, answer.headers)
    for roles in (["User"], [], ["admin"]):
        answer = await http(method, gateway.base_url, endpoint, token=make_token(roles=roles), json_body=body)
        assert answer.status == 403, (roles, answer)
    no_role_claim = await http(method, gateway.base_url, endpoint, token=make_token(), json_body=body)
    assert no_role_claim.status == 403, no_role_claim


@pytest.mark.parametrize("endpoint", ["alert", "broadcast/revenue", "notify/system-event"])
async def test_body_over_64_kb_is_413(gateway: GatewayProcess, endpoint: str) -> None:
    raw = json.dumps({"type": "info", "message": "m", "data": {"padding": "x" * 70_000}}).encode()
    assert len(raw) > 64 * 1024
    body = assert_problem(await post(gateway, endpoint, raw=raw), 413)
    assert body["type"] == "https://tools.ietf.org/html/rfc9110#section-15.5.14"
    exactly_over = b'{"message": "' + b"y" * (64 * 1024 - 13) + b'"}'
    assert len(exactly_over) == 64 * 1024 + 2
    assert_problem(await post(gateway, endpoint, raw=exactly_over), 413)


async def test_rest_metrics_count_routes_and_statuses(gateway: GatewayProcess) -> None:
    metrics = (await http("GET", gateway.base_url, "/metrics")).text
    assert metric_value(metrics, "realtime_http_requests_total", route=f"{API}/alert", status="200") >= 1
    assert metric_value(metrics, "realtime_http_requests_total", route=f"{API}/alert", status="400") >= 1
    assert metric_value(metrics, "realtime_http_requests_total", route=f"{API}/alert", status="413") >= 1


# -- platform data once a collector wrote KV (last: the gateway keeps the last snapshot it saw) --


async def write_snapshot(nats_url: str, record: dict[str, Any]) -> None:
    """Write the collector's record with a plain nats-py client (bucket created if it is missing)."""
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        try:
            kv = await js.key_value("REALTIME_SNAPSHOT")
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(bucket="REALTIME_SNAPSHOT", history=1)
        await kv.put("platform", json.dumps(record).encode())
    finally:
        await client.close()


async def test_platform_data_comes_from_the_collectors_kv_record(
    gateway: GatewayProcess, module_nats: NatsServer, subscriber: FanoutClient
) -> None:
    await write_snapshot(module_nats.url, {"timestamp": SEED_TIMESTAMP, "data": SEED_SNAPSHOT})

    answer = await http("GET", gateway.base_url, "platform-snapshot", token=admin_token())
    assert answer.status == 200, answer
    assert answer.json == {"timestamp": SEED_TIMESTAMP, "data": SEED_SNAPSHOT}

    assert await subscriber.invoke("GetPlatformStats") == {**SEED_SNAPSHOT, "timestamp": SEED_TIMESTAMP}

    answer = await post(gateway, "broadcast/platform-update")
    assert (answer.status, answer.json) == (200, {"message": "Platform update broadcasted"}), answer
    update = await subscriber.wait_event("AnalyticsUpdate")
    assert update == {**analytics_update(SEED_SNAPSHOT), "timestamp": SEED_TIMESTAMP}
    assert update["revenue"] == 98765.43

    answer = await post(gateway, "broadcast/user-count")
    assert answer.json == {
        "message": "User count update broadcasted",
        "totalUsers": 5432,
        "activeUsers": 234,
        "newUsersToday": 12,
    }
    counts = await subscriber.wait_event("UserCountUpdate")
    assert counts == {"totalUsers": 5432, "activeUsers": 234, "newUsersToday": 12, "timestamp": SEED_TIMESTAMP}

    # A later record replaces it.
    newer = {**SEED_SNAPSHOT, "activeUsers": 240}
    await write_snapshot(module_nats.url, {"timestamp": "2025-10-17T10:31:00Z", "data": newer})
    answer = await http("GET", gateway.base_url, "platform-snapshot", token=admin_token())
    assert answer.json == {"timestamp": "2025-10-17T10:31:00Z", "data": newer}

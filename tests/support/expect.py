"""Shared expectations about the hub's answers (shapes from gateway/hub/admin_hub.py and the API document)."""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime, timedelta
from typing import Any

from shared.models import PlatformSnapshot

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")

# The platform snapshot's figures as the wire carries them, in the model's (the API document's) order:
# counts, money, then the average generation time (shared/models.py adds it to the document's example).
SNAPSHOT_FIGURES = tuple(PlatformSnapshot().to_wire())
COUNT_FIGURES = tuple(name for name, value in PlatformSnapshot().to_wire().items() if isinstance(value, int))
MONEY_FIGURES = ("totalRevenue", "revenueToday")
# GetPlatformStats answers every figure and a timestamp; more (numeric) fields are allowed.
PLATFORM_STATS_KEYS = {*SNAPSHOT_FIGURES, "timestamp"}
# What negotiate offers by default, in the order clients try them.
DEFAULT_TRANSPORTS = [
    {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
    {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
    {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
]
CONNECTION_COUNT_KEYS = {"connectionId", "timestamp", "connectionsOnReplica", "totalConnections", "replicas"}

UNKNOWN_METHOD = "Failed to invoke '{}' due to an error on the server. HubException: Method does not exist."
BAD_ARGUMENTS = "Failed to invoke '{}' due to an error on the server."
CLOSE_WITH_ERROR = {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}


def assert_recent_iso_z(value: Any) -> None:
    """An ISO 8601 UTC timestamp ending in Z, within a minute of now."""
    assert isinstance(value, str) and ISO_Z.match(value), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert abs(moment.timestamp() - time.time()) < 60, value
    assert moment.utcoffset() == timedelta(0)


def jwt_sub(token: str) -> str:
    payload = token.split(".")[1]
    sub: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    return sub


def assert_subscription(value: Any, group: str, subscribed: bool) -> None:
    assert set(value) == {"group", "subscribed", "timestamp"}, value
    assert value["group"] == group
    assert value["subscribed"] is subscribed
    assert_recent_iso_z(value["timestamp"])


def assert_platform_stats(value: Any) -> None:
    assert set(value) >= PLATFORM_STATS_KEYS, value
    for key in set(value) - {"timestamp"}:
        assert isinstance(value[key], int | float) and not isinstance(value[key], bool), (key, value)
        assert value[key] >= 0
    assert_recent_iso_z(value["timestamp"])


def assert_connection_count(value: Any, connection_id: str) -> None:
    assert set(value) == CONNECTION_COUNT_KEYS, value
    assert value["connectionId"] == connection_id
    assert value["connectionsOnReplica"] >= 1
    assert value["totalConnections"] >= value["connectionsOnReplica"]
    assert value["replicas"] >= 1
    assert_recent_iso_z(value["timestamp"])


def assert_test_message(value: Any, echo: str) -> None:
    assert set(value) == {"timestamp", "message", "echo"}, value
    assert value["message"] == "Test received"
    assert value["echo"] == echo
    assert_recent_iso_z(value["timestamp"])


def assert_established(value: Any, *, user_id: str) -> None:
    assert isinstance(value["connectionId"], str) and value["connectionId"], value
    assert value["userId"] == user_id
    assert value["groups"] == ["admins"]
    assert_recent_iso_z(value["timestamp"])


def _only(calls: dict[str, list[dict[str, Any]]], name: str) -> Any:
    (call,) = calls[name]
    assert call["ok"], call
    return call["value"]


def _error_of(calls: dict[str, list[dict[str, Any]]], name: str) -> str:
    (call,) = calls[name]
    assert not call["ok"], call
    error: str = call["error"]
    return error


def assert_full_session(result: dict[str, Any], *, token: str, negotiated: bool = True) -> None:
    """What ``tests/js/hub_client.mjs full`` must report: start, every hub method (and the failing
    calls' ErrorOccurred), a clean stop, nothing logged by the client."""
    assert result.get("startError") is None, result
    assert result["stateAfterStart"] == "Connected"
    assert result["establishedInTime"], "no ConnectionEstablished within 5 s"
    (established,) = result["established"]
    assert_established(established, user_id=jwt_sub(token))
    connection_id = established["connectionId"]
    if not negotiated:
        assert result["connectionId"] is None  # the JS client only knows an id it negotiated
    else:
        assert connection_id == result["connectionId"]
        assert len(connection_id) == 22  # 16 random bytes, base64url, as ASP.NET

    calls = result["calls"]
    for group in ("UserActivity", "Analytics", "Alerts"):
        name = {"UserActivity": "user-activity", "Analytics": "analytics", "Alerts": "alerts"}[group]
        for call in calls[f"SubscribeTo{group}"]:
            assert call["ok"], call
            assert_subscription(call["value"], name, subscribed=True)
        for call in calls[f"UnsubscribeFrom{group}"]:
            assert call["ok"], call
            assert_subscription(call["value"], name, subscribed=False)
    assert len(calls["SubscribeToAnalytics"]) == 2 and len(calls["UnsubscribeFromAlerts"]) == 2
    assert_platform_stats(_only(calls, "GetPlatformStats"))
    assert_connection_count(_only(calls, "GetConnectionCount"), connection_id)
    assert_test_message(_only(calls, "SendTestMessage"), "Test payload")
    assert_test_message(_only(calls, "sendtestmessage"), "lower case")  # lookup is case-insensitive

    assert _error_of(calls, "unknown") == UNKNOWN_METHOD.format("NoSuchMethod")
    assert _error_of(calls, "noArguments") == BAD_ARGUMENTS.format("SendTestMessage")
    assert _error_of(calls, "twoArguments") == BAD_ARGUMENTS.format("SendTestMessage")
    assert _error_of(calls, "wrongType") == BAD_ARGUMENTS.format("SendTestMessage")
    assert_connection_count(_only(calls, "afterErrors"), connection_id)  # errors do not end the connection
    # Every failed call also reached the ErrorOccurred handler, with the same text, in order.
    failed = [_error_of(calls, name) for name in ("unknown", "noArguments", "twoArguments", "wrongType")]
    assert [error["message"] for error in result["errors"]] == failed
    assert all(error["type"] == "error" for error in result["errors"])
    for error in result["errors"]:
        assert_recent_iso_z(error["timestamp"])

    assert result["stateBeforeStop"] == "Connected"
    assert result["stopError"] is None
    assert result["stateAfterStop"] == "Disconnected"
    assert result["closed"] == [{"error": None}]  # a clean stop: onclose without an error
    assert result["reconnecting"] == [] and result["reconnected"] == []
    assert result["logs"] == []  # the client logged no warning or error

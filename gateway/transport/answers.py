"""The plain-text answers of the hub path, in ASP.NET Core's words (clients and tests match them)."""

from __future__ import annotations

from typing import Final

UNKNOWN_CONNECTION: Final = "No Connection with that ID"
ALREADY_CONNECTED: Final = "Connection already has a WebSocket"
BROKER_UNAVAILABLE: Final = "The real-time broker is unavailable; try again shortly."
CONNECTION_ID_REQUIRED: Final = "Connection ID required"
CANNOT_CHANGE_TRANSPORT: Final = "Cannot change transports mid-connection"
POST_TO_WEBSOCKET: Final = "POST requests are not allowed for WebSocket connections."
DELETE_NOT_SUPPORTED: Final = "Cannot terminate this connection using the DELETE endpoint."


def transport_not_supported(transport: str) -> str:
    return f"{transport} transport not supported by this end point type"

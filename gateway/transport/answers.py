"""The plain-text answers of the hub path, in ASP.NET Core's words (clients and tests match them)."""

from __future__ import annotations

from typing import Final

UNKNOWN_CONNECTION: Final = "No Connection with that ID"
ALREADY_CONNECTED: Final = "Connection already has a WebSocket"
BROKER_UNAVAILABLE: Final = "The real-time broker is unavailable; try again shortly."

"""Exceptions raised by the SignalR codec.

Hierarchy::

    SignalRError                  base class; catch this to handle every codec failure
    ├── ProtocolError             a malformed hub message or frame (close the connection)
    │   └── MessageTooLargeError  a record exceeds the configured size limit
    └── HandshakeError            the handshake failed; ``client_message`` goes to the client

No exception carries payload bytes: messages may contain tokens or personal data, and every field here is
meant to be safe to log.
"""

from __future__ import annotations

__all__ = ["HandshakeError", "MessageTooLargeError", "ProtocolError", "SignalRError"]


class SignalRError(Exception):
    """Base class of every error raised by :mod:`gateway.signalr`."""


class ProtocolError(SignalRError):
    """A hub message or frame that cannot be decoded.

    ``reason`` says what was wrong (a field name, an expected type); it never quotes the payload.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageTooLargeError(ProtocolError):
    """A record is larger than the configured limit.

    ``size`` is the full record size including framing, or None when the record is still incomplete and
    only known to be too large. ``limit`` is the configured maximum in bytes.
    """

    def __init__(self, *, size: int | None, limit: int) -> None:
        # Same wording as ASP.NET's server log line, so operators can grep for either.
        super().__init__(f"The maximum message size of {limit}B was exceeded.")
        self.size = size
        self.limit = limit


class HandshakeError(SignalRError):
    """The handshake request was rejected.

    ``client_message`` is the exact text to send back as ``{"error": ...}`` (ASP.NET wording, no details);
    ``detail`` is an optional explanation for logs only.
    """

    def __init__(self, client_message: str, *, detail: str | None = None) -> None:
        super().__init__(client_message if detail is None else f"{client_message} ({detail})")
        self.client_message = client_message
        self.detail = detail

"""One line, for an operator, saying why talking to NATS failed (no traceback, no secret).

:func:`describe` maps what nats-py, ``ssl`` and the socket layer raise to a cause an operator can
act on: the credentials were refused, the server's certificate is not trusted (and why), the server
wants a client certificate, nobody answers, a credential file cannot be read, a permission is
missing. Messages come from the server or the TLS library, never from a credential, and a secret
file's content is never part of an exception here.
"""

from __future__ import annotations

import ssl

import nats.errors
import nkeys

AUTH_REJECTED = ("authorization violation", "authentication expired", "authentication revoked", "account")


def describe(error: BaseException, *, auth_method: str = "none") -> str:
    """A short cause for ``error``; ``auth_method`` (``nkey``, ``user/password``...) is named when the
    server refused the credentials."""
    if isinstance(error, ssl.SSLCertVerificationError):
        detail = error.verify_message or error.reason or "verification failed"
        return f"TLS: the NATS server's certificate is not trusted ({detail}); check REALTIME_NATS_TLS_CA_FILE"
    if isinstance(error, ssl.SSLError):
        reason = error.reason or str(error)
        if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
            hint = "the server requires a client certificate: set REALTIME_NATS_TLS_CERT_FILE / _KEY_FILE"
        elif "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
            hint = "the server does not speak TLS first (configure `handshake_first` on its tls block)"
        else:
            hint = "check the certificates on both sides"
        return f"TLS handshake failed ({reason}): {hint}"
    if isinstance(error, nats.errors.AuthorizationError):
        return f"NATS rejected the credentials (authorization violation, auth: {auth_method})"
    if isinstance(error, nats.errors.Error):
        text = str(error).removeprefix("nats: ").strip().strip("'")
        lowered = text.lower()
        if "permissions violation" in lowered:
            return f"NATS denied a permission ({text})"
        if any(marker in lowered for marker in AUTH_REJECTED):
            return f"NATS rejected the credentials ({text}, auth: {auth_method})"
        return f"NATS refused the connection ({text or type(error).__name__})"
    if isinstance(error, ConnectionRefusedError):
        return "no NATS server answers (connection refused)"
    if isinstance(error, TimeoutError):
        return "no answer from NATS in time (timed out)"
    if isinstance(error, OSError):
        if error.filename is not None:
            return f"cannot read {error.filename} ({error.strerror or type(error).__name__})"
        return f"network error ({error.strerror or error or type(error).__name__})"
    if isinstance(error, ValueError | nkeys.NkeysError):
        return f"invalid credential file ({type(error).__name__})"
    return type(error).__name__

"""The gateway's settings: one typed object, loaded once from flags and ``REALTIME_*`` variables."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from gateway.auth import HMAC_MIN_KEY_BYTES, pem_public_key
from gateway.jwks import FileJwksLoader, JwksUnavailable
from shared.config import (
    ConfigError,
    boolean,
    build_settings,
    comma_list,
    network_list,
    non_negative_float,
    optional_text,
    port_number,
    positive_float,
    positive_int,
    setting,
    text,
)
from shared.process_settings import AlertStateSettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The transports of the ASP.NET Core spec, in the order negotiate lists them (clients take the first
# that works for them, so WebSockets comes first).
TRANSPORT_NAMES: Final = ("WebSockets", "ServerSentEvents", "LongPolling")


def transport_list(raw: str) -> tuple[str, ...]:
    """Comma-separated transport names (case-insensitive), kept in :data:`TRANSPORT_NAMES` order."""
    wanted = {name.casefold() for name in comma_list(raw)}
    unknown = wanted - {name.casefold() for name in TRANSPORT_NAMES}
    if unknown or not wanted:
        raise ValueError(f"name one or more of {', '.join(TRANSPORT_NAMES)}")
    return tuple(name for name in TRANSPORT_NAMES if name.casefold() in wanted)


MIN_HS256_SECRET_BYTES: Final = HMAC_MIN_KEY_BYTES["HS256"]
# Hosts a JWKS may be fetched from over plain http: nothing between us and them can swap the keys.
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings(AlertStateSettings):
    """Everything the gateway process is configured with; the README's table lists the same fields."""

    host: str = setting("0.0.0.0", text, "interface to listen on")  # noqa: S104 - a container's service port
    port: int = setting(5006, port_number, "TCP port to listen on")
    jwt_secret: str | None = setting(None, optional_text, "HS256 key for access tokens (>= 32 bytes)", secret=True)
    jwt_public_key_file: str | None = setting(None, optional_text, "PEM public key for RS256/ES256 access tokens")
    jwt_issuer: str | None = setting(None, optional_text, "required `iss` of access tokens (unset: not checked)")
    jwt_audience: str | None = setting(None, optional_text, "required `aud` of access tokens (unset: not checked)")
    jwt_leeway_seconds: float = setting(30.0, non_negative_float, "clock skew allowed on exp/nbf")
    jwt_secret_file: str | None = setting(
        None, optional_text, "file holding the HS256 key, e.g. a mounted Kubernetes Secret (trailing newline ignored)"
    )
    jwt_jwks_file: str | None = setting(
        None,
        optional_text,
        "JWKS file of verification keys with `kid`s; may hold `oct` (HS256) keys; re-read like the URL",
    )
    jwt_jwks_url: str | None = setting(
        None, optional_text, "https URL of the identity provider's JWKS (no redirects; http for loopback only)"
    )
    jwt_jwks_refresh_interval_seconds: float = setting(600.0, positive_float, "reload the JWKS this often")
    jwt_jwks_refresh_min_seconds: float = setting(
        60.0, positive_float, "least time between two loads set off by tokens with an unknown `kid`"
    )
    jwt_jwks_fetch_timeout_seconds: float = setting(5.0, positive_float, "time allowed for one JWKS request")
    jwt_jwks_max_bytes: int = setting(65536, positive_int, "largest JWKS accepted (larger: that load fails)")
    required_roles: tuple[str, ...] = setting(("Admin",), comma_list, "roles allowed on the hub and REST API (any one)")
    connection_token_secret: str | None = setting(
        None,
        optional_text,
        "key that signs connection tokens; the same on every replica "
        "(default: derived from the JWT secret; required with a public key)",
        secret=True,
    )
    connect_window_seconds: float = setting(30.0, positive_float, "how long a negotiated connection token is valid")
    transports: tuple[str, ...] = setting(
        TRANSPORT_NAMES,
        transport_list,
        "transports negotiate offers, in the order clients should try them",
    )
    poll_timeout_seconds: float = setting(
        90.0, positive_float, "a long poll with nothing to send answers empty after this long (clients abort at 100 s)"
    )
    disconnect_timeout_seconds: float = setting(
        15.0,
        positive_float,
        "a long-polling connection between polls, or a stateful one between sockets, is ended after this long",
    )
    max_poll_bytes: int = setting(
        524288,
        positive_int,
        "largest long-poll answer or Server-Sent Events write, in whole messages (one larger message goes alone); "
        "keeps a forwarded answer within NATS's 1 MB payload limit",
    )
    max_forwarded_requests: int = setting(
        10000,
        positive_int,
        "long-polling and Server-Sent Events requests a replica forwards to their connection's owner at once, "
        "open forwarded streams included, and serves for other replicas at once per kind (more: 503)",
    )
    forward_timeout_seconds: float = setting(
        30.0,
        positive_float,
        "how long a forwarded send, DELETE or event-stream start waits for the owning replica "
        "(a forwarded poll: the poll timeout plus 5 s); then 504",
    )
    stateful_reconnect: bool = setting(
        True, boolean, "offer stateful reconnect to clients that ask for it (needs the fan-out stream)"
    )
    stateful_buffer_bytes: int = setting(
        100_000,
        positive_int,
        "what a stateful connection may have sent and the client not yet acknowledged; then it pauses and "
        "catches up from the stream as Acks come in",
    )
    fanout_stream: bool = setting(
        True,
        boolean,
        "carry fan-out through the JetStream stream REALTIME_FANOUT, so a connection can resume on any replica "
        "(false: plain NATS subscriptions, no stateful reconnect)",
    )
    resume_checkpoint_interval_seconds: float = setting(
        5.0,
        positive_float,
        "how often a resumable connection's position, as the client acknowledged it, is saved to KV "
        "(a resume replays what came after)",
    )
    fanout_stream_max_age_seconds: float = setting(
        120.0, positive_float, "how long REALTIME_FANOUT keeps messages: the longest gap a resume can bridge"
    )
    history_max_points: int = setting(
        100_000,
        positive_int,
        "platform snapshots held in memory for analytics history, at most (a day of 1-second snapshots; "
        "beyond: oldest dropped, counted)",
    )
    keep_alive_interval_seconds: float = setting(
        15.0, positive_float, "send a Ping when nothing was sent for this long"
    )
    client_timeout_seconds: float = setting(30.0, positive_float, "close a connection whose client sent nothing")
    handshake_timeout_seconds: float = setting(15.0, positive_float, "time allowed for the SignalR handshake")
    max_message_bytes: int = setting(32768, positive_int, "largest hub message accepted from a client")
    max_frame_bytes: int = setting(
        65536,
        positive_int,
        "largest WebSocket message accepted from a client (several hub messages may share one); "
        "larger: Close with an error",
    )
    max_json_depth: int = setting(
        32, positive_int, "deepest nesting accepted in hub messages and REST bodies (deeper: rejected)"
    )
    max_broadcast_bytes: int = setting(
        65536, positive_int, "largest fan-out payload read from NATS (larger: counted invalid, delivered to nobody)"
    )
    max_details_bytes: int = setting(
        8192, positive_int, "largest `data` / `details` object of a REST body, as JSON (larger: 400)"
    )
    max_parallel_invocations: int = setting(1, positive_int, "hub invocations run at once per connection")
    fanout_slice_seconds: float = setting(
        0.002,
        positive_float,
        "work one fan-out message does before it lets the event loop run (reads, invocations, pings), "
        "continuing on the next turn; an invocation's answer takes about four turns",
    )
    max_outbound_bytes: int = setting(1_048_576, positive_int, "unsent bytes per connection before it is cut as slow")
    write_timeout_seconds: float = setting(
        10.0, positive_float, "cut a connection whose socket made no write progress for this long"
    )
    max_connections_per_user: int = setting(20, positive_int, "open connections per user id on one replica (more: 429)")
    max_connections_per_ip: int = setting(
        200, positive_int, "open connections per client IP on one replica (more: 429)"
    )
    negotiate_rate_per_ip: float = setting(
        20.0, non_negative_float, "negotiate requests per second per client IP, sustained (0: no limit)"
    )
    negotiate_burst_per_ip: int = setting(200, positive_int, "negotiate requests per client IP at once")
    invocation_rate_per_connection: float = setting(
        10.0, non_negative_float, "hub invocations per second per connection, sustained (0: no limit)"
    )
    invocation_burst_per_connection: int = setting(40, positive_int, "hub invocations per connection at once")
    rest_post_rate_per_user: float = setting(
        50.0, non_negative_float, "REST POSTs per second per user, sustained (0: no limit)"
    )
    rest_post_burst_per_user: int = setting(200, positive_int, "REST POSTs per user at once")
    rate_limit_max_keys: int = setting(
        100_000, positive_int, "client IPs and users whose request rates are tracked at once (least recent forgotten)"
    )
    trusted_proxies: tuple[IPNetwork, ...] = setting(
        (),
        network_list,
        "CIDRs of proxies whose X-Forwarded-For names the client IP (unset: the peer address is the client)",
    )
    shutdown_grace_seconds: float = setting(5.0, non_negative_float, "time given to connections to close on shutdown")
    presence_interval_seconds: float = setting(2.0, positive_float, "how often the connection count is shared in KV")
    presence_ttl_seconds: float = setting(
        4.0,
        positive_float,
        "a replica's list of connected users in KV expires this long after its last write (re-written every "
        "third of it), so a killed replica's users drop out of presence",
    )
    presence_debounce_seconds: float = setting(
        5.0,
        non_negative_float,
        "a user's online/offline change is notified to `admins` once it has held this long (a quicker "
        "reconnect notifies nothing)",
    )
    presence_max_notifications: int = setting(
        20,
        positive_int,
        "presence changes notified one by one at once; more due together (a deploy, a reconnect storm): one "
        "`presence-summary` notification with the counts instead",
    )
    presence_max_users: int = setting(
        2000,
        positive_int,
        "users listed in one replica's presence entry, and users notified as online at once (more: counted "
        "in the totals only)",
    )
    kv_replicas: int = setting(
        1, positive_int, "replicas of the KV buckets and the fan-out stream the gateway creates (3 in a NATS cluster)"
    )
    max_body_bytes: int = setting(65536, positive_int, "largest REST request body (larger: 413)")
    max_alert_silences: int = setting(
        100, positive_int, "live alert silences at most (a new one beyond: refused; changing one is fine)"
    )
    max_alert_state_bytes: int = setting(
        262144,
        positive_int,
        "largest GetAlertStates / alerts/state answer: the newest alerts that fit, the rest counted in `omitted` "
        "(keeps the answer well inside a connection's outbound limit)",
    )
    collector_request_timeout_seconds: float = setting(
        5.0, positive_float, "how long listing or reloading the alert rules waits for the collector (then 504)"
    )
    dashboard_dir: str | None = setting(
        None, optional_text, "built dashboard to serve at / (default: dashboard/dist if built)"
    )
    cors_origins: tuple[str, ...] = setting(
        (), comma_list, "browser origins allowed cross-origin (exact match, comma-separated)"
    )
    gc_young_interval_seconds: float = setting(
        0.1,
        non_negative_float,
        "collect the youngest generation this often and `gc.freeze()` survivors of older collections, "
        "so every pause stays short (0: off, CPython's defaults)",
    )
    gc_full_collect_interval_seconds: float = setting(
        3600.0,
        non_negative_float,
        "one scheduled full collection this often, reclaiming cycles frozen while alive (0: never)",
    )

    def __post_init__(self) -> None:
        self._check_key_source()
        if not self.required_roles:
            raise ConfigError("REALTIME_REQUIRED_ROLES", "name at least one role")
        if self.max_frame_bytes < self.max_message_bytes:
            raise ConfigError("REALTIME_MAX_FRAME_BYTES", "must be at least REALTIME_MAX_MESSAGE_BYTES")

    def _check_key_source(self) -> None:
        """Exactly one key source, and it yields a usable key (each problem named by its variable)."""
        sources = {
            "REALTIME_JWT_SECRET": self.jwt_secret,
            "REALTIME_JWT_SECRET_FILE": self.jwt_secret_file,
            "REALTIME_JWT_PUBLIC_KEY_FILE": self.jwt_public_key_file,
            "REALTIME_JWT_JWKS_FILE": self.jwt_jwks_file,
            "REALTIME_JWT_JWKS_URL": self.jwt_jwks_url,
        }
        chosen = [name for name, value in sources.items() if value is not None]
        if len(chosen) != 1:
            raise ConfigError(" / ".join(sources), f"set exactly one of these (set: {', '.join(chosen) or 'none'})")
        key = chosen[0]
        try:
            if self.jwt_secret_file is not None or self.jwt_secret is not None:
                secret = self.hs256_secret()
                if secret is not None and len(secret.encode()) < MIN_HS256_SECRET_BYTES:
                    raise ValueError(f"use at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 3.2)")
            elif self.jwt_public_key_file is not None:
                pem_public_key(self.jwt_public_key_file)
            elif self.jwt_jwks_file is not None:
                FileJwksLoader(path=self.jwt_jwks_file, max_bytes=self.jwt_jwks_max_bytes).load_now()
            elif self.jwt_jwks_url is not None:
                _check_jwks_url(self.jwt_jwks_url)
        except FileNotFoundError:
            raise ConfigError(key, "no such file") from None
        except OSError as error:
            raise ConfigError(key, f"cannot read the file ({error.strerror})") from None
        except JwksUnavailable as error:
            raise ConfigError(key, error.reason) from None
        except UnicodeDecodeError:  # its message would quote a byte of the secret
            raise ConfigError(key, "not UTF-8 text") from None
        except ValueError as error:  # the PEM loader's and the length check's
            raise ConfigError(key, str(error).split("\n")[0]) from None

    def hs256_secret(self) -> str | None:
        """The HS256 key: ``jwt_secret``, or the text of ``jwt_secret_file`` without its trailing line break."""
        if self.jwt_secret_file is None:
            return self.jwt_secret
        return Path(self.jwt_secret_file).read_text(encoding="utf-8").rstrip("\r\n")


def _check_jwks_url(url: str) -> None:
    """An https URL, or http to a loopback address (a test server, a sidecar): keys must not be swapped in transit."""
    parts = urlsplit(url)
    loopback = parts.hostname in LOOPBACK_HOSTS
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValueError("use an https:// URL (http:// only to localhost)")


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> GatewaySettings:
    return build_settings(
        GatewaySettings,
        argv,
        environ,
        prog="python -m gateway",
        description="SignalR-compatible admin hub gateway",
    )

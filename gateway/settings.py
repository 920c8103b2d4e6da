"""The gateway's settings: one typed object, loaded once from flags and ``REALTIME_*`` variables."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared.config import (
    ConfigError,
    Option,
    build_settings,
    comma_list,
    non_negative_float,
    one_of,
    optional_text,
    port_number,
    positive_float,
    positive_int,
    split_urls,
    text,
)

# RFC 7518 section 3.2: an HS256 key must be at least as long as the hash output.
MIN_HS256_SECRET_BYTES: Final = 32

OPTIONS: Final[tuple[Option, ...]] = (
    Option("host", text, "0.0.0.0", "interface to listen on"),  # noqa: S104 - a container's service port
    Option("port", port_number, 5006, "TCP port to listen on"),
    Option("nats_url", text, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated"),
    Option("jwt_secret", optional_text, None, "HS256 key for access tokens", secret=True),
    Option("jwt_public_key_file", optional_text, None, "PEM public key for RS256/ES256 access tokens"),
    Option("jwt_issuer", optional_text, None, "required `iss` of access tokens (unset: not checked)"),
    Option("jwt_audience", optional_text, None, "required `aud` of access tokens (unset: not checked)"),
    Option("jwt_leeway_seconds", non_negative_float, 30.0, "clock skew allowed on exp/nbf"),
    Option("required_roles", comma_list, ("Admin",), "roles allowed on the hub and REST API (any one)"),
    Option(
        "connection_token_secret",
        optional_text,
        None,
        "key that signs connection tokens; the same on every replica (default: derived from the JWT secret)",
        secret=True,
    ),
    Option("connect_window_seconds", positive_float, 30.0, "how long a negotiated connection token is valid"),
    Option("keep_alive_interval_seconds", positive_float, 15.0, "send a Ping when nothing was sent for this long"),
    Option("client_timeout_seconds", positive_float, 30.0, "close a connection whose client sent nothing"),
    Option("handshake_timeout_seconds", positive_float, 15.0, "time allowed for the SignalR handshake"),
    Option("max_message_bytes", positive_int, 32768, "largest hub message accepted from a client"),
    Option("max_parallel_invocations", positive_int, 1, "hub invocations run at once per connection"),
    Option("max_outbound_bytes", positive_int, 1_048_576, "unsent bytes per connection before it is cut as slow"),
    Option("shutdown_grace_seconds", non_negative_float, 5.0, "time given to connections to close on shutdown"),
    Option("replica_id", optional_text, None, "this replica's name in NATS KV (default: host name and pid)"),
    Option("presence_interval_seconds", positive_float, 2.0, "how often the connection count is shared in KV"),
    Option("kv_replicas", positive_int, 1, "replicas of the KV buckets the gateway creates (3 in a NATS cluster)"),
    Option("max_body_bytes", positive_int, 65536, "largest REST request body (larger: 413)"),
    Option("dashboard_dir", optional_text, None, "built dashboard to serve at / (default: dashboard/dist if built)"),
    Option("cors_origins", comma_list, (), "browser origins allowed cross-origin (exact match)"),
    Option(
        "gc_young_interval_seconds",
        non_negative_float,
        0.1,
        "collect the youngest generation this often and gc.freeze() survivors of older collections (0: off)",
    ),
    Option(
        "gc_full_collect_interval_seconds",
        non_negative_float,
        3600.0,
        "one scheduled full collection this often, reclaiming cycles frozen while alive (0: never)",
    ),
    Option("log_level", one_of("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level"),
    Option("log_format", one_of("text", "json"), "text", "log line format"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """Everything the gateway process is configured with; see README for the table."""

    host: str = "0.0.0.0"  # noqa: S104
    port: int = 5006
    nats_url: str = "nats://127.0.0.1:4222"
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = 30.0
    required_roles: tuple[str, ...] = ("Admin",)
    connection_token_secret: str | None = None
    connect_window_seconds: float = 30.0
    keep_alive_interval_seconds: float = 15.0
    client_timeout_seconds: float = 30.0
    handshake_timeout_seconds: float = 15.0
    max_message_bytes: int = 32768
    max_parallel_invocations: int = 1
    max_outbound_bytes: int = 1_048_576
    shutdown_grace_seconds: float = 5.0
    replica_id: str | None = None
    presence_interval_seconds: float = 2.0
    kv_replicas: int = 1
    max_body_bytes: int = 65536
    dashboard_dir: str | None = None
    cors_origins: tuple[str, ...] = ()
    gc_young_interval_seconds: float = 0.1
    gc_full_collect_interval_seconds: float = 3600.0
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        if (self.jwt_secret is None) == (self.jwt_public_key_file is None):
            raise ConfigError("REALTIME_JWT_SECRET / REALTIME_JWT_PUBLIC_KEY_FILE", "set exactly one of the two")
        if self.jwt_secret is not None and len(self.jwt_secret.encode()) < MIN_HS256_SECRET_BYTES:
            raise ConfigError("REALTIME_JWT_SECRET", f"use at least {MIN_HS256_SECRET_BYTES} bytes (RFC 7518 3.2)")
        if self.jwt_public_key_file is not None and not Path(self.jwt_public_key_file).is_file():
            raise ConfigError("REALTIME_JWT_PUBLIC_KEY_FILE", "no such file")
        if not self.required_roles:
            raise ConfigError("REALTIME_REQUIRED_ROLES", "name at least one role")

    @property
    def replica_name(self) -> str:
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def nats_servers(self) -> list[str]:
        return split_urls(self.nats_url)


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> GatewaySettings:
    return build_settings(
        GatewaySettings,
        OPTIONS,
        argv,
        environ,
        prog="python -m gateway",
        description="SignalR-compatible admin hub gateway",
    )

"""The collector's settings: flags with ``REALTIME_*`` environment defaults, loaded once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.config import (
    ConfigError,
    Option,
    build_settings,
    one_of,
    optional_text,
    port_number,
    positive_float,
    positive_int,
    split_urls,
    text,
)

DEFAULT_RULES_FILE: Final = Path(__file__).resolve().parents[1] / "deploy" / "alert-rules.toml"

OPTIONS: Final[tuple[Option, ...]] = (
    Option("nats_url", text, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated"),
    Option("metrics_host", text, "0.0.0.0", "interface for /metrics, /healthz and /readyz"),  # noqa: S104
    Option("metrics_port", port_number, 9106, "port for /metrics, /healthz and /readyz (0: none)"),
    Option("publish_interval_seconds", positive_float, 5.0, "how often changed figures are published"),
    Option("heartbeat_seconds", positive_float, 30.0, "publish unchanged figures at least this often"),
    Option("persist_interval_seconds", positive_float, 1.0, "how often the aggregate is saved to KV"),
    Option("active_window_seconds", positive_float, 900.0, "a user is active for this long after an event"),
    Option("dedup_window_seconds", positive_float, 120.0, "events with a repeated id within this window count once"),
    Option("timezone", text, "UTC", "time zone whose midnight resets the daily figures"),
    Option("currency", text, "USD", "currency of revenue figures; payments in others are dead-lettered"),
    Option("stream_max_age_seconds", positive_float, 30 * 86400.0, "how long PLATFORM_EVENTS keeps events"),
    Option("stream_max_bytes", positive_int, 1024**3, "size limit of PLATFORM_EVENTS"),
    Option("stream_replicas", positive_int, 1, "replicas of the stream and KV buckets (3 in a NATS cluster)"),
    Option("alert_rules_file", optional_text, None, f"TOML alert rules (default {DEFAULT_RULES_FILE.name} in deploy/)"),
    Option("fetch_batch", positive_int, 256, "events fetched from the stream per request"),
    Option("log_level", one_of("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level"),
    Option("log_format", one_of("text", "json"), "text", "log line format"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings:
    nats_url: str = "nats://127.0.0.1:4222"
    metrics_host: str = "0.0.0.0"  # noqa: S104
    metrics_port: int = 9106
    publish_interval_seconds: float = 5.0
    heartbeat_seconds: float = 30.0
    persist_interval_seconds: float = 1.0
    active_window_seconds: float = 900.0
    dedup_window_seconds: float = 120.0
    timezone: str = "UTC"
    currency: str = "USD"
    stream_max_age_seconds: float = 30 * 86400.0
    stream_max_bytes: int = 1024**3
    stream_replicas: int = 1
    alert_rules_file: str | None = None
    fetch_batch: int = 256
    log_level: str = "INFO"
    log_format: str = "text"

    def __post_init__(self) -> None:
        self.zone  # noqa: B018 - validates the name at start-up
        if not self.rules_path.is_file():
            raise ConfigError("REALTIME_ALERT_RULES_FILE", f"no such file: {self.rules_path}")

    @property
    def zone(self) -> tzinfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError("REALTIME_TIMEZONE", f"unknown time zone {self.timezone!r}") from None

    @property
    def rules_path(self) -> Path:
        return Path(self.alert_rules_file) if self.alert_rules_file else DEFAULT_RULES_FILE

    @property
    def nats_servers(self) -> list[str]:
        return split_urls(self.nats_url)


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> CollectorSettings:
    return build_settings(
        CollectorSettings,
        OPTIONS,
        argv,
        environ,
        prog="python -m stats_collector",
        description="platform statistics collector",
    )

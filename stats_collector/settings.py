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
    build_settings,
    optional_text,
    port_number,
    positive_float,
    positive_int,
    setting,
    text,
)
from shared.process_settings import AlertStateSettings

DEFAULT_RULES_FILE: Final = Path(__file__).resolve().parents[1] / "deploy" / "alert-rules.toml"


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectorSettings(AlertStateSettings):
    """Everything the collector process is configured with; the README's table lists the same fields."""

    metrics_host: str = setting("0.0.0.0", text, "interface for /metrics, /healthz and /readyz")  # noqa: S104
    metrics_port: int = setting(9106, port_number, "port for /metrics, /healthz and /readyz (0: none)")
    publish_interval_seconds: float = setting(5.0, positive_float, "how often changed figures are published")
    heartbeat_seconds: float = setting(30.0, positive_float, "publish unchanged figures at least this often")
    persist_interval_seconds: float = setting(
        1.0, positive_float, "how often the checkpoint and the journal of ids and users are saved to KV"
    )
    active_window_seconds: float = setting(900.0, positive_float, "a user is active for this long after an event")
    dedup_window_seconds: float = setting(
        120.0, positive_float, "an id arriving again within this many seconds of its first arrival counts once"
    )
    future_tolerance_seconds: float = setting(
        300.0, positive_float, "events stamped further ahead of their arrival are dead-lettered"
    )
    max_remembered_ids: int = setting(
        1_000_000, positive_int, "ids remembered for the dedup window at most (beyond: oldest forgotten, alerted)"
    )
    max_active_users: int = setting(
        1_000_000, positive_int, "active users tracked at most (beyond: least recent dropped, alerted)"
    )
    max_unsaved_entries: int = setting(
        2_000_000, positive_int, "journal entries waiting for KV at most; beyond, reading pauses until saved"
    )
    journal_record_bytes: int = setting(131_072, positive_int, "largest journal value written to KV (bytes)")
    lease_ttl_seconds: float = setting(
        5.0, positive_float, "the active replica's lease lapses this long after its last renewal"
    )
    timezone: str = setting("UTC", text, "time zone whose midnight resets the daily figures")
    currency: str = setting("USD", text, "currency of revenue figures; payments in others are dead-lettered")
    stream_max_age_seconds: float = setting(30 * 86400.0, positive_float, "how long PLATFORM_EVENTS keeps events")
    stream_max_bytes: int = setting(1024**3, positive_int, "size limit of PLATFORM_EVENTS")
    stream_duplicate_window_seconds: float = setting(
        120.0, positive_float, "PLATFORM_EVENTS drops a re-publish with the same Nats-Msg-Id within this window"
    )
    stream_replicas: int = setting(1, positive_int, "replicas of the stream and KV buckets (3 in a NATS cluster)")
    history_max_age_seconds: float = setting(
        86400.0,
        positive_float,
        "how long PLATFORM_SNAPSHOTS keeps the published snapshots (the gateways' analytics history; "
        "they answer for 24 h at most)",
    )
    history_max_bytes: int = setting(
        64 * 1024**2, positive_int, "size limit of PLATFORM_SNAPSHOTS (beyond: oldest snapshots dropped)"
    )
    alert_rules_file: str | None = setting(None, optional_text, "TOML alert rules (default `deploy/alert-rules.toml`)")
    fetch_batch: int = setting(1000, positive_int, "events fetched from the stream per request")

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
    def user_window_seconds(self) -> float:
        """How long after its arrival an event can keep a user active (window plus future tolerance)."""
        return self.active_window_seconds + self.future_tolerance_seconds

    @property
    def rules_path(self) -> Path:
        return Path(self.alert_rules_file) if self.alert_rules_file else DEFAULT_RULES_FILE


def load_settings(argv: Sequence[str] | None, environ: Mapping[str, str]) -> CollectorSettings:
    return build_settings(
        CollectorSettings,
        argv,
        environ,
        prog="python -m stats_collector",
        description="platform statistics collector",
    )

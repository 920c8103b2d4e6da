"""Settings every process has: where NATS is and how to log. Each process's settings extend these."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import one_of, setting, split_urls, text


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSettings:
    """The NATS servers and the log format, shared by the gateway and the collector."""

    nats_url: str = setting("nats://127.0.0.1:4222", text, "NATS server URL(s), comma-separated")
    log_level: str = setting("INFO", one_of("DEBUG", "INFO", "WARNING", "ERROR"), "log level")
    log_format: str = setting("text", one_of("text", "json"), "log line format (`text` or `json`)")

    @property
    def nats_servers(self) -> list[str]:
        return split_urls(self.nats_url)

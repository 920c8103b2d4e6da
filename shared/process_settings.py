"""Settings every process has: where NATS is, how to prove who it is there, how to log, which event loop.

Each process's settings extend :class:`ProcessSettings`. Secrets (password, token, nkey seed, creds
file, TLS key) are never values of a flag or variable: the settings name *files*, which are read at
each connection attempt (a rotated Kubernetes Secret is picked up on the next attempt) and never
logged. ``REALTIME_NATS_URL`` may not carry credentials either.

Tools that publish without being a whole process (the simulator, ``stats_collector seed``) add the
same flags to their own parser with :func:`add_process_arguments` and read them back with
:func:`process_settings_from`.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from shared.config import (
    ConfigError,
    add_option_arguments,
    fail,
    one_of,
    optional_text,
    options_of,
    positive_float,
    positive_int,
    resolve_options,
    setting,
    split_urls,
)
from shared.event_loop import EVENT_LOOP_SETTINGS

NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")


def nats_urls(raw: str) -> str:
    """Comma-separated ``nats://`` / ``tls://`` URLs without user, password or token in them."""
    urls = split_urls(raw)
    if not urls:
        raise ValueError("give at least one URL")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in NATS_SCHEMES:
            raise ValueError(f"{url!r}: the scheme must be one of {', '.join(NATS_SCHEMES)}")
        if parts.username is not None or parts.password is not None:
            # Do not echo the URL: it carries a secret.
            raise ValueError("credentials in the URL are refused; use REALTIME_NATS_USER + *_FILE settings")
    return raw


def readable_file(raw: str) -> str | None:
    """A path to a file that exists now (its content is read later, at each connection attempt)."""
    if not raw:
        return None
    if not Path(raw).is_file():
        raise ValueError(f"no such file: {raw}")
    return raw


def inbox_prefix(raw: str) -> str:
    """A subject prefix such as ``_INBOX.gateway``: dot-separated tokens, no wildcards or spaces."""
    tokens = raw.split(".")
    if not raw or any(not token or set(token) & set("*> \t") for token in tokens):
        raise ValueError("must be dot-separated subject tokens without wildcards, e.g. _INBOX.gateway")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSettings:
    """The NATS servers, the NATS credentials and TLS, and the log format, shared by every process."""

    nats_url: str = setting("nats://127.0.0.1:4222", nats_urls, "NATS server URL(s), comma-separated (no credentials)")
    nats_user: str | None = setting(None, optional_text, "NATS user name (with `--nats-password-file`)")
    nats_password_file: str | None = setting(None, readable_file, "file holding the NATS user's password")
    nats_token_file: str | None = setting(None, readable_file, "file holding a NATS authentication token")
    nats_nkey_seed_file: str | None = setting(None, readable_file, "file holding the NATS user's nkey seed (`SU...`)")
    nats_creds_file: str | None = setting(None, readable_file, "NATS credentials file (user JWT + nkey seed)")
    nats_tls_ca_file: str | None = setting(
        None, readable_file, "PEM CA bundle that signs the NATS servers' certificates (implies TLS)"
    )
    nats_tls_cert_file: str | None = setting(
        None, readable_file, "PEM client certificate for mutual TLS (with `--nats-tls-key-file`)"
    )
    nats_tls_key_file: str | None = setting(None, readable_file, "PEM private key of the client certificate")
    nats_tls_server_name: str | None = setting(
        None, optional_text, "name the NATS servers' certificates must carry (default: the URL's host)"
    )
    nats_inbox_prefix: str = setting(
        "_INBOX", inbox_prefix, "prefix of this process's reply subjects (its NATS user may subscribe only there)"
    )
    log_level: str = setting("INFO", one_of("DEBUG", "INFO", "WARNING", "ERROR"), "log level")
    log_format: str = setting("text", one_of("text", "json"), "log line format (`text` or `json`)")
    replica_id: str | None = setting(
        None,
        optional_text,
        "this replica's name in NATS (KV entries, the collector's lease); default: host name and pid",
    )
    event_loop: str = setting(
        "auto",
        one_of(*EVENT_LOOP_SETTINGS),
        "event loop: `auto` (uvloop when installed, else asyncio), `uvloop` (exit 2 if missing) or `asyncio`",
    )

    @property
    def nats_servers(self) -> list[str]:
        return split_urls(self.nats_url)

    @property
    def replica_name(self) -> str:
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertStateSettings(ProcessSettings):
    """The limits of the shared alert state (:mod:`broker_bridge.alert_store`): the gateway and the
    collector both open its buckets, and whichever comes first creates them with these."""

    alert_retention_seconds: float = setting(
        86400.0,
        positive_float,
        "how long an alert's record and a silence are kept in KV after their last change (also the longest silence)",
    )
    max_alert_records: int = setting(
        1000, positive_int, "alert records kept in KV at most (beyond: the oldest written is dropped)"
    )


def add_process_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the :class:`ProcessSettings` flags to a tool's own parser (same names, variables and help)."""
    add_option_arguments(parser, options_of(ProcessSettings))


def process_settings_from(
    parser: argparse.ArgumentParser, namespace: argparse.Namespace, environ: Mapping[str, str]
) -> ProcessSettings:
    """The :class:`ProcessSettings` of parsed flags over ``environ``; a usage error names a bad key."""
    flags = {option.name: getattr(namespace, option.name, None) for option in options_of(ProcessSettings)}
    try:
        return ProcessSettings(**resolve_options(options_of(ProcessSettings), flags, environ))
    except ConfigError as error:
        fail(parser, error)

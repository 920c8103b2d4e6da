"""How a process connects to NATS: servers, credentials, TLS and retry timing, as one frozen value.

:func:`nats_options` turns a process's :class:`~shared.process_settings.ProcessSettings` into
:class:`NatsOptions` (both processes, the simulator and ``seed`` use it). :func:`client_arguments`
turns those into nats-py ``connect()`` keywords *at each attempt*: password, token and key files are
read then, so a rotated Secret is used on the next attempt, and nothing secret is kept in a value
that a ``repr`` or a log line could print.

TLS is on when a CA, a client certificate or a ``tls://`` URL is configured. The client then starts
TLS before the server says anything (``tls_handshake_first``; the servers accept it with
``handshake_first: <duration>``), so neither the INFO nor the credentials ever cross the network in
clear text, and a server that does not speak TLS cannot downgrade the connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from shared.process_settings import ProcessSettings

# TLS 1.2 is the oldest version nats-server accepts by default; nothing older is offered.
MIN_TLS_VERSION: Final = ssl.TLSVersion.TLSv1_2


class NatsConfigError(ValueError):
    """A combination of NATS settings that cannot work; the message names the variables."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsAuth:
    """How the client proves who it is: paths only (the secrets stay in their files)."""

    user: str | None = None
    password_file: str | None = None
    token_file: str | None = None
    nkey_seed_file: str | None = None
    creds_file: str | None = None

    @property
    def method(self) -> str:
        """``user/password``, ``token``, ``nkey``, ``creds`` or ``none`` (for log lines and docs)."""
        if self.creds_file:
            return "creds"
        if self.nkey_seed_file:
            return "nkey"
        if self.token_file:
            return "token"
        if self.user:
            return "user/password"
        return "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsTls:
    """Server verification (CA bundle, expected name) and the optional client certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """A fresh client context: verify the server (with ``ca_file``, else the system store)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = MIN_TLS_VERSION
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsOptions:
    """Connection settings passed to nats-py; see README "NATS reconnects" and "Securing NATS"."""

    servers: list[str]
    name: str
    auth: NatsAuth = field(default_factory=NatsAuth)
    tls: NatsTls | None = None
    inbox_prefix: str = "_INBOX"
    reconnect_time_wait_seconds: float = 1.0
    connect_timeout_seconds: float = 2.0
    ping_interval_seconds: float = 10.0
    max_outstanding_pings: int = 3
    publish_flush_timeout_seconds: float = 2.0
    drain_timeout_seconds: float = 5.0
    # Until the first connection succeeds the broker retries on its own, backing off between attempts:
    # quickly at first (a server restarting), then slowly enough that a wrong credential costs one log
    # line and one rejected attempt per interval, not a busy loop against the server.
    connect_retry_first_seconds: float = 0.5
    connect_retry_max_seconds: float = 15.0


def nats_options(settings: ProcessSettings, *, name: str) -> NatsOptions:
    """The NATS options of a process; :class:`NatsConfigError` names conflicting settings."""
    auth = NatsAuth(
        user=settings.nats_user,
        password_file=settings.nats_password_file,
        token_file=settings.nats_token_file,
        nkey_seed_file=settings.nats_nkey_seed_file,
        creds_file=settings.nats_creds_file,
    )
    methods = [
        variable
        for variable, value in (
            ("REALTIME_NATS_USER", auth.user),
            ("REALTIME_NATS_TOKEN_FILE", auth.token_file),
            ("REALTIME_NATS_NKEY_SEED_FILE", auth.nkey_seed_file),
            ("REALTIME_NATS_CREDS_FILE", auth.creds_file),
        )
        if value
    ]
    if len(methods) > 1:
        raise NatsConfigError(f"{' / '.join(methods)}: set only one way to authenticate")
    if bool(auth.user) != bool(auth.password_file):
        raise NatsConfigError("REALTIME_NATS_USER / REALTIME_NATS_PASSWORD_FILE: set both or neither")
    if bool(settings.nats_tls_cert_file) != bool(settings.nats_tls_key_file):
        raise NatsConfigError("REALTIME_NATS_TLS_CERT_FILE / REALTIME_NATS_TLS_KEY_FILE: set both or neither")
    wants_tls = any(urlsplit(url).scheme in ("tls", "wss") for url in settings.nats_servers)
    tls = None
    if wants_tls or settings.nats_tls_ca_file or settings.nats_tls_cert_file:
        tls = NatsTls(
            ca_file=settings.nats_tls_ca_file,
            cert_file=settings.nats_tls_cert_file,
            key_file=settings.nats_tls_key_file,
            server_name=settings.nats_tls_server_name,
        )
    return NatsOptions(
        servers=settings.nats_servers, name=name, auth=auth, tls=tls, inbox_prefix=settings.nats_inbox_prefix
    )


def nats_options_or_exit(settings: ProcessSettings, *, name: str, prog: str) -> NatsOptions:
    """:func:`nats_options`, or exit with ``<prog>: error: ...`` (a usage error, no traceback)."""
    try:
        return nats_options(settings, name=name)
    except NatsConfigError as error:
        raise SystemExit(f"{prog}: error: {error}") from None


def read_secret(path: str) -> str:
    """The first line of a secret file, without the newline a text editor or ``echo`` adds."""
    text = Path(path).read_text()
    return text.splitlines()[0].strip() if text.strip() else ""


def client_arguments(options: NatsOptions) -> dict[str, Any]:
    """nats-py ``connect()`` keywords for credentials and TLS, reading the secret files now.

    Raises ``OSError`` when a file cannot be read and ``ssl.SSLError`` when a certificate or key
    cannot be loaded; the caller reports either as the cause of a failed attempt.
    """
    auth = options.auth
    arguments: dict[str, Any] = {"inbox_prefix": options.inbox_prefix}
    if auth.user and auth.password_file:
        arguments["user"] = auth.user
        arguments["password"] = read_secret(auth.password_file)
    if auth.token_file:
        arguments["token"] = read_secret(auth.token_file)
    if auth.nkey_seed_file:
        read_secret(auth.nkey_seed_file)  # fail this attempt now, naming the file, if it is unreadable
        arguments["nkeys_seed"] = auth.nkey_seed_file
    if auth.creds_file:
        read_secret(auth.creds_file)
        arguments["user_credentials"] = auth.creds_file
    if options.tls is not None:
        arguments["tls"] = options.tls.context()
        arguments["tls_handshake_first"] = True
        if options.tls.server_name:
            arguments["tls_hostname"] = options.tls.server_name
    return arguments

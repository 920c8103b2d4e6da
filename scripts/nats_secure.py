"""A secured NATS deployment on one machine: certificates, users and server options, generated at start.

``make cluster`` and the integration tests use :class:`SecureNats` to lock their nats-servers down
the way production is (README "Securing NATS"): TLS on client and route connections with mutual
TLS for clients, TLS before INFO (``handshake_first``), account ``REALTIME`` with one nkey user per
component and role, and nothing reachable without credentials::

    secure = SecureNats.create(directory, nodes=["n1", "n2", "n3"])
    NatsServer(..., options=secure.server_options("n1"), routes=..., scheme="tls")
    env = secure.client_env("gateway")          # REALTIME_NATS_* for the gateway's process
    kwargs = secure.client_kwargs("admin")      # nats-py connect() keywords (tests, setup)

Every component has its own nkey seed (``<dir>/users/<component>.nk``) and client certificate
(``<dir>/tls/<component>.pem``); the CA is ``<dir>/tls/ca.pem``. Secrets are files with mode 0600.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import nkeys

from scripts.nats_accounts import NatsUser, accounts_block, inbox, issue_nkey_user, write_secret
from scripts.nats_pki import Authority, Pki, issue_pki
from scripts.processes import ConfigValue

# Component -> role. Each component gets its own credentials even where roles repeat.
COMPONENTS: Final = {
    "admin": "admin",
    "gateway": "gateway",
    "collector": "collector",
    "simulator": "event-publisher",
    "events": "event-publisher",
    "alerts": "hub-publisher",
}
# How long the server waits for a client's TLS ClientHello before sending INFO in clear text (for
# clients that cannot start TLS first; ours always do).
HANDSHAKE_FIRST_FALLBACK: Final = "300ms"
# A TLS handshake on a loaded 2-core machine can take longer than the server's 2 s default.
TLS_TIMEOUT_SECONDS: Final = 5.0


@dataclass(frozen=True, slots=True)
class SecureNats:
    """The certificates and users of one secured deployment, all under ``directory``."""

    directory: Path
    pki: Pki
    users: Mapping[str, NatsUser]
    seeds: Mapping[str, Path]

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        nodes: Sequence[str] = ("nats",),
        components: Mapping[str, str] = COMPONENTS,
        password_users: Mapping[str, tuple[str, str]] | None = None,
    ) -> SecureNats:
        """New certificates and nkeys for ``nodes`` and ``components``; ``password_users`` adds
        user/password users (name -> (role, password)), for tests of that path."""
        pki = issue_pki(directory / "tls", servers=nodes, clients=list(components))
        users: dict[str, NatsUser] = {}
        seeds: dict[str, Path] = {}
        for component, role in components.items():
            users[component], seeds[component] = issue_nkey_user(directory / "users", component, role)
        for name, (role, password) in (password_users or {}).items():
            users[name] = NatsUser(name=name, role=role, password=password)
        return cls(directory=directory, pki=pki, users=users, seeds=seeds)

    @classmethod
    def load(cls, directory: Path, *, components: Mapping[str, str] = COMPONENTS) -> SecureNats:
        """What :meth:`create` wrote into ``directory`` (for a later command on the same cluster)."""
        tls = directory / "tls"
        pki = Pki(tls, Authority(tls / "ca.pem", tls / "ca-key.pem"))
        users: dict[str, NatsUser] = {}
        seeds: dict[str, Path] = {}
        for component, role in components.items():
            seeds[component] = directory / "users" / f"{component}.nk"
            keypair = nkeys.from_seed(bytearray(seeds[component].read_bytes().strip()))
            try:
                users[component] = NatsUser(name=component, role=role, nkey=keypair.public_key.decode())
            finally:
                keypair.wipe()
        return cls(directory=directory, pki=pki, users=users, seeds=seeds)

    def server_options(self, node: str, *, verify_clients: bool = True) -> dict[str, ConfigValue]:
        """``tls`` (clients) and ``accounts`` blocks for one node's config."""
        pair = self.pki.server(node)
        tls: dict[str, ConfigValue] = {
            "cert_file": pair.cert,
            "key_file": pair.key,
            "ca_file": self.pki.ca,
            "verify": verify_clients,
            "timeout": TLS_TIMEOUT_SECONDS,
            "handshake_first": HANDSHAKE_FIRST_FALLBACK,
        }
        return {"tls": tls, "accounts": accounts_block(self.users.values())}

    def route_tls(self, node: str) -> dict[str, ConfigValue]:
        """The ``cluster { tls {} }`` block: routes authenticate each other with the same CA."""
        pair = self.pki.server(node)
        return {
            "cert_file": pair.cert,
            "key_file": pair.key,
            "ca_file": self.pki.ca,
            "verify": True,
            "timeout": TLS_TIMEOUT_SECONDS,
        }

    def client_env(self, component: str) -> dict[str, str]:
        """``REALTIME_NATS_*`` variables giving ``component`` its nkey, client certificate and CA."""
        pair = self.pki.client(component)
        return {
            "REALTIME_NATS_NKEY_SEED_FILE": str(self.seeds[component]),
            "REALTIME_NATS_TLS_CA_FILE": str(self.pki.ca),
            "REALTIME_NATS_TLS_CERT_FILE": str(pair.cert),
            "REALTIME_NATS_TLS_KEY_FILE": str(pair.key),
            "REALTIME_NATS_INBOX_PREFIX": inbox(self.users[component].role),
        }

    def password_env(self, name: str, component: str) -> dict[str, str]:
        """Variables for a user/password user (the password goes into ``<dir>/users/<name>.password``),
        with ``component``'s client certificate."""
        user = self.users[name]
        assert user.password is not None
        password_file = self.directory / "users" / f"{name}.password"
        write_secret(password_file, user.password.encode())
        env = {key: value for key, value in self.client_env(component).items() if "NKEY" not in key}
        return {
            **env,
            "REALTIME_NATS_USER": name,
            "REALTIME_NATS_PASSWORD_FILE": str(password_file),
            "REALTIME_NATS_INBOX_PREFIX": inbox(user.role),
        }

    def ssl_context(self, component: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        pair = self.pki.client(component)
        context.load_cert_chain(str(pair.cert), str(pair.key))
        return context

    def client_kwargs(self, component: str) -> dict[str, Any]:
        """nats-py ``connect()`` keywords for ``component`` (its nkey, certificate and inbox prefix)."""
        return {
            "nkeys_seed": str(self.seeds[component]),
            "tls": self.ssl_context(component),
            "tls_handshake_first": True,
            "inbox_prefix": inbox(self.users[component].role),
        }

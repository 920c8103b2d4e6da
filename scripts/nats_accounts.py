"""Who may do what on NATS: the roles, their subject permissions, and the server's ``accounts`` block.

One account, ``REALTIME`` (JetStream enabled), holds every user of this system; each user has one
role, and the role's permissions are enforced by nats-server on every PUB and SUB:

* ``gateway`` - the fan-out: publish and subscribe ``realtime.>``, the fan-out stream, its KV buckets and
  the shared alert state's; requests between replicas (serve ``realtime.replica.*.*``, answer into the
  gateways' inbox); reads ``PLATFORM_SNAPSHOTS`` (the analytics history) without being able to change it;
* ``collector`` - consumes ``PLATFORM_EVENTS``, owns its streams and ``COLLECTOR_*`` buckets, writes
  ``REALTIME_SNAPSHOT`` and ``REALTIME_ALERTS``, reads ``REALTIME_ALERT_SILENCES``, appends to
  ``PLATFORM_SNAPSHOTS``, publishes ``realtime.group.*``, answers the gateways'
  ``realtime.collector.rules.*`` requests (``allow_responses``);
* ``event-publisher`` - internal services: ``platform.events.>`` (and ``platform.metrics.>``);
* ``hub-publisher`` - internal services that push to dashboards: ``realtime.group.*`` / ``realtime.user.*``,
  no subscriptions at all;
* ``admin`` - stream management and incident work: everything.

Each role that makes requests has its own reply-subject prefix (``_INBOX.<role>``; the process is
given it as ``REALTIME_NATS_INBOX_PREFIX``) and may subscribe only there, so no user can read the
replies meant for another role. The JetStream API (``$JS.API.>``) is granted subject by subject for
the streams and buckets the role uses. NATS wildcards match whole tokens, so a prefix such as
``COLLECTOR_`` cannot be a pattern: the collector's resources are every ``COLLECTOR_*`` name declared
in :mod:`stats_collector.jetstream` (see :func:`collector_resources`), and a unit test fails when the
collector's code names one the role does not cover.

Users authenticate with nkeys (the server keeps only the public key) or, where a client cannot, a
user name and password. ``python -m scripts.nats_accounts`` issues credentials::

    python -m scripts.nats_accounts issue --role event-publisher --name billing   # seed + users.toml + accounts.conf
    python -m scripts.nats_accounts render                                         # accounts.conf from users.toml
    python -m scripts.nats_accounts table                                          # the README's permissions table
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import nkeys

from broker_bridge.alert_store import ALERTS_BUCKET, SILENCES_BUCKET
from broker_bridge.feed_stream import FANOUT_STREAM
from broker_bridge.keyvalue import (
    CLAIMS_BUCKET,
    CONNECTIONS_BUCKET,
    PRESENCE_BUCKET,
    REPLICAS_BUCKET,
    SNAPSHOT_BUCKET,
)
from broker_bridge.snapshot_stream import SNAPSHOTS_STREAM
from broker_bridge.subjects import (
    ALL_SUBJECT,
    COLLECTOR_RULES_PREFIX,
    GROUP_PREFIX,
    REPLICA_PREFIX,
    SNAPSHOTS_SUBJECT,
    SUBJECT_ROOT,
    USER_PREFIX,
)
from scripts.processes import ConfigValue, Verbatim, render_config
from stats_collector import jetstream
from stats_collector.events import EVENTS_SUBJECT_PREFIX, METRICS_SUBJECT_PREFIX

ROOT: Final = Path(__file__).resolve().parents[1]
ACCOUNT: Final = "REALTIME"
USERS_FILE: Final = ROOT / "deploy" / "nats" / "users.toml"
ACCOUNTS_FILE: Final = ROOT / "deploy" / "nats" / "accounts.conf"
JS_API: Final = "$JS.API"
# A collector resource is any name of this form declared in stats_collector.jetstream.
COLLECTOR_NAME: Final = re.compile(r"COLLECTOR_[A-Z0-9_]+")


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subjects a user may publish to and subscribe to; an empty ``subscribe`` means none at all."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # What the JetStream part of ``publish`` amounts to, for people (the README table).
    jetstream: tuple[str, ...] = ()
    # May answer the requests it receives (one reply each, to the requester's reply subject only).
    answers_requests: bool = False

    def block(self) -> dict[str, ConfigValue]:
        subscribe: dict[str, ConfigValue] = {"allow": list(self.subscribe)} if self.subscribe else {"deny": [">"]}
        block: dict[str, ConfigValue] = {"publish": {"allow": list(self.publish)}, "subscribe": subscribe}
        if self.answers_requests:
            block["allow_responses"] = {"max": 1}
        return block


def inbox(role: str) -> str:
    """The reply-subject prefix of a role's processes (``REALTIME_NATS_INBOX_PREFIX``)."""
    return f"_INBOX.{role}"


def stream_reader(stream: str) -> list[str]:
    """Read a stream through consumers of one's own: look it up, create/inspect/delete consumers,
    pull the next messages, ack them and answer flow control."""
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def stream_owner(stream: str) -> list[str]:
    """Create a stream and change its limits (never delete or purge it), and read it."""
    return [f"{JS_API}.STREAM.CREATE.{stream}", f"{JS_API}.STREAM.UPDATE.{stream}", *stream_reader(stream)]


def kv_reader(bucket: str) -> list[str]:
    """Open (creating it with the caller's settings if missing), get, list keys of a KV bucket."""
    stream = f"KV_{bucket}"
    return [
        f"{JS_API}.STREAM.CREATE.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        *stream_reader(stream),
    ]


def kv_writer(bucket: str) -> list[str]:
    """:func:`kv_reader` plus put, create and delete of keys (``$KV.<bucket>.<key>``)."""
    return [*kv_reader(bucket), f"$KV.{bucket}.>"]


def collector_resources(module: object = jetstream) -> tuple[str, ...]:
    """Every ``COLLECTOR_*`` stream or bucket name the collector declares (constants of its module)."""
    names = {value for value in vars(module).values() if isinstance(value, str) and COLLECTOR_NAME.fullmatch(value)}
    return tuple(sorted(names))


def roles() -> dict[str, Permissions]:
    """The permissions of every role, by role name."""
    collector_own = [
        subject
        for name in collector_resources()
        # A COLLECTOR_* name may be a bucket or a stream: the role may use it as either.
        for subject in (*kv_writer(name), *stream_owner(name))
    ]
    return {
        "gateway": Permissions(
            publish=(
                f"{SUBJECT_ROOT}.>",
                *stream_owner(FANOUT_STREAM),
                *stream_reader(SNAPSHOTS_STREAM),
                *kv_reader(SNAPSHOT_BUCKET),
                *kv_writer(REPLICAS_BUCKET),
                *kv_writer(CLAIMS_BUCKET),
                *kv_writer(CONNECTIONS_BUCKET),
                *kv_writer(PRESENCE_BUCKET),
                *kv_writer(ALERTS_BUCKET),
                *kv_writer(SILENCES_BUCKET),
                # Answers to requests forwarded by other replicas (which ask with this inbox prefix).
                inbox("gateway") + ".>",
            ),
            subscribe=(
                GROUP_PREFIX + "*",
                USER_PREFIX + "*",
                ALL_SUBJECT,
                REPLICA_PREFIX + "*.*",
                inbox("gateway") + ".>",
            ),
            jetstream=(
                f"own and consume {FANOUT_STREAM}",
                f"consume {SNAPSHOTS_STREAM}",
                f"read KV {SNAPSHOT_BUCKET}",
                f"write KV {REPLICAS_BUCKET}, {CLAIMS_BUCKET}, {CONNECTIONS_BUCKET}, {PRESENCE_BUCKET}, "
                f"{ALERTS_BUCKET}, {SILENCES_BUCKET}",
            ),
        ),
        "collector": Permissions(
            publish=(
                GROUP_PREFIX + "*",
                jetstream.DEADLETTER_PREFIX + ">",
                SNAPSHOTS_SUBJECT,
                *stream_owner(jetstream.EVENTS_STREAM),
                *stream_owner(jetstream.DEADLETTER_STREAM),
                *stream_owner(SNAPSHOTS_STREAM),
                *kv_writer(SNAPSHOT_BUCKET),
                *kv_writer(ALERTS_BUCKET),
                *kv_reader(SILENCES_BUCKET),
                *collector_own,
            ),
            # The gateways' requests to list and reload the alert rules, answered through allow_responses
            # (one reply per request), not by a publish permission into the gateways' inbox.
            subscribe=(METRICS_SUBJECT_PREFIX + ">", COLLECTOR_RULES_PREFIX + "*", inbox("collector") + ".>"),
            answers_requests=True,
            jetstream=(
                f"own and consume {jetstream.EVENTS_STREAM}, {jetstream.DEADLETTER_STREAM}, {SNAPSHOTS_STREAM}",
                f"write KV {SNAPSHOT_BUCKET}, {ALERTS_BUCKET}; read KV {SILENCES_BUCKET}",
                f"own every `COLLECTOR_*` name in stats_collector/jetstream.py as KV or stream "
                f"(now: {', '.join(collector_resources())})",
            ),
        ),
        "event-publisher": Permissions(
            publish=(EVENTS_SUBJECT_PREFIX + ">", METRICS_SUBJECT_PREFIX + ">"),
            subscribe=(inbox("event-publisher") + ".>",),
            jetstream=("none (events are stored by PLATFORM_EVENTS; the ack comes to its inbox)",),
        ),
        "hub-publisher": Permissions(
            publish=(GROUP_PREFIX + "*", USER_PREFIX + "*"), subscribe=(), jetstream=("none",)
        ),
        "admin": Permissions(publish=(">",), subscribe=(">",), jetstream=("everything",)),
    }


ROLE_SUMMARY: Final = {
    "gateway": "fan-out replicas (`python -m gateway`)",
    "collector": "`python -m stats_collector` and its `seed` command",
    "event-publisher": "internal services that report platform events; the simulator",
    "hub-publisher": "internal services that push messages to dashboards",
    "admin": "people and jobs that manage streams and buckets (setup Job, `make cluster`)",
}


@dataclass(frozen=True, slots=True)
class NatsUser:
    """One user of the account: a name (for people; NATS does not see it with nkeys), a role, and
    either a public nkey (``U...``) or a user name with a password (tests only; prefer nkeys)."""

    name: str
    role: str
    nkey: str | None = None
    password: str | None = field(default=None, repr=False)

    def entry(self, permissions: Mapping[str, Permissions]) -> dict[str, ConfigValue]:
        if self.role not in permissions:
            raise ValueError(f"user {self.name}: unknown role {self.role!r} (one of {', '.join(permissions)})")
        if self.nkey is not None:
            who: dict[str, ConfigValue] = {"nkey": self.nkey}
        elif self.password is not None:
            who = {"user": self.name, "password": self.password}
        else:
            raise ValueError(f"user {self.name}: give an nkey or a password")
        return {**who, "permissions": permissions[self.role].block()}


def accounts_block(users: Iterable[NatsUser]) -> dict[str, ConfigValue]:
    """The server's ``accounts`` option: account ``REALTIME`` with JetStream and ``users``."""
    permissions = roles()
    entries: list[ConfigValue] = [user.entry(permissions) for user in users]
    return {ACCOUNT: {"jetstream": Verbatim("enabled"), "users": entries}}


def accounts_conf(users: Sequence[NatsUser]) -> str:
    """``accounts.conf`` for the Helm chart (included by the server config), with a header.

    A config without users would leave nats-server without authentication at all: refused."""
    if not users:
        raise ValueError("no NATS users: a server without users accepts anyone; issue some first")
    lines = [
        "# Generated by `python -m scripts.nats_accounts render` from deploy/nats/users.toml; do not edit.",
        '# Roles and their permissions: scripts/nats_accounts.py and README "Securing NATS".',
        *(f"#   {user.name}: {user.role}" for user in users),
        render_config({"accounts": accounts_block(users)}),
    ]
    return "\n".join(lines) + "\n"


# -- nkeys --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserKey:
    seed: bytes = field(repr=False)
    public: str


def new_user_key() -> UserKey:
    """A fresh user nkey: the seed (``SU...``, the secret) and its public key (``U...``)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    keypair = nkeys.from_seed(bytearray(seed))
    try:
        return UserKey(seed=bytes(seed), public=keypair.public_key.decode())
    finally:
        keypair.wipe()


def write_secret(path: Path, content: bytes) -> None:
    """Write a secret file readable by its owner only (replacing what was there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content + b"\n")
    path.chmod(0o600)


def issue_nkey_user(directory: Path, name: str, role: str) -> tuple[NatsUser, Path]:
    """A new nkey user: its seed in ``<directory>/<name>.nk`` (0600) and the :class:`NatsUser`."""
    if role not in roles():
        raise ValueError(f"unknown role {role!r}")
    key = new_user_key()
    path = directory / f"{name}.nk"
    write_secret(path, key.seed)
    return NatsUser(name=name, role=role, nkey=key.public), path


# -- users.toml ----------------------------------------------------------------------------------------


def load_users(path: Path = USERS_FILE) -> list[NatsUser]:
    """The users of ``users.toml`` (``[[user]]`` tables with ``name``, ``role``, ``nkey``)."""
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    users = [NatsUser(name=item["name"], role=item["role"], nkey=item["nkey"]) for item in data.get("user", [])]
    names = [user.name for user in users]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: a user name appears twice")
    return users


def users_toml(users: Sequence[NatsUser]) -> str:
    lines = [
        "# The NATS users of realtime-admin: one [[user]] per service, with its role and PUBLIC nkey.",
        '# Add one with `python -m scripts.nats_accounts issue --role ROLE --name NAME` (README "Securing NATS").',
        "# Public keys are not secrets; the seeds stay with each service (a Kubernetes Secret).",
        "# The keys committed here have no seed anywhere: issue your own (same names) before deploying.",
    ]
    for user in users:
        lines += ["", "[[user]]", f'name = "{user.name}"', f'role = "{user.role}"', f'nkey = "{user.nkey}"']
    return "\n".join(lines) + "\n"


def permissions_table() -> str:
    """The README's table: each role, what it is for, what it may publish and subscribe to."""
    rows = ["| role | for | publish | JetStream | subscribe |", "| --- | --- | --- | --- | --- |"]
    for role, permissions in roles().items():
        core = [subject for subject in _compact(permissions.publish) if not subject.startswith("$")]
        publish = ", ".join(f"`{subject}`" for subject in core)
        subscribe = ", ".join(f"`{subject}`" for subject in permissions.subscribe) or "nothing"
        if permissions.answers_requests:
            subscribe += " (answers them once each: `allow_responses`)"
        jetstream_text = "; ".join(permissions.jetstream)
        rows.append(f"| `{role}` | {ROLE_SUMMARY[role]} | {publish} | {jetstream_text} | {subscribe} |")
    return "\n".join(rows) + "\n"


def _compact(subjects: Iterable[str]) -> list[str]:
    """Subjects without duplicates, in their first order (roles list some twice)."""
    return list(dict.fromkeys(subjects))


# -- command line -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.nats_accounts", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    issue = commands.add_parser("issue", help="new nkey user: seed file, users.toml entry, accounts.conf")
    issue.add_argument("--role", required=True, choices=sorted(roles()))
    issue.add_argument("--name", required=True, help="service name, e.g. billing (a Kubernetes name)")
    issue.add_argument("--dir", type=Path, default=ROOT / ".run" / "nats-credentials", help="where the seed goes")
    issue.add_argument("--users", type=Path, default=USERS_FILE)
    issue.add_argument("--accounts", type=Path, default=ACCOUNTS_FILE)
    render = commands.add_parser("render", help="rewrite accounts.conf from users.toml")
    render.add_argument("--users", type=Path, default=USERS_FILE)
    render.add_argument("--accounts", type=Path, default=ACCOUNTS_FILE)
    commands.add_parser("table", help="print the permissions table (markdown)")
    args = parser.parse_args(argv)
    if args.command == "table":
        print(permissions_table(), end="")
        return 0
    users = load_users(args.users)
    if args.command == "issue":
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", args.name):
            parser.error("--name must be a Kubernetes name: lower-case letters, digits and '-'")
        user, seed_path = issue_nkey_user(args.dir, args.name, args.role)
        users = [existing for existing in users if existing.name != user.name] + [user]
        args.users.write_text(users_toml(users))
        print(f"seed (secret): {seed_path}\npublic key:    {user.nkey}")
        print(f"next: kubectl -n realtime-admin create secret generic {user.name}-nats --from-file=nkey={seed_path}")
        print("      then `helm upgrade` NATS as in deploy/README.md (the server reloads its users)")
    args.accounts.write_text(accounts_conf(users))
    print(f"wrote {os.path.relpath(args.accounts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

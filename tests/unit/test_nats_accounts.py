"""The roles NATS enforces: least privilege, written down once, and the files made from it."""

from __future__ import annotations

import re
from pathlib import Path

import nkeys

from broker_bridge.alert_store import ALERTS_BUCKET, SILENCES_BUCKET
from broker_bridge.keyvalue import CLAIMS_BUCKET, REPLICAS_BUCKET, SNAPSHOT_BUCKET
from broker_bridge.snapshot_stream import SNAPSHOTS_STREAM
from broker_bridge.subjects import COLLECTOR_RULES_LIST, COLLECTOR_RULES_RELOAD, SNAPSHOTS_SUBJECT
from scripts import nats_accounts
from scripts.nats_accounts import (
    ACCOUNTS_FILE,
    USERS_FILE,
    NatsUser,
    accounts_conf,
    collector_resources,
    load_users,
    new_user_key,
    permissions_table,
    roles,
)
from scripts.processes import ROOT
from stats_collector import jetstream


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` one token, ``>`` one or more trailing tokens."""
    pattern_tokens, subject_tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens) or (token != "*" and token != subject_tokens[index]):
            return False
    return len(pattern_tokens) == len(subject_tokens)


def may_publish(role: str, subject: str) -> bool:
    return any(matches(pattern, subject) for pattern in roles()[role].publish)


def may_subscribe(role: str, subject: str) -> bool:
    return any(matches(pattern, subject) for pattern in roles()[role].subscribe)


def test_publishers_publish_their_subjects_only() -> None:
    assert may_publish("event-publisher", "platform.events.user.active")
    assert not may_publish("event-publisher", "realtime.group.alerts")
    assert not may_publish("event-publisher", "platform.deadletter.bad")
    assert may_publish("hub-publisher", "realtime.group.alerts")
    assert may_publish("hub-publisher", "realtime.user.u1")
    assert not may_publish("hub-publisher", "realtime.all")
    for role in ("event-publisher", "hub-publisher"):
        assert not may_publish(role, "$JS.API.STREAM.DELETE.PLATFORM_EVENTS")
        assert not may_publish(role, f"$KV.{SNAPSHOT_BUCKET}.platform")
        assert not may_subscribe(role, "realtime.user.u1")
    assert roles()["hub-publisher"].subscribe == ()
    assert roles()["hub-publisher"].block()["subscribe"] == {"deny": [">"]}


def test_the_gateway_reads_the_snapshot_and_writes_only_its_own_buckets() -> None:
    assert may_publish("gateway", "realtime.group.alerts") and may_subscribe("gateway", "realtime.user.u1")
    assert may_subscribe("gateway", "realtime.all") and not may_subscribe("gateway", "platform.metrics.cpu")
    assert may_publish("gateway", f"$JS.API.DIRECT.GET.KV_{SNAPSHOT_BUCKET}.$KV.{SNAPSHOT_BUCKET}.platform")
    assert not may_publish("gateway", f"$KV.{SNAPSHOT_BUCKET}.platform")
    for bucket in (REPLICAS_BUCKET, CLAIMS_BUCKET):
        assert may_publish("gateway", f"$KV.{bucket}.key")
    assert not may_publish("gateway", "$JS.API.STREAM.DELETE.PLATFORM_EVENTS")
    assert not may_publish("gateway", "$JS.API.STREAM.INFO.PLATFORM_EVENTS")
    assert not may_publish("gateway", "platform.events.user.active")
    assert not any(
        subject.startswith("$JS.API.STREAM.DELETE")
        for role in roles().values()
        for subject in role.publish
        if role is not roles()["admin"]
    )


def test_the_collector_writes_the_snapshot_history_and_gateways_only_read_it() -> None:
    writes = (
        SNAPSHOTS_SUBJECT,
        f"$JS.API.STREAM.CREATE.{SNAPSHOTS_STREAM}",
        f"$JS.API.STREAM.UPDATE.{SNAPSHOTS_STREAM}",
    )
    for subject in writes:
        assert may_publish("collector", subject), subject
    # A gateway reads the stream with an ordered consumer: stream info, consumer create, next, flow control.
    reads = (
        f"$JS.API.STREAM.INFO.{SNAPSHOTS_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{SNAPSHOTS_STREAM}",
        f"$JS.API.CONSUMER.MSG.NEXT.{SNAPSHOTS_STREAM}.c1",
        f"$JS.FC.{SNAPSHOTS_STREAM}.c1.1",
    )
    for subject in reads:
        assert may_publish("gateway", subject), subject
    for role in ("gateway", "event-publisher", "hub-publisher"):
        assert not may_publish(role, SNAPSHOTS_SUBJECT), role
        for verb in ("CREATE", "UPDATE", "DELETE", "PURGE"):
            assert not may_publish(role, f"$JS.API.STREAM.{verb}.{SNAPSHOTS_STREAM}"), (role, verb)
    for role in ("event-publisher", "hub-publisher"):
        assert not may_publish(role, f"$JS.API.CONSUMER.CREATE.{SNAPSHOTS_STREAM}"), role


def test_no_role_but_admin_may_delete_or_purge_anything() -> None:
    for name, role in roles().items():
        if name == "admin":
            continue
        for subject in role.publish:
            assert not re.search(r"\.(DELETE|PURGE)\.", subject) or ".CONSUMER.DELETE." in subject, (name, subject)
            assert subject != ">", name


def test_each_role_reads_replies_under_its_own_inbox_only() -> None:
    for name in ("gateway", "collector", "event-publisher"):
        inboxes = [s for s in roles()[name].subscribe if s.startswith("_INBOX")]
        assert inboxes == [f"_INBOX.{name}.>"]


def test_the_collector_covers_every_collector_resource_its_code_names() -> None:
    """NATS wildcards match whole tokens, so COLLECTOR_* is covered by name: any COLLECTOR_ name in the
    collector's code must be a constant of stats_collector.jetstream, which the role reads."""
    named = set()
    for path in (ROOT / "stats_collector").rglob("*.py"):
        named |= set(re.findall(r"[\"'](COLLECTOR_[A-Z0-9_]+)[\"']", path.read_text()))
    assert named, "the collector names no COLLECTOR_ resource?"
    assert named <= set(collector_resources()), (
        f"add these to stats_collector/jetstream.py: {named - set(collector_resources())}"
    )
    for name in collector_resources():
        assert may_publish("collector", f"$KV.{name}.aggregate")
        assert may_publish("collector", f"$JS.API.STREAM.CREATE.KV_{name}")
        assert may_publish("collector", f"$JS.API.STREAM.UPDATE.{name}")
    assert may_publish("collector", f"$KV.{SNAPSHOT_BUCKET}.platform")
    assert may_publish("collector", f"$JS.API.CONSUMER.MSG.NEXT.{jetstream.EVENTS_STREAM}.c1")
    assert may_publish("collector", f"$JS.ACK.{jetstream.EVENTS_STREAM}.c1.1.2.3.4.0")
    assert may_publish("collector", "realtime.group.analytics") and not may_publish("collector", "realtime.user.u")
    assert not may_publish("collector", f"$JS.API.STREAM.DELETE.{jetstream.EVENTS_STREAM}")


def test_a_new_collector_bucket_is_covered_without_editing_the_roles() -> None:
    class Module:
        STATE_BUCKET = "COLLECTOR_STATE"
        LEASE_BUCKET = "COLLECTOR_LEASE"
        OTHER = "PLATFORM_EVENTS"

    assert collector_resources(Module) == ("COLLECTOR_LEASE", "COLLECTOR_STATE")


def test_user_keys_are_nkeys() -> None:
    key = new_user_key()
    assert key.public.startswith("U") and key.seed.startswith(b"SU")
    assert nkeys.from_seed(bytearray(key.seed)).public_key.decode() == key.public
    assert key.seed.decode() not in repr(key)


def test_the_committed_accounts_conf_is_generated_from_users_toml() -> None:
    assert ACCOUNTS_FILE.read_text() == accounts_conf(load_users(USERS_FILE))


def test_issue_adds_a_user_and_rewrites_accounts_conf(tmp_path: Path) -> None:
    users, accounts = tmp_path / "users.toml", tmp_path / "accounts.conf"
    argv = ["issue", "--role", "event-publisher", "--name", "billing", "--dir", str(tmp_path / "seeds")]
    assert nats_accounts.main([*argv, "--users", str(users), "--accounts", str(accounts)]) == 0
    [user] = load_users(users)
    assert user.role == "event-publisher" and user.nkey is not None
    seed = tmp_path / "seeds" / "billing.nk"
    assert seed.stat().st_mode & 0o077 == 0
    assert user.nkey in accounts.read_text() and seed.read_text().strip() not in accounts.read_text()
    assert accounts.read_text() == accounts_conf([NatsUser(name="billing", role="event-publisher", nkey=user.nkey)])


def test_the_readme_table_is_the_generated_one() -> None:
    assert permissions_table() in (ROOT / "README.md").read_text()


def test_the_alert_state_and_the_rules_requests_are_granted_to_whom_needs_them_only() -> None:
    for subject in (COLLECTOR_RULES_LIST, COLLECTOR_RULES_RELOAD):
        assert may_publish("gateway", subject) and may_subscribe("collector", subject)
        assert not may_publish("hub-publisher", subject) and not may_publish("event-publisher", subject)
    # The collector answers through allow_responses, not by publishing into the gateways' inbox.
    assert not may_publish("collector", "_INBOX.gateway.abc")
    assert roles()["collector"].block()["allow_responses"] == {"max": 1}
    assert "allow_responses" not in roles()["gateway"].block()
    for bucket in (ALERTS_BUCKET, SILENCES_BUCKET):
        assert may_publish("gateway", f"$KV.{bucket}.key")
    assert may_publish("collector", f"$KV.{ALERTS_BUCKET}.key")
    assert not may_publish("collector", f"$KV.{SILENCES_BUCKET}.key")
    assert may_publish("collector", f"$JS.API.DIRECT.GET.KV_{SILENCES_BUCKET}.$KV.{SILENCES_BUCKET}.key")
    for role in ("event-publisher", "hub-publisher"):
        assert not may_publish(role, f"$KV.{ALERTS_BUCKET}.key")

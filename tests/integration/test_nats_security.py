"""NATS locked down: a real nats-server with TLS (mutual, certificates made here) and account REALTIME.

Every component connects with its own nkey and client certificate (scripts/nats_secure.py); the
server enforces each role's permissions (scripts/nats_accounts.py). The tests prove that the
gateway and the collector work end to end with their credentials, that publishers can do their job
and nothing else, and that a wrong password or an untrusted certificate leaves a process running,
not ready, with one clear log line per attempt, until the credential is fixed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from broker_bridge.keyvalue import SNAPSHOT_BUCKET
from scripts.nats_pki import issue_ca
from scripts.nats_secure import SecureNats
from scripts.processes import NatsServer, wait_until_async
from stats_collector.jetstream import EVENTS_STREAM
from tests.support.collector import CollectorProcess, stored_snapshot
from tests.support.fanout import ClientPool, http
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = pytest.mark.integration

GATEWAY_PASSWORD = "correct horse battery staple"
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> SecureNats:
    return SecureNats.create(
        tmp_path_factory.mktemp("secure-nats"), password_users={"gateway-pw": ("gateway", GATEWAY_PASSWORD)}
    )


@pytest.fixture(scope="module")
def server(secure: SecureNats) -> Iterator[NatsServer]:
    nats_server = NatsServer(options=secure.server_options("nats"), scheme="tls")
    nats_server.start()
    yield nats_server
    nats_server.close()


class Recorder:
    """The error callback of a test client: every error the server reported, and a wake-up."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    async def record(self, error: Exception) -> None:
        self.errors.append(str(error))
        self.changed.set()

    async def wait_for(self, text: str, *, seconds: float = 10) -> str:
        async def found() -> str | None:
            # nats-py hands the server's -ERR text over in lower case.
            return next((error for error in self.errors if text.lower() in error.lower()), None)

        async def seen() -> list[str]:
            return self.errors

        result = await wait_until_async(found, timeout=seconds, what=f"an error containing {text!r}", describe=seen)
        assert result is not None
        return result


async def connect_as(
    secure: SecureNats, server: NatsServer, component: str, recorder: Recorder | None = None
) -> Client:
    return await nats.connect(
        server.url,
        name=f"test-{component}",
        error_cb=(recorder or Recorder()).record,
        allow_reconnect=False,
        **secure.client_kwargs(component),
    )


@pytest.fixture
async def admin(secure: SecureNats, server: NatsServer) -> AsyncIterator[Client]:
    client = await connect_as(secure, server, "admin")
    yield client
    await client.close()


@pytest.fixture(scope="module")
def collector(secure: SecureNats, server: NatsServer) -> Iterator[CollectorProcess]:
    process = CollectorProcess(
        server.url, env={**secure.client_env("collector"), "REALTIME_PUBLISH_INTERVAL_SECONDS": "0.2"}
    )
    process.start(seconds=WAIT_SECONDS)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gateway(secure: SecureNats, server: NatsServer, collector: CollectorProcess) -> Iterator[GatewayProcess]:
    process = GatewayProcess(server.url, env=secure.client_env("gateway"))
    process.start(seconds=WAIT_SECONDS)
    yield process
    process.stop()


def event(kind: str = "user.active") -> tuple[str, bytes, str]:
    event_id = str(uuid.uuid4())
    body = {"id": event_id, "userId": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat()}
    return f"platform.events.{kind}", json.dumps(body).encode(), event_id


def assert_no_violation(*logs: str) -> None:
    for log in logs:
        assert "Permissions Violation" not in log and "permission" not in log.lower(), log[-3000:]


# -- the services with their own credentials ------------------------------------------------------


async def test_gateway_and_collector_work_end_to_end_with_their_credentials(
    secure: SecureNats, server: NatsServer, gateway: GatewayProcess, collector: CollectorProcess, admin: Client
) -> None:
    events = await connect_as(secure, server, "events")
    alerts = await connect_as(secure, server, "alerts")
    try:
        async with ClientPool() as pool:
            dashboard = await pool.connect(gateway.hub_url, admin_token())
            await dashboard.invoke("SubscribeToAlerts")
            await dashboard.invoke("SubscribeToAnalytics")
            mark = dashboard.mark()

            # An event publisher's event reaches the collector through PLATFORM_EVENTS ...
            subject, payload, event_id = event("user.registered")
            ack = await events.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": event_id})
            assert ack.stream == EVENTS_STREAM

            async def counted() -> dict[str, Any] | None:
                snapshot = await stored_snapshot(admin)
                return snapshot if snapshot and snapshot.get("totalUsers", 0) >= 1 else None

            await wait_until_async(counted, timeout=WAIT_SECONDS, what="the collector to count the event")
            # ... and the collector's figures reach the dashboard through the gateway.
            await dashboard.wait_event("AnalyticsUpdate", seconds=WAIT_SECONDS, since=mark)

            # The collector keeps its snapshots in PLATFORM_SNAPSHOTS and the gateway, which may only read
            # that stream, answers the history from it.
            async def in_history() -> dict[str, Any] | None:
                answer: dict[str, Any] = await dashboard.invoke("GetAnalyticsHistory", 5)
                points = answer["points"]
                return answer if answer["complete"] and points and points[-1]["totalUsers"] >= 1 else None

            await wait_until_async(in_history, timeout=WAIT_SECONDS, what="the collector's snapshot in the history")

            # A hub publisher's alert reaches the dashboard.
            alert = {
                "target": "SystemAlert",
                "arguments": [
                    {"type": "info", "message": "deploy done", "severity": "low", "timestamp": "2025-10-17T10:30:00Z"}
                ],
            }
            await alerts.publish("realtime.group.alerts", json.dumps(alert).encode())
            await alerts.flush()
            received = await dashboard.wait_event("SystemAlert", seconds=WAIT_SECONDS, since=mark)
            assert received["message"] == "deploy done"
    finally:
        await events.close()
        await alerts.close()
    assert_no_violation(gateway.log(), collector.log())
    assert "auth: nkey, tls: mutual" in gateway.log()
    assert "auth: nkey, tls: mutual" in collector.log()


async def test_shared_alert_state_and_the_rules_requests_work_with_their_credentials(
    gateway: GatewayProcess, collector: CollectorProcess
) -> None:
    """The gateway writes the alert buckets; the collector answers the rules requests through
    ``allow_responses`` (it may not publish into the gateways' inbox otherwise)."""
    token = admin_token()
    sent = await http("POST", gateway.base_url, "alert/warning", token=token, json_body={"message": "disk 91%"})
    assert sent.status == 200, sent
    acknowledged = await http("POST", gateway.base_url, f"alerts/{sent.json['id']}/acknowledge", token=token)
    assert acknowledged.status == 200, acknowledged
    silence = {"target": "cpu_usage_high", "minutes": 5}
    assert (await http("POST", gateway.base_url, "alert-silences", token=token, json_body=silence)).status == 200
    state = await http("GET", gateway.base_url, "alerts/state", token=token)
    assert [a["status"] for a in state.json["alerts"]] == ["acknowledged"], state
    rules = await http("GET", gateway.base_url, "alert-rules", token=token)
    assert rules.status == 200 and rules.json["rules"], rules
    assert (await http("POST", gateway.base_url, "alert-rules/reload", token=token)).status == 200
    assert_no_violation(gateway.log(), collector.log())


# -- publishers may do their job and nothing else ----------------------------------------------------


@pytest.mark.parametrize("component", ["alerts", "events"])
async def test_publishers_cannot_touch_streams_buckets_or_user_messages(
    secure: SecureNats, server: NatsServer, collector: CollectorProcess, admin: Client, component: str
) -> None:
    before = await admin.jetstream().stream_info(EVENTS_STREAM)
    recorder = Recorder()
    client = await connect_as(secure, server, component, recorder)
    try:
        await client.publish(f"$JS.API.STREAM.DELETE.{EVENTS_STREAM}", b"")
        await client.flush()
        await recorder.wait_for(f'Permissions Violation for Publish to "$JS.API.STREAM.DELETE.{EVENTS_STREAM}"')

        await client.subscribe("realtime.user.>")
        await recorder.wait_for('Permissions Violation for Subscription to "realtime.user.>"')

        await client.publish(f"$KV.{SNAPSHOT_BUCKET}.platform", b'{"data": {"totalUsers": 1000000}}')
        await client.flush()
        await recorder.wait_for(f'Permissions Violation for Publish to "$KV.{SNAPSHOT_BUCKET}.platform"')
    finally:
        await client.close()
    after = await admin.jetstream().stream_info(EVENTS_STREAM)
    assert after.config.name == EVENTS_STREAM and after.state.first_seq == before.state.first_seq
    assert (await stored_snapshot(admin) or {}).get("totalUsers") != 1000000


async def test_a_hub_publisher_can_publish_alerts(secure: SecureNats, server: NatsServer, admin: Client) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def deliver(msg: Any) -> None:
        received.put_nowait(msg.data)

    await admin.subscribe("realtime.group.alerts", cb=deliver)
    await admin.flush()
    recorder = Recorder()
    client = await connect_as(secure, server, "alerts", recorder)
    try:
        await client.publish("realtime.group.alerts", b'{"target":"SystemAlert","arguments":[]}')
        await client.publish("realtime.user.someone", b'{"target":"ReceiveMessage","arguments":[]}')
        await client.flush()
        assert await asyncio.wait_for(received.get(), 10) == b'{"target":"SystemAlert","arguments":[]}'
    finally:
        await client.close()
    assert recorder.errors == []


async def test_an_event_publisher_can_publish_events_and_not_realtime(
    secure: SecureNats, server: NatsServer, collector: CollectorProcess, admin: Client
) -> None:
    recorder = Recorder()
    client = await connect_as(secure, server, "events", recorder)
    try:
        subject, payload, event_id = event()
        ack = await client.jetstream().publish(subject, payload, headers={"Nats-Msg-Id": event_id})
        assert ack.stream == EVENTS_STREAM and ack.seq > 0
        stored = await admin.jetstream().get_msg(EVENTS_STREAM, ack.seq)
        assert stored.data == payload

        await client.publish("realtime.group.alerts", b'{"target":"SystemAlert","arguments":[]}')
        await client.flush()
        await recorder.wait_for('Permissions Violation for Publish to "realtime.group.alerts"')
    finally:
        await client.close()


async def test_nothing_connects_without_credentials(secure: SecureNats, server: NatsServer) -> None:
    kwargs = secure.client_kwargs("events")
    del kwargs["nkeys_seed"]
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.url, allow_reconnect=False, error_cb=Recorder().record, **kwargs)


# -- wrong credentials: a clear line, not ready, no crash, recovery ------------------------------------


def attempts_logged(log: str, cause: str) -> list[str]:
    return [line for line in log.splitlines() if "nats connection failed" in line and cause in line]


async def assert_retrying_not_ready(process: GatewayProcess | CollectorProcess, cause: str) -> list[str]:
    """Wait for two failed attempts logged with ``cause``; the process runs, unready, without a traceback."""

    async def reported() -> bool:
        return len(attempts_logged(process.log(), cause)) >= 2

    await wait_until_async(reported, timeout=WAIT_SECONDS, what="two failed attempts in the log")
    assert process.probe("/readyz") == 503
    assert "not ready: nats" in await asyncio.to_thread(_body, process.base_url + "/readyz")
    assert process.is_running()
    assert "Traceback" not in process.log()
    return attempts_logged(process.log(), cause)


async def assert_recovers(process: GatewayProcess | CollectorProcess) -> None:
    async def ready() -> bool:
        return process.probe("/readyz") == 200

    await wait_until_async(ready, timeout=WAIT_SECONDS, what=f"{process.label} to recover")


async def test_a_wrong_password_is_reported_and_recovers_when_fixed(
    secure: SecureNats, server: NatsServer, tmp_path: Path
) -> None:
    env = secure.password_env("gateway-pw", "gateway")
    password_file = Path(env["REALTIME_NATS_PASSWORD_FILE"])
    await asyncio.to_thread(password_file.write_text, "not the password\n")
    gateway = GatewayProcess(server.url, env=env, label="gateway-wrong-password")
    try:
        await asyncio.to_thread(gateway.start, seconds=WAIT_SECONDS, wait_ready=False)
        lines = await assert_retrying_not_ready(gateway, "rejected the credentials")
        assert "user/password" in lines[0]
        assert "not the password" not in gateway.log() and GATEWAY_PASSWORD not in gateway.log()

        # The Secret is fixed: the next attempt reads the file again.
        await asyncio.to_thread(password_file.write_text, GATEWAY_PASSWORD + "\n")
        await assert_recovers(gateway)
    finally:
        gateway.stop()


@pytest.mark.parametrize("service", ["gateway", "collector"])
async def test_an_untrusted_server_certificate_is_reported_and_recovers_when_fixed(
    secure: SecureNats, server: NatsServer, tmp_path: Path, service: str
) -> None:
    # The process trusts another CA than the one that signed the server's certificate.
    stranger = issue_ca(tmp_path / "stranger")
    ca_file = tmp_path / "trusted-ca.pem"
    shutil.copy(stranger.cert, ca_file)
    env = {**secure.client_env(service), "REALTIME_NATS_TLS_CA_FILE": str(ca_file)}
    process: GatewayProcess | CollectorProcess
    if service == "gateway":
        process = GatewayProcess(server.url, env=env, label="gateway-untrusted")
    else:
        process = CollectorProcess(server.url, env=env, label="collector-untrusted")
    try:
        await asyncio.to_thread(process.start, seconds=WAIT_SECONDS, wait_ready=False)
        await assert_retrying_not_ready(process, "certificate is not trusted")
        shutil.copy(secure.pki.ca, ca_file)  # the right CA is mounted
        await assert_recovers(process)
    finally:
        process.stop()


def _body(url: str) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own local probe
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())

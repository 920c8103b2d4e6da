"""The publisher sends catalog events to their group, and raw calls to a group, a user or everyone."""

from __future__ import annotations

import orjson

from broker_bridge import catalog
from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.publisher import RealtimePublisher


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, object]]] = []

    def __call__(self, subject: str, payload: bytes) -> None:
        self.received.append((subject, orjson.loads(payload)))


async def publisher_and_recorder() -> tuple[RealtimePublisher, Recorder]:
    broker = InMemoryBroker()
    recorder = Recorder()
    await broker.subscribe("realtime.>", recorder)
    return RealtimePublisher(broker), recorder


async def test_a_catalog_event_goes_to_its_group() -> None:
    publisher, recorder = await publisher_and_recorder()
    event = catalog.system_alert(
        alert_id="a1", alert_type="error", message="disk full", timestamp="2025-10-17T10:30:00.000Z"
    )
    await publisher.publish(event)
    assert recorder.received == [
        (
            "realtime.group.alerts",
            {
                "target": "SystemAlert",
                "arguments": [
                    {
                        "id": "a1",
                        "type": "error",
                        "message": "disk full",
                        "severity": "high",
                        "timestamp": "2025-10-17T10:30:00.000Z",
                        "data": None,
                    }
                ],
            },
        )
    ]


async def test_to_user_addresses_one_user_and_encodes_unsafe_ids() -> None:
    publisher, recorder = await publisher_and_recorder()
    await publisher.to_user("550e8400-e29b-41d4-a716-446655440000", "ReceiveMessage", {"text": "hi"})
    await publisher.to_user("ana@example.com", "ReceiveMessage", "x")
    assert recorder.received == [
        (
            "realtime.user.550e8400-e29b-41d4-a716-446655440000",
            {"target": "ReceiveMessage", "arguments": [{"text": "hi"}]},
        ),
        ("realtime.user.~YW5hQGV4YW1wbGUuY29t", {"target": "ReceiveMessage", "arguments": ["x"]}),
    ]


async def test_to_all_reaches_every_connection_subject() -> None:
    publisher, recorder = await publisher_and_recorder()
    await publisher.to_all("ReceiveMessage", 1, 2)
    assert recorder.received == [("realtime.all", {"target": "ReceiveMessage", "arguments": [1, 2]})]

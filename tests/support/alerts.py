"""The gateway's shared alert state over in-memory KV, for component tests that build a hub by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

from broker_bridge.alert_store import AlertStore
from broker_bridge.broker_memory import InMemoryBroker
from broker_bridge.keyvalue import MemoryKeyValueStore
from broker_bridge.publisher import RealtimePublisher
from gateway.hub.alerts import SharedAlerts
from gateway.metrics import GatewayMetrics


def memory_shared_alerts(
    broker: InMemoryBroker,
    metrics: GatewayMetrics,
    *,
    max_silences: int = 100,
    max_answer_bytes: int = 262144,
    clock: Callable[[], float] = time.time,
) -> SharedAlerts:
    alerts = SharedAlerts(
        broker=broker,
        publisher=RealtimePublisher(broker),
        metrics=metrics,
        retention_seconds=86400.0,
        max_alerts=1000,
        max_silences=max_silences,
        max_answer_bytes=max_answer_bytes,
        collector_timeout_seconds=5.0,
        clock=clock,
    )
    alerts.attach(AlertStore(MemoryKeyValueStore(clock=clock), MemoryKeyValueStore(clock=clock)))
    return alerts

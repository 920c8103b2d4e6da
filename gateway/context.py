"""The objects every request handler needs, stored on the aiohttp app under typed keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from broker_bridge.interface import Broker
from broker_bridge.publisher import RealtimePublisher
from gateway.hub.host import HubHost
from gateway.hub.platform_data import SnapshotReader
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.transport.connection_token import ConnectionTokenSigner


@dataclass(slots=True)
class Readiness:
    """``draining`` turns true at shutdown; new connections are refused from then on."""

    draining: bool = False


@dataclass(frozen=True, slots=True)
class GatewayContext:
    settings: GatewaySettings
    broker: Broker
    signer: ConnectionTokenSigner
    host: HubHost
    metrics: GatewayMetrics
    publisher: RealtimePublisher
    snapshots: SnapshotReader
    readiness: Readiness = field(default_factory=Readiness)


CONTEXT: Final = web.AppKey("context", GatewayContext)

"""The objects every request handler needs, stored on the aiohttp app under typed keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from broker_bridge.interface import Broker
from broker_bridge.publisher import RealtimePublisher
from gateway.connection_token import ConnectionTokenSigner
from gateway.hub_host import HubHost
from gateway.metrics import GatewayMetrics
from gateway.platform_data import SnapshotReader
from gateway.settings import GatewaySettings


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

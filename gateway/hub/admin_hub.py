"""The AdminHub: the hub methods and connect/disconnect behaviour listed in the API document."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from broker_bridge import catalog
from broker_bridge.interface import BrokerUnavailable
from gateway.auth import ADMIN_ROLE
from gateway.hub.alerts import AlertRefused, SharedAlerts
from gateway.hub.cluster_presence import ClusterPresence
from gateway.hub.dispatcher import HubError, HubMethod
from gateway.hub.history import MINUTES_RANGE_MESSAGE, SnapshotHistory, minutes_in_range
from gateway.hub.memberships import Memberships
from gateway.hub.presence import ReplicaPresence
from gateway.hub.session import HubSession
from gateway.hub.snapshots import SnapshotReader
from shared.interning import SharedValues
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

# The groups a client may join and leave with the SubscribeTo... / UnsubscribeFrom... methods.
SUBSCRIBABLE: Final = (
    ("UserActivity", catalog.USER_ACTIVITY),
    ("Analytics", catalog.ANALYTICS),
    ("Alerts", catalog.ALERTS),
)
BROKER_UNAVAILABLE: Final = "The real-time broker is unavailable; try again shortly."

Handler = Callable[[HubSession], Awaitable[dict[str, Any]]]


class AdminHub:
    """Hub methods; each takes the calling :class:`HubSession` first."""

    def __init__(
        self,
        *,
        memberships: Memberships,
        snapshots: SnapshotReader,
        presence: ReplicaPresence,
        cluster_presence: ClusterPresence,
        alerts: SharedAlerts,
        history: SnapshotHistory,
    ) -> None:
        self._memberships = memberships
        self._snapshots = snapshots
        self._presence = presence
        self._cluster_presence = cluster_presence
        self._alerts = alerts
        self._history = history
        # A connection holds its groups for its whole life; the few combinations the hub's groups
        # make are held once each.
        self.group_sets: SharedValues[tuple[str, ...]] = SharedValues()

    def methods(self) -> list[HubMethod[HubSession]]:
        subscriptions: list[HubMethod[HubSession]] = [
            HubMethod(f"{verb}{name}", handler)
            for name, group in SUBSCRIBABLE
            for verb, handler in (("SubscribeTo", self._joiner(group)), ("UnsubscribeFrom", self._leaver(group)))
        ]
        return [
            *subscriptions,
            HubMethod("GetPlatformStats", self.get_platform_stats),
            HubMethod("GetConnectionCount", self.get_connection_count),
            HubMethod("GetPresence", self.get_presence),
            HubMethod("GetAnalyticsHistory", self.get_analytics_history, ((int,),)),
            HubMethod("SendTestMessage", self.send_test_message, ((str, type(None)),)),
            HubMethod("AcknowledgeAlert", self.acknowledge_alert, ((str,),)),
            HubMethod("SilenceAlert", self.silence_alert, ((str,), (int, float))),
            HubMethod("GetAlertStates", self.get_alert_states),
        ]

    async def on_connected(self, session: HubSession) -> None:
        """Reach the session through "all" and its user, put Admins in ``admins``, greet the client.

        Raises BrokerUnavailable when a subscription cannot be made; the host then closes the
        connection with an error the client may reconnect after.
        """
        groups = self.group_sets((catalog.ADMINS,)) if ADMIN_ROLE in session.principal.roles else ()
        await self._memberships.connect(session, groups)
        session.groups = groups
        greeting = catalog.connection_established(
            connection_id=session.connection_id,
            user_id=session.user_id,
            user_name=session.principal.name,
            groups=list(session.groups),
            timestamp=iso_utc(),
        )
        session.send(catalog.CONNECTION_ESTABLISHED, greeting)
        self._cluster_presence.connected(session)

    def on_resumed(self, session: HubSession) -> None:
        """A stateful connection resumed here (its groups come from its log, not from a handshake)."""
        self._cluster_presence.connected(session)

    async def on_transport_lost(self, session: HubSession) -> bool:
        """The transport dropped: True when the connection lives on for a resume (stateful reconnect).
        Either way it is no longer present here: a resume counts it again where it lands."""
        self._cluster_presence.disconnected(session)
        return await self._memberships.detach(session)

    async def on_disconnected(self, session: HubSession) -> None:
        self._cluster_presence.disconnected(session)
        groups, session.groups = session.groups, ()
        await self._memberships.disconnect(session, groups)

    def _joiner(self, group: str) -> Handler:
        async def subscribe(session: HubSession) -> dict[str, Any]:
            if group not in session.groups:
                try:
                    await self._memberships.join(session, group)
                except BrokerUnavailable:
                    raise HubError(BROKER_UNAVAILABLE) from None
                if group not in session.groups:  # another invocation may have joined meanwhile
                    session.groups = self.group_sets((*session.groups, group))
                    self._cluster_presence.groups_changed()
                if group == catalog.ANALYTICS:
                    await self._send_latest_figures(session)
            return {"group": group, "subscribed": True, "timestamp": iso_utc()}

        return subscribe

    def _leaver(self, group: str) -> Handler:
        async def unsubscribe(session: HubSession) -> dict[str, Any]:
            session.groups = self.group_sets(tuple(joined for joined in session.groups if joined != group))
            self._cluster_presence.groups_changed()
            try:
                await self._memberships.leave(session, group)
            except BrokerUnavailable:
                raise HubError(BROKER_UNAVAILABLE) from None
            return {"group": group, "subscribed": False, "timestamp": iso_utc()}

        return unsubscribe

    async def _send_latest_figures(self, session: HubSession) -> None:
        """A new subscriber of ``analytics`` gets the current figures at once, not at the next tick."""
        snapshot = await self._snapshots.latest()
        for event in (
            catalog.analytics_update(snapshot.data, timestamp=snapshot.timestamp),
            catalog.user_count_update(snapshot.data, timestamp=snapshot.timestamp),
        ):
            session.send(event.target, event.payload)

    async def get_platform_stats(self, session: HubSession) -> dict[str, Any]:
        snapshot = await self._snapshots.latest()
        return {**snapshot.data.to_wire(), "timestamp": snapshot.timestamp, **snapshot.completeness()}

    async def get_connection_count(self, session: HubSession) -> dict[str, Any]:
        totals = await self._presence.totals()
        return {
            "connectionId": session.connection_id,
            "timestamp": iso_utc(),
            "connectionsOnReplica": totals.on_replica,
            "totalConnections": totals.total,
            "replicas": totals.replicas,
        }

    async def get_presence(self, session: HubSession) -> dict[str, Any]:
        """Who is connected across every replica (README "Cluster presence")."""
        return (await self._cluster_presence.view()).to_wire(timestamp=iso_utc())

    async def get_analytics_history(self, session: HubSession, minutes: int) -> dict[str, Any]:
        if not minutes_in_range(minutes):
            raise HubError(MINUTES_RANGE_MESSAGE)
        return self._history.answer(minutes)

    async def send_test_message(self, session: HubSession, payload: str | None) -> dict[str, Any]:
        return {"timestamp": iso_utc(), "message": "Test received", "echo": payload}

    # -- shared alert state ---------------------------------------------------------------------

    async def acknowledge_alert(self, session: HubSession, alert_id: str) -> dict[str, Any]:
        """The alert's view (``status`` acknowledged, who and when); every dashboard gets AlertStateChanged."""
        return await self._alert_call(lambda: self._alerts.acknowledge(session.principal, alert_id))

    async def silence_alert(self, session: HubSession, target: str, minutes: float) -> dict[str, Any]:
        """The silence of a rule or alert type for ``minutes`` (0 lifts it); AlertStateChanged to ``alerts``."""
        return await self._alert_call(lambda: self._alerts.silence(session.principal, target, minutes))

    async def get_alert_states(self, session: HubSession) -> dict[str, Any]:
        return await self._alert_call(self._alerts.states)

    async def _alert_call(self, action: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        try:
            return await action()
        except AlertRefused as error:
            raise HubError(error.message) from None
        except BrokerUnavailable:
            raise HubError(BROKER_UNAVAILABLE) from None

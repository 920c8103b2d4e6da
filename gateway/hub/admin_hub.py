"""The AdminHub: the hub methods and connect/disconnect behaviour listed in the API document."""

from __future__ import annotations

import logging
from typing import Any, Final

from broker_bridge.hub_events import ADMINS, ALERTS, ANALYTICS, USER_ACTIVITY
from broker_bridge.interface import BrokerUnavailable
from broker_bridge.subjects import ALL_SUBJECT, group_subject, user_subject
from gateway.hub.dispatcher import HubError, HubMethod
from gateway.hub.fanout import FanoutRouter
from gateway.hub.platform_data import ReplicaPresence, SnapshotReader
from gateway.hub.session import HubSession
from shared.timeutil import iso_utc

log = logging.getLogger(__name__)

ADMIN_ROLE: Final = "Admin"


class AdminHub:
    """Hub methods; each takes the calling :class:`HubSession` first."""

    def __init__(self, *, router: FanoutRouter, snapshots: SnapshotReader, presence: ReplicaPresence) -> None:
        self._router = router
        self._snapshots = snapshots
        self.presence = presence

    def methods(self) -> list[HubMethod[HubSession]]:
        subscriptions: list[HubMethod[HubSession]] = [
            HubMethod(f"{verb}{name}", handler)
            for name, group in (("UserActivity", USER_ACTIVITY), ("Analytics", ANALYTICS), ("Alerts", ALERTS))
            for verb, handler in (
                ("SubscribeTo", self._joiner(group)),
                ("UnsubscribeFrom", self._leaver(group)),
            )
        ]
        return [
            *subscriptions,
            HubMethod("GetPlatformStats", self.get_platform_stats),
            HubMethod("GetConnectionCount", self.get_connection_count),
            HubMethod("SendTestMessage", self.send_test_message, ((str, type(None)),)),
        ]

    async def on_connected(self, session: HubSession) -> None:
        """Join ``realtime.all``, the user's subject and (Admins) ``admins``; greet the client.

        Raises BrokerUnavailable when a subscription cannot be made; the transport then closes
        the connection with an error the client may reconnect after.
        """
        subjects = [ALL_SUBJECT]
        if session.user_id:
            subjects.append(user_subject(session.user_id))
        groups = [ADMINS] if ADMIN_ROLE in session.principal.roles else []
        subjects.extend(group_subject(group) for group in groups)
        for subject in subjects:
            await self._router.join(subject, session)
            session.subjects.add(subject)
        session.send(
            "ConnectionEstablished",
            {
                "connectionId": session.connection_id,
                "userId": session.user_id,
                "userName": session.principal.name,
                "groups": groups,
                "message": "Connected to admin real-time hub",
                "timestamp": iso_utc(),
            },
        )

    async def on_disconnected(self, session: HubSession) -> None:
        for subject in list(session.subjects):
            session.subjects.discard(subject)
            await self._router.leave(subject, session)

    def _joiner(self, group: str) -> Any:
        subject = group_subject(group)

        async def subscribe(session: HubSession) -> dict[str, Any]:
            if subject not in session.subjects:
                try:
                    await self._router.join(subject, session)
                except BrokerUnavailable:
                    raise HubError("The real-time broker is unavailable; try again shortly.") from None
                session.subjects.add(subject)
            return {"group": group, "subscribed": True, "timestamp": iso_utc()}

        return subscribe

    def _leaver(self, group: str) -> Any:
        subject = group_subject(group)

        async def unsubscribe(session: HubSession) -> dict[str, Any]:
            session.subjects.discard(subject)
            await self._router.leave(subject, session)
            return {"group": group, "subscribed": False, "timestamp": iso_utc()}

        return unsubscribe

    async def get_platform_stats(self, session: HubSession) -> dict[str, Any]:
        snapshot = await self._snapshots.latest()
        return {**snapshot.data.to_wire(), "timestamp": snapshot.timestamp}

    async def get_connection_count(self, session: HubSession) -> dict[str, Any]:
        totals = await self.presence.totals()
        return {
            "connectionId": session.connection_id,
            "timestamp": iso_utc(),
            "connectionsOnReplica": totals.on_replica,
            "totalConnections": totals.total,
            "replicas": totals.replicas,
        }

    async def send_test_message(self, session: HubSession, payload: str | None) -> dict[str, Any]:
        return {"timestamp": iso_utc(), "message": "Test received", "echo": payload}

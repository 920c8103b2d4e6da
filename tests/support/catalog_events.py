"""One event of every kind the payload catalog builds, for the tests that check them all."""

from typing import Any, Final

from broker_bridge import catalog
from broker_bridge.catalog import HubEvent
from shared.models import PlatformSnapshot

T: Final = "2025-10-17T10:30:00.000Z"
ADA: Final = {"userId": "u1", "userName": "Ada"}
SILENCE: Final = {"target": "cpu", "until": T, "silencedBy": ADA, "silencedAt": T}
ALERT_VIEW: Final[dict[str, Any]] = {
    "id": "18a-5e31995b8e01",
    "type": "warning",
    "severity": "high",
    "message": "m",
    "timestamp": T,
    "data": None,
    "rule": "cpu",
    "suppressed": True,
    "acknowledgedBy": None,
    "acknowledgedAt": None,
    "resolvedAt": None,
    "status": "silenced",
}


def one_event_of_each_kind() -> list[HubEvent]:
    """Every builder of the catalog (each alert state change too), stamped :data:`T`."""
    snapshot = PlatformSnapshot(total_users=3, active_users=2, total_revenue=1.5)
    return [
        catalog.analytics_update(snapshot, timestamp=T),
        catalog.user_count_update(snapshot, timestamp=T),
        catalog.generation_metrics(
            websites_generated=1, images_generated=2, failed_generations=0, average_generation_time=1.5, timestamp=T
        ),
        catalog.revenue_update(daily_revenue=1.0, total_revenue_30d=2.0, timestamp=T),
        catalog.system_alert(alert_id="a1", alert_type="info", message="m", timestamp=T),
        catalog.performance_alert(alert_id="18a-5e31995b8e01", metric="cpu", value=99, threshold=90, timestamp=T),
        catalog.alert_state_changed(change="acknowledged", by=ADA, timestamp=T, alert=ALERT_VIEW),
        catalog.alert_state_changed(change="suppressed", by=None, timestamp=T, alert=ALERT_VIEW),
        catalog.alert_state_changed(change="silenced", by=ADA, timestamp=T, silence=SILENCE),
        catalog.alert_state_changed(change="unsilenced", by=ADA, timestamp=T, silence=SILENCE),
        catalog.user_activity(user_id="u", action="login", details=None, timestamp=T),
        catalog.role_assignment(user_id="u", role_name="Admin", action="assigned", timestamp=T),
        catalog.system_event(event_type="deploy", description="done", data={"v": 1}, timestamp=T),
        catalog.presence_change(user_id="u", user_name=None, action="online", timestamp=T),
    ]

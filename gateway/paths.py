"""Every route and path prefix of the gateway, defined once (the probe paths live in :mod:`shared.probes`)."""

from __future__ import annotations

from typing import Final

# The hub: negotiate, then the transports at the hub path itself.
HUB_PATH: Final = "/hubs/admin"
NEGOTIATE_PATH: Final = f"{HUB_PATH}/negotiate"
# Requests under this prefix may carry the access token in the ``access_token`` query parameter
# (browsers cannot set headers on WebSocket or EventSource requests).
HUB_PREFIX: Final = "/hubs/"

# The REST API of the API document.
API_PREFIX: Final = "/api/admin/realtime"
PUBLIC_HEALTH_PATH: Final = f"{API_PREFIX}/health"
# Who is connected across every replica (not in the API document; README "Cluster presence").
PRESENCE_PATH: Final = f"{API_PREFIX}/presence"
# Shared alert state and the collector's alert rules (README "Shared alert state").
ALERT_STATE_PATH: Final = f"{API_PREFIX}/alerts/state"
ALERT_ACKNOWLEDGE_PATH: Final = f"{API_PREFIX}/alerts/{{alert_id}}/acknowledge"
ALERT_SILENCES_PATH: Final = f"{API_PREFIX}/alert-silences"
ALERT_RULES_PATH: Final = f"{API_PREFIX}/alert-rules"
ALERT_RULES_RELOAD_PATH: Final = f"{API_PREFIX}/alert-rules/reload"
ANALYTICS_HISTORY_PATH: Final = f"{API_PREFIX}/analytics/history"
# Paths under the hub and API prefixes that need no access token.
PUBLIC_PATHS: Final = frozenset({PUBLIC_HEALTH_PATH})

# The published contracts, generated from the payload catalog and the route table; they describe the
# admin API and the internal NATS subjects, so they need the same token and role as the API itself.
ASYNCAPI_PATH: Final = "/asyncapi.json"
OPENAPI_PATH: Final = "/openapi.json"
CONTRACT_PATHS: Final = frozenset({ASYNCAPI_PATH, OPENAPI_PATH})
# The page that renders both (public: static files only; it fetches the documents with the user's token).
API_DOCS_PATH: Final = "/docs/api"


def api_path(route: str) -> str:
    """``status`` -> ``/api/admin/realtime/status``."""
    return f"{API_PREFIX}/{route}"


def needs_authentication(path: str) -> bool:
    """Whether a request to ``path`` must carry a valid access token."""
    in_scope = path.startswith(HUB_PREFIX) or path == API_PREFIX or path.startswith(API_PREFIX + "/")
    return (in_scope and path not in PUBLIC_PATHS) or path in CONTRACT_PATHS

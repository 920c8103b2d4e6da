"""The published contracts as a real gateway process serves them, validated against the official schemas."""

from __future__ import annotations

import pytest

from scripts.processes import NatsServer
from tests.contracts.test_documents import problems
from tests.support.fanout import http
from tests.support.processes import GatewayProcess
from tests.support.tokens import admin_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_a_running_gateway_serves_valid_documents_to_admins_only(
    fresh_nats: NatsServer, fresh_gateway: GatewayProcess
) -> None:
    asyncapi = await http("GET", fresh_gateway.base_url, "/asyncapi.json", token=admin_token())
    openapi = await http("GET", fresh_gateway.base_url, "/openapi.json", token=admin_token())
    assert asyncapi.status == openapi.status == 200
    assert problems(asyncapi.json, "asyncapi-3.0.0.json") == []
    assert problems(openapi.json, "openapi-3.1.json") == []
    # What the process registered: every hub method of the API document, every REST route.
    operations = asyncapi.json["operations"]
    for method in ("SubscribeToUserActivity", "GetConnectionCount", "SendTestMessage"):
        assert f"invoke{method}" in operations
    assert "/api/admin/realtime/notify/system-event" in openapi.json["paths"]
    assert (await http("GET", fresh_gateway.base_url, "/openapi.json")).status == 401
    page = await http("GET", fresh_gateway.base_url, "/docs/api")
    assert page.status == 200

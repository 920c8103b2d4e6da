"""The AsyncAPI 3.0 document of the hub and the NATS subjects, generated from the payload catalog.

Described application: the gateway. On the hub channel (``/hubs/admin``, SignalR JSON hub protocol) it
*sends* every client method of :data:`broker_bridge.catalog.EVENT_SHAPES` (plus any other name in
:data:`broker_bridge.catalog.CLIENT_METHODS`, marked undeclared) and *receives* an invocation of each hub
method the app registered (:class:`gateway.hub.dispatcher.HubMethod`: arguments from its parameter types
and the handler's parameter names), replying with a Completion whose result is
:func:`broker_bridge.catalog.hub_method_result`. On NATS it *receives* what internal services publish to
``realtime.group.<group>``, ``realtime.user.<userId>`` and ``realtime.all`` (the fan-out envelope), and
documents the collector's inputs ``platform.events.<type>`` and ``platform.metrics.<name>``
(:mod:`stats_collector.events`), which internal services publish and the collector receives.

Messages carry whole SignalR frames on the hub (``{"type": 1, "target", "arguments"}``), and whole
envelopes on NATS (``{"target", "arguments"}``); the payload itself is the first argument. Pure: the caller
hands in the hub methods.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Final

from broker_bridge import catalog
from broker_bridge.subjects import ALL_SUBJECT, GROUP_PREFIX, USER_PREFIX
from gateway.hub.dispatcher import HubMethod
from gateway.paths import HUB_PATH
from stats_collector.events import (
    EVENTS_SUBJECT_PREFIX,
    METRIC_NAME_PATTERN,
    METRICS_SUBJECT_PREFIX,
    EventKind,
    metric_payload_shape,
    payload_shape,
)

ASYNCAPI_VERSION: Final = "3.0.0"
# SignalR message types of the JSON hub protocol.
INVOCATION: Final = 1
COMPLETION: Final = 3
_JSON_TYPES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    dict: "object",
    list: "array",
}
_UNDECLARED: Final = "Not declared in broker_bridge/catalog.py: any JSON value."


def _ref(*parts: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(parts)}


def _single_argument(payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": [payload], "minItems": 1, "maxItems": 1}


def _event_payloads() -> dict[str, dict[str, Any]]:
    """Client method -> the JSON Schema of its argument (several shapes of one method: anyOf)."""
    by_target: dict[str, list[catalog.EventShape]] = {}
    for shape in catalog.EVENT_SHAPES:
        by_target.setdefault(shape.target, []).append(shape)
    schemas: dict[str, dict[str, Any]] = {}
    for target, shapes in by_target.items():
        variants = [{**shape.payload.schema(), "title": shape.name} for shape in shapes]
        schemas[target] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    for target in sorted(catalog.CLIENT_METHODS - by_target.keys()):
        schemas[target] = {"description": _UNDECLARED, "x-contract-declared": False}
    return schemas


def _summary(target: str) -> str:
    shapes = [shape for shape in catalog.EVENT_SHAPES if shape.target == target]
    groups = sorted({shape.group or "the one connection concerned" for shape in shapes})
    said = "; ".join(shape.summary for shape in shapes) or "Undeclared client method"
    return f"{said} (to {', '.join(groups) or 'any'})"


def _parameter_schema(accepted: tuple[type, ...]) -> dict[str, Any]:
    types = [_JSON_TYPES.get(kind, "object") for kind in accepted]
    return {"type": types[0]} if len(types) == 1 else {"type": types}


def _parameter_names(method: HubMethod[Any]) -> list[str]:
    try:
        names = list(inspect.signature(method.handler).parameters)[1:]  # the first one is the caller
    except (TypeError, ValueError):
        names = []
    return [names[index] if index < len(names) else f"argument{index + 1}" for index in range(len(method.parameters))]


def _hub_method_messages(method: HubMethod[Any]) -> dict[str, dict[str, Any]]:
    names = _parameter_names(method)
    arguments = [
        {**_parameter_schema(accepted), "title": name} for name, accepted in zip(names, method.parameters, strict=True)
    ]
    declared = catalog.hub_method_result(method.name)
    result = declared.result.schema() if declared else {"description": _UNDECLARED, "x-contract-declared": False}
    summary = declared.summary if declared else f"{method.name} (result not declared in the catalog)"
    signature = f"{method.name}({', '.join(names)})"
    invocation = {
        "type": "object",
        "properties": {
            "type": {"const": INVOCATION},
            "invocationId": {"type": "string", "description": "absent: no Completion is sent"},
            "target": {"const": method.name, "description": "matched case-insensitively"},
            "arguments": {
                "type": "array",
                **({"items": arguments} if arguments else {}),
                "minItems": len(arguments),
                "maxItems": len(arguments),
            },
        },
        "required": ["type", "target", "arguments"],
    }
    completion = {
        "type": "object",
        "properties": {
            "type": {"const": COMPLETION},
            "invocationId": {"type": "string"},
            "result": result,
            "error": {"type": "string", "description": "instead of result: ASP.NET Core's error text"},
        },
        "required": ["type", "invocationId"],
    }
    return {
        f"{method.name}Invocation": {
            "name": f"{method.name}Invocation",
            "title": signature,
            "summary": summary,
            "payload": invocation,
        },
        f"{method.name}Completion": {
            "name": f"{method.name}Completion",
            "title": f"{method.name} result",
            "summary": f"The Completion of {method.name}",
            "payload": completion,
        },
    }


def asyncapi_document(hub_methods: Sequence[HubMethod[Any]], *, version: str) -> dict[str, Any]:
    """The document for the registered ``hub_methods`` and the catalog's payloads."""
    payloads = _event_payloads()
    messages: dict[str, dict[str, Any]] = {}
    schemas: dict[str, dict[str, Any]] = {}
    for target, schema in payloads.items():
        schemas[target] = schema
        frame = {
            "type": "object",
            "properties": {
                "type": {"const": INVOCATION},
                "target": {"const": target},
                "arguments": _single_argument(_ref("components", "schemas", target)),
            },
            "required": ["type", "target", "arguments"],
        }
        messages[target] = {"name": target, "title": target, "summary": _summary(target), "payload": frame}
    method_messages: dict[str, dict[str, Any]] = {}
    for method in hub_methods:
        method_messages.update(_hub_method_messages(method))
    messages.update(method_messages)

    grouped = sorted({shape.target for shape in catalog.EVENT_SHAPES if shape.group is not None})
    for target in [*grouped, "Any"]:
        argument = _ref("components", "schemas", target) if target != "Any" else {"description": "any JSON value"}
        messages[f"{target}Envelope"] = {
            "name": f"{target}Envelope",
            "title": f"{target} on NATS",
            "summary": "The fan-out envelope: every connection reached gets target(arguments...)",
            "payload": {
                "type": "object",
                "properties": {
                    "target": {"const": target}
                    if target != "Any"
                    else {"type": "string", "enum": sorted(catalog.CLIENT_METHODS), "description": "a client method"},
                    "arguments": _single_argument(argument)
                    if target != "Any"
                    else {"type": "array", "description": "the client method's arguments"},
                },
                "required": ["target", "arguments"],
            },
        }

    channels: dict[str, Any] = {
        "hub": {
            "address": HUB_PATH,
            "title": "The admin hub (SignalR)",
            "description": (
                "POST /hubs/admin/negotiate, then WebSockets, Server-Sent Events or long polling at the hub path "
                "(JSON or MessagePack hub protocol; shown here in JSON). The official @microsoft/signalr client "
                "works unchanged."
            ),
            "servers": [_ref("servers", "gateway")],
            "messages": {name: _ref("components", "messages", name) for name in [*payloads, *method_messages]},
        },
        "group": {
            "address": GROUP_PREFIX + "{group}",
            "title": "Every connection in a hub group",
            "servers": [_ref("servers", "nats")],
            "parameters": {"group": {"enum": list(catalog.GROUPS), "description": "a hub group"}},
            "messages": {
                f"{target}Envelope": _ref("components", "messages", f"{target}Envelope") for target in [*grouped, "Any"]
            },
        },
        "user": {
            "address": USER_PREFIX + "{userId}",
            "title": "Every connection of one user",
            "servers": [_ref("servers", "nats")],
            "parameters": {
                "userId": {
                    "description": "the user id when made of [A-Za-z0-9_-], else ~ + base64url of its UTF-8 bytes"
                }
            },
            "messages": {"AnyEnvelope": _ref("components", "messages", "AnyEnvelope")},
        },
        "all": {
            "address": ALL_SUBJECT,
            "title": "Every connection",
            "servers": [_ref("servers", "nats")],
            "messages": {"AnyEnvelope": _ref("components", "messages", "AnyEnvelope")},
        },
    }
    operations: dict[str, Any] = {}
    for target in payloads:
        operations[f"send{target}"] = {
            "action": "send",
            "channel": _ref("channels", "hub"),
            "summary": _summary(target),
            "messages": [_ref("channels", "hub", "messages", target)],
        }
    for method in hub_methods:
        operations[f"invoke{method.name}"] = {
            "action": "receive",
            "channel": _ref("channels", "hub"),
            "summary": f"Hub method {method.name}",
            "messages": [_ref("channels", "hub", "messages", f"{method.name}Invocation")],
            "reply": {
                "channel": _ref("channels", "hub"),
                "messages": [_ref("channels", "hub", "messages", f"{method.name}Completion")],
            },
        }
    for name in ("group", "user", "all"):
        operations[f"fanOutTo{name.title()}"] = {
            "action": "receive",
            "channel": _ref("channels", name),
            "summary": "Internal services publish here (RealtimePublisher in Python); every replica delivers",
            "messages": [_ref("channels", name, "messages", key) for key in channels[name]["messages"]],
        }
    for kind in EventKind:
        key = "platformEvent" + "".join(part.title() for part in kind.value.split("."))
        message = f"{key}Message"
        messages[message] = {
            "name": message,
            "title": kind.value,
            "summary": "A platform event for the stats collector (JetStream PLATFORM_EVENTS; Nats-Msg-Id = id)",
            "payload": payload_shape(kind).schema(),
        }
        channels[key] = {
            "address": EVENTS_SUBJECT_PREFIX + kind.value,
            "title": f"Platform event {kind.value}",
            "servers": [_ref("servers", "nats")],
            "messages": {message: _ref("components", "messages", message)},
        }
        operations[f"collect{key[0].upper()}{key[1:]}"] = {
            "action": "receive",
            "channel": _ref("channels", key),
            "summary": "Internal services publish (event-publisher role); the stats collector counts it",
            "messages": [_ref("channels", key, "messages", message)],
        }
    messages["platformMetricSample"] = {
        "name": "platformMetricSample",
        "title": "platform.metrics.<name>",
        "summary": "A metric sample for the collector's threshold alerts (core NATS, not stored)",
        "payload": metric_payload_shape().schema(),
    }
    channels["platformMetric"] = {
        "address": METRICS_SUBJECT_PREFIX + "{name}",
        "title": "Metric samples",
        "servers": [_ref("servers", "nats")],
        "parameters": {"name": {"description": f"the metric name, {METRIC_NAME_PATTERN.pattern}"}},
        "messages": {"platformMetricSample": _ref("components", "messages", "platformMetricSample")},
    }
    operations["collectPlatformMetric"] = {
        "action": "receive",
        "channel": _ref("channels", "platformMetric"),
        "summary": "Internal services publish samples; the collector's alert rules watch them",
        "messages": [_ref("channels", "platformMetric", "messages", "platformMetricSample")],
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "realtime-admin",
            "version": version,
            "description": (
                "The admin hub (SignalR) and the NATS subjects of realtime-admin, generated from the payload "
                "catalog (broker_bridge/catalog.py) and the hub methods the gateway registered. The REST API "
                "is described by the OpenAPI document at /openapi.json."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "gateway": {
                "host": "realtime-admin.example.com",
                "protocol": "wss",
                "pathname": HUB_PATH,
                "description": "any gateway replica; access token as Bearer header or access_token query parameter",
                "security": [_ref("components", "securitySchemes", "bearer")],
            },
            "nats": {
                "host": "nats:4222",
                "protocol": "nats",
                "description": "TLS and an nkey of role hub-publisher or event-publisher (README, Securing NATS)",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }

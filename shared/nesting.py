"""How deeply a decoded JSON or MessagePack value nests, checked without recursion.

Untrusted input (hub messages, REST bodies, fan-out payloads) is limited in depth: deep nesting costs
stack in encoders (orjson refuses more than 254 levels when encoding) and time in every consumer.
"""

from __future__ import annotations

from typing import Any


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` has containers (lists, tuples, dicts) nested more than ``limit`` deep.

    A scalar has depth 0, ``[1]`` and ``{"a": 1}`` depth 1, ``[[1]]`` depth 2.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children if isinstance(child, dict | list | tuple))
    return False


def text_nesting_exceeds(raw: bytes | bytearray | memoryview | str, value: Any, limit: int) -> bool:
    """:func:`nesting_exceeds` for a value parsed from JSON text ``raw``, skipping the walk when ``raw``
    has too few brackets to nest that deep (the common case, at C speed)."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    return nesting_exceeds(value, limit)

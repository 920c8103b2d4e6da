"""JetStream resources the collector owns: the event stream, the dead-letter stream, its state bucket.

* stream ``PLATFORM_EVENTS`` on ``platform.events.>`` (duplicate window = the dedup window, so a
  publisher retry with the same ``Nats-Msg-Id`` is dropped by the server);
* stream ``PLATFORM_DEADLETTER`` on ``platform.deadletter.>`` (malformed events, kept 7 days);
* KV ``COLLECTOR_STATE``, ``COLLECTOR_IDS``, ``COLLECTOR_USERS``: the saved state
  (:mod:`stats_collector.state_store`), and ``COLLECTOR_LEASE``: which replica is active
  (:mod:`stats_collector.lease`).
"""

from __future__ import annotations

from typing import Final

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StreamConfig

from stats_collector.events import STREAM_SUBJECTS

EVENTS_STREAM: Final = "PLATFORM_EVENTS"
DEADLETTER_STREAM: Final = "PLATFORM_DEADLETTER"
DEADLETTER_PREFIX: Final = "platform.deadletter."
STATE_BUCKET: Final = "COLLECTOR_STATE"
IDS_BUCKET: Final = "COLLECTOR_IDS"
USERS_BUCKET: Final = "COLLECTOR_USERS"
LEASE_BUCKET: Final = "COLLECTOR_LEASE"
CHECKPOINT_KEY: Final = "checkpoint"
BASELINE_KEY: Final = "baseline"
# Dead letters are for a person to inspect; a week is long enough to notice and short enough to bound.
DEADLETTER_MAX_AGE_SECONDS: Final = 7 * 86400.0
# Long enough to cover a crash and restart, so a replayed malformed event is dead-lettered once.
DEADLETTER_DUPLICATE_WINDOW_SECONDS: Final = 3600.0


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update its limits if it exists (subjects and name are fixed)."""
    try:
        await js.stream_info(config.name or "")
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


def events_stream_config(
    *, max_age_seconds: float, max_bytes: int, replicas: int, duplicate_window: float
) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=list(STREAM_SUBJECTS),
        max_age=max_age_seconds,
        max_bytes=max_bytes,
        num_replicas=replicas,
        duplicate_window=duplicate_window,
        discard=DiscardPolicy.OLD,
    )


def deadletter_stream_config(*, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=DEADLETTER_STREAM,
        subjects=[DEADLETTER_PREFIX + ">"],
        max_age=DEADLETTER_MAX_AGE_SECONDS,
        max_bytes=64 * 1024 * 1024,
        num_replicas=replicas,
        discard=DiscardPolicy.OLD,
        duplicate_window=DEADLETTER_DUPLICATE_WINDOW_SECONDS,
    )

"""The collector's saved state in NATS, in three buckets, none of whose values grows with the volume.

* ``COLLECTOR_STATE`` (no expiry): key ``checkpoint`` — the aggregate's small part and the stream sequence
  it reflects (:meth:`PlatformAggregate.to_checkpoint`), written with a compare-and-set on its revision so a
  replica that lost the lease cannot overwrite its successor; key ``baseline`` — counts set with
  ``python -m stats_collector seed``.
* ``COLLECTOR_IDS`` (``max_age`` = the dedup window + :data:`EXPIRY_SLACK_SECONDS`): the remembered ids as
  journal records (:mod:`stats_collector.journal`), keyed ``<after>-<upto>.<part>`` by the range of stream
  sequences they cover.
* ``COLLECTOR_USERS`` (``max_age`` = active window + future tolerance + slack): the same for active users.

A record is written after the ids it holds arrived and is kept ``max_age`` from its write, so it outlives
every id's window (and every user's activity) it carries; NATS drops it after that without a delete.
Journal records of a range are always written before the checkpoint that covers the range: loading takes
the checkpoint and every journal entry at or below its sequence, which is the state at that sequence.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from broker_bridge.interface import BrokerUnavailable
from broker_bridge.keyvalue import NatsKeyValueStore
from shared import jsoncodec
from stats_collector.aggregate import JournalDelta, from_single_value_state
from stats_collector.consumer import StreamReader, position
from stats_collector.jetstream import BASELINE_KEY, CHECKPOINT_KEY, IDS_BUCKET, STATE_BUCKET, USERS_BUCKET
from stats_collector.journal import Entry, decode_record, encode_records

log = logging.getLogger(__name__)

# Where collectors before the checkpoint-and-journal layout kept their whole state, as one value.
SINGLE_VALUE_STATE_KEY: Final = "aggregate"

# Journal records outlive their window by this much: covers the time between an id's arrival and the write
# of its record, and clock differences between the NATS nodes that stamp arrivals and expire records.
EXPIRY_SLACK_SECONDS: Final = 120.0
# How long loading waits for the next part of a journal before it takes the journal as read.
LOAD_READ_TIMEOUT_SECONDS: Final = 2.0
_KV_OPERATION: Final = "KV-Operation"
_MARKER_REASON: Final = "Nats-Marker-Reason"


class Fenced(Exception):
    """The checkpoint was written by another replica since this one read it: it is no longer the active one."""


@dataclass(slots=True)
class Saved:
    """What :meth:`StateStore.load` found: the checkpoint (None: none yet), its revision, journal entries."""

    checkpoint: dict[str, Any] | None
    revision: int
    ids: list[Entry] = field(default_factory=list)
    users: list[Entry] = field(default_factory=list)

    @property
    def sequence(self) -> int:
        return int(self.checkpoint["sequence"]) if self.checkpoint else 0


class StateStore:
    """Reads and writes the three buckets; :attr:`largest_write` is the largest value written so far."""

    def __init__(
        self,
        client: Client,
        *,
        state: NatsKeyValueStore,
        ids: NatsKeyValueStore,
        users: NatsKeyValueStore,
        record_bytes: int,
        read_batch: int,
    ) -> None:
        self._client = client
        self._state = state
        self._ids = ids
        self._users = users
        self._record_bytes = record_bytes
        self._read_batch = read_batch
        self.largest_write = 0

    @classmethod
    async def open(
        cls,
        client: Client,
        *,
        replicas: int,
        dedup_window_seconds: float,
        user_window_seconds: float,
        record_bytes: int,
        read_batch: int,
    ) -> StateStore:
        """Open (create, or bring the expiry of) the three buckets."""
        state = await NatsKeyValueStore.open(client, bucket=STATE_BUCKET, replicas=replicas)
        ids_ttl = dedup_window_seconds + EXPIRY_SLACK_SECONDS
        users_ttl = user_window_seconds + EXPIRY_SLACK_SECONDS
        ids = await open_expiring_bucket(client, IDS_BUCKET, ttl_seconds=ids_ttl, replicas=replicas)
        users = await open_expiring_bucket(client, USERS_BUCKET, ttl_seconds=users_ttl, replicas=replicas)
        return cls(client, state=state, ids=ids, users=users, record_bytes=record_bytes, read_batch=read_batch)

    # -- reading ------------------------------------------------------------------------------

    async def load(self) -> Saved:
        """The checkpoint and every journal entry NATS still holds (or, before the first checkpoint, the state
        an earlier collector saved as one value, converted)."""
        checkpoint, revision = await self.read_checkpoint()
        ids = await self._read_journal(IDS_BUCKET)
        users = await self._read_journal(USERS_BUCKET)
        if checkpoint is None:
            old = await self._state.get(SINGLE_VALUE_STATE_KEY)
            if old is not None:
                checkpoint, old_ids, old_users = from_single_value_state(jsoncodec.loads(old))
                log.info("converted the single-value state at stream sequence %d", checkpoint["sequence"])
                ids.extend(old_ids)
                users.extend(old_users)
        return Saved(checkpoint, revision, ids, users)

    async def read_checkpoint(self) -> tuple[dict[str, Any] | None, int]:
        found = await self._state.entry(CHECKPOINT_KEY)
        if found is None:
            return None, 0
        value, revision = found
        checkpoint = jsoncodec.loads(value)
        if not isinstance(checkpoint, dict):
            raise ValueError("the saved checkpoint is not an object")
        return checkpoint, revision

    async def read_baseline(self) -> dict[str, Any] | None:
        raw = await self._state.get(BASELINE_KEY)
        baseline = jsoncodec.loads(raw) if raw is not None else None
        return baseline if isinstance(baseline, dict) else None

    async def _read_journal(self, bucket: str) -> list[Entry]:
        stream = f"KV_{bucket}"
        try:
            info = await self._client.jetstream().stream_info(stream)
        except (nats.errors.Error, TimeoutError) as error:
            raise BrokerUnavailable(stream) from error
        last = int(info.state.last_seq)
        if not info.state.messages:
            return []
        reader = StreamReader(
            self._client,
            stream=stream,
            start_sequence=int(info.state.first_seq),
            batch=self._read_batch,
            filter_subject=f"$KV.{bucket}.>",
        )
        entries: list[Entry] = []
        await reader.start()
        try:
            while True:
                messages = await reader.read(timeout=LOAD_READ_TIMEOUT_SECONDS)
                if not messages:
                    return entries  # the rest aged out while reading
                for message in messages:
                    headers = message.headers or {}
                    if message.data and _KV_OPERATION not in headers and _MARKER_REASON not in headers:
                        entries.extend(decode_record(message.data))
                sequence, _, pending = position(messages[-1].reply)
                if sequence >= last or pending == 0:
                    return entries
        finally:
            await reader.close()

    # -- writing ------------------------------------------------------------------------------

    async def write_journal(self, delta: JournalDelta) -> None:
        """The records of ``delta`` (ids and users), all stored when this returns."""
        users = [(sequence, at, user) for user, (sequence, at) in delta.users.items()]
        writes = []
        for store, entries in ((self._ids, delta.ids), (self._users, users)):
            for part, record in enumerate(encode_records(entries, max_bytes=self._record_bytes)):
                writes.append(self._put(store, f"{delta.after}-{delta.upto}.{part}", record))
        await asyncio.gather(*writes)

    async def write_checkpoint(self, checkpoint: dict[str, Any], *, revision: int) -> int:
        """Store ``checkpoint`` if the stored one is still at ``revision`` (0: none); the new revision.
        Raises :class:`Fenced` when another replica wrote it since."""
        value = jsoncodec.dumps(checkpoint)
        written = await self._state.compare_and_set(CHECKPOINT_KEY, value, revision)
        if written is None:
            raise Fenced(f"the checkpoint moved past revision {revision}")
        self.largest_write = max(self.largest_write, len(value))
        if revision == 0:  # the first checkpoint supersedes a single-value state, if there was one
            await self._state.delete(SINGLE_VALUE_STATE_KEY)
        return written

    async def _put(self, store: NatsKeyValueStore, key: str, value: bytes) -> None:
        await store.put(key, value)
        self.largest_write = max(self.largest_write, len(value))


async def open_expiring_bucket(client: Client, bucket: str, *, ttl_seconds: float, replicas: int) -> NatsKeyValueStore:
    """A bucket whose entries expire after ``ttl_seconds``; an existing bucket gets that expiry too."""
    store = await NatsKeyValueStore.open(client, bucket=bucket, ttl_seconds=ttl_seconds, replicas=replicas)
    js = client.jetstream()
    stream = f"KV_{bucket}"
    info = await js.stream_info(stream)
    if info.config.max_age is None or abs(info.config.max_age - ttl_seconds) > 1e-3:
        log.info("setting the expiry of %s to %.0f s", bucket, ttl_seconds)
        info.config.max_age = ttl_seconds
        try:
            await js.update_stream(info.config)
        except nats.js.errors.BadRequestError as error:
            raise BrokerUnavailable(stream) from error
    return store

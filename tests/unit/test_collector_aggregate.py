"""The platform aggregate: counting, duplicates by arrival, future timestamps, the active window, day rollover,
exact money, gaps, limits, and restoring from a checkpoint plus journal entries after a crash at any point."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.models import PlatformSnapshot
from stats_collector.aggregate import Gap, Outcome, PlatformAggregate, from_single_value_state, to_cents
from stats_collector.events import EventKind, PlatformEvent

NOW = datetime(2025, 10, 17, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
R = EventKind.USER_REGISTERED
A = EventKind.USER_ACTIVE
W = EventKind.WEBSITE_GENERATED
I = EventKind.IMAGE_GENERATED  # noqa: E741
F = EventKind.GENERATION_FAILED
P = EventKind.PAYMENT_SUCCEEDED

_counter = iter(range(10**9))
# A baseline larger than any test's set of users, for tests of the active window: activeUsers is at most
# totalUsers, and these tests are about who is active, not about how many users are known.
KNOWN_USERS = 1000


def knowing_users(aggregate: PlatformAggregate) -> PlatformAggregate:
    aggregate.seed(total_users=KNOWN_USERS)
    return aggregate


def ev(
    kind: EventKind,
    at: datetime = NOW,
    user: str | None = "u1",
    *,
    id: str | None = None,
    gen: float | None = None,
    amount: float | None = None,
    currency: str | None = None,
) -> PlatformEvent:
    if kind is W and gen is None:
        gen = 1.0
    if kind is P:
        amount = 1.0 if amount is None else amount
        currency = currency or "USD"
    return PlatformEvent(id or f"e{next(_counter)}", kind, at, user, gen, amount, currency)


def apply_all(aggregate: PlatformAggregate, events: Iterable[PlatformEvent], now: datetime = NOW) -> list[bool]:
    return [aggregate.apply(event, now=now) is Outcome.COUNTED for event in events]


# -- counting ---------------------------------------------------------------------------------


def test_empty_snapshot() -> None:
    aggregate = PlatformAggregate()
    assert aggregate.snapshot(now=NOW) == PlatformSnapshot()
    assert aggregate.average_generation_time() == 0.0


def test_counts_each_kind() -> None:
    aggregate = PlatformAggregate()
    applied = apply_all(
        aggregate,
        [
            ev(R, user="a"),
            ev(R, user="b"),
            ev(A, user="c"),
            ev(W, user="a", gen=2.0),
            ev(W, user="a", gen=3.5),
            ev(I, user="b", gen=9.0),
            ev(F, user=None),
            ev(F, user="d"),
            ev(P, user="a", amount=19.99),
            ev(P, user="b", amount=0.01),
        ],
    )
    assert all(applied)
    assert aggregate.snapshot(now=NOW) == PlatformSnapshot(
        total_users=2,
        # a, b, c and d are active (a failed generation with a user is activity too), but only two users are
        # known: activeUsers is at most totalUsers, the other two are reported apart.
        active_users=2,
        new_users_today=2,
        websites_generated=2,
        images_generated=1,
        failed_generations=2,
        total_revenue=20.0,
        revenue_today=20.0,
    )
    assert aggregate.active_beyond_total == 2
    assert aggregate.average_generation_time() == 2.75  # websites only; the image's time is ignored


def test_registered_counts_per_event_not_per_user() -> None:
    aggregate = PlatformAggregate()
    apply_all(aggregate, [ev(R, user="same"), ev(R, user="same")])
    snapshot = aggregate.snapshot(now=NOW)
    assert (snapshot.total_users, snapshot.active_users) == (2, 1)


def test_duplicate_id_is_ignored() -> None:
    aggregate = PlatformAggregate()
    first = ev(P, amount=5, id="pay-1")
    assert aggregate.apply(first, now=NOW) is Outcome.COUNTED
    before = aggregate.to_checkpoint(now=NOW)
    assert aggregate.apply(first, now=NOW) is Outcome.DUPLICATE
    assert aggregate.apply(ev(R, id="pay-1", user="other"), now=NOW) is Outcome.DUPLICATE  # same id, other content
    assert {**aggregate.to_checkpoint(now=NOW), "sequence": 1} == before
    assert aggregate.snapshot(now=NOW).total_revenue == 5.0


def test_payment_in_other_currency_is_ignored_and_not_remembered() -> None:
    aggregate = PlatformAggregate(currency="eur")
    assert aggregate.currency == "EUR"
    assert aggregate.apply(ev(P, amount=10, currency="USD", id="x"), now=NOW) is Outcome.OTHER_CURRENCY
    assert aggregate.remembered_ids == 0
    assert aggregate.apply(ev(P, amount=10, currency="EUR", id="y"), now=NOW) is Outcome.COUNTED
    assert aggregate.snapshot(now=NOW).total_revenue == 10.0


# -- duplicates by arrival --------------------------------------------------------------------


def test_a_two_day_old_event_resent_a_second_later_counts_once() -> None:
    aggregate = PlatformAggregate(dedup_window_seconds=120)
    old = ev(P, NOW - timedelta(days=2), id="late", amount=7)
    assert aggregate.apply(old, now=NOW, arrival=NOW) is Outcome.COUNTED
    assert aggregate.apply(old, now=NOW, arrival=NOW + timedelta(seconds=1)) is Outcome.DUPLICATE
    assert aggregate.snapshot(now=NOW).total_revenue == 7.0


def test_the_window_follows_arrival_not_event_time() -> None:
    aggregate = PlatformAggregate(dedup_window_seconds=120)
    fresh = ev(A, NOW, id="x")
    assert aggregate.apply(fresh, now=NOW, arrival=NOW) is Outcome.COUNTED
    # an event stamped hours later arrives: it moves no horizon
    assert aggregate.apply(ev(A, NOW + timedelta(seconds=200)), now=NOW, arrival=NOW) is Outcome.COUNTED
    at_edge = NOW + timedelta(seconds=120)
    assert aggregate.apply(fresh, now=at_edge, arrival=at_edge) is Outcome.DUPLICATE
    after = at_edge + timedelta(microseconds=1)
    assert aggregate.apply(fresh, now=after, arrival=after) is Outcome.COUNTED  # documented: counts again
    assert aggregate.apply(fresh, now=after, arrival=after) is Outcome.DUPLICATE  # and is remembered anew


def test_ids_are_forgotten_once_their_window_has_passed() -> None:
    aggregate = PlatformAggregate(dedup_window_seconds=120)
    for n in range(100):
        aggregate.apply(ev(A, NOW, id=f"i{n}"), now=NOW, arrival=NOW + timedelta(seconds=n))
    assert aggregate.remembered_ids == 100
    aggregate.apply(ev(A, NOW), now=NOW, arrival=NOW + timedelta(seconds=250))
    assert aggregate.remembered_ids == 1 + sum(1 for n in range(100) if n >= 130)


def test_arrival_never_moves_back() -> None:
    aggregate = PlatformAggregate(dedup_window_seconds=120)
    aggregate.apply(ev(A, NOW, id="a"), now=NOW, arrival=NOW + timedelta(seconds=500))
    assert aggregate.apply(ev(A, NOW, id="a"), now=NOW, arrival=NOW) is Outcome.DUPLICATE
    assert aggregate.newest_arrival_micros == (NOW + timedelta(seconds=500) - datetime(1970, 1, 1, tzinfo=UTC)) // (
        timedelta(microseconds=1)
    )


def test_beyond_max_remembered_ids_the_oldest_are_forgotten_and_counted() -> None:
    aggregate = PlatformAggregate(max_remembered_ids=10)
    for n in range(15):
        aggregate.apply(ev(A, NOW, id=f"i{n}"), now=NOW)
    assert (aggregate.remembered_ids, aggregate.evicted_ids) == (10, 5)
    assert aggregate.apply(ev(A, NOW, id="i0"), now=NOW) is Outcome.COUNTED  # forgotten early: counts again
    assert aggregate.apply(ev(A, NOW, id="i14"), now=NOW) is Outcome.DUPLICATE


# -- timestamps from the future ---------------------------------------------------------------


def test_an_event_from_2099_is_refused_and_moves_no_window() -> None:
    aggregate = PlatformAggregate(dedup_window_seconds=120, active_window_seconds=900)
    assert aggregate.apply(ev(P, NOW, id="p", amount=3), now=NOW) is Outcome.COUNTED
    future = ev(R, datetime(2099, 1, 1, tzinfo=UTC), id="f", user="time-traveller")
    assert aggregate.apply(future, now=NOW) is Outcome.FUTURE
    assert aggregate.apply(future, now=NOW) is Outcome.FUTURE  # not remembered: refused again, never "duplicate"
    later = NOW + timedelta(seconds=100)
    assert aggregate.apply(ev(P, NOW, id="p", amount=3), now=later, arrival=later) is Outcome.DUPLICATE
    snapshot = aggregate.snapshot(now=NOW)
    # the payment's user is active, but no user is known: not counted as active, reported apart
    assert (snapshot.total_users, snapshot.active_users, snapshot.total_revenue) == (0, 0, 3.0)
    assert aggregate.active_beyond_total == 1


def test_future_tolerance_is_inclusive() -> None:
    aggregate = PlatformAggregate(future_tolerance_seconds=300)
    assert aggregate.apply(ev(A, NOW + timedelta(seconds=300)), now=NOW) is Outcome.COUNTED
    assert aggregate.apply(ev(A, NOW + timedelta(seconds=300, microseconds=1)), now=NOW) is Outcome.FUTURE


def test_a_late_event_counts_in_the_totals_and_on_its_own_day() -> None:
    aggregate = PlatformAggregate()
    yesterday = NOW - timedelta(days=1)
    aggregate.apply(ev(R, yesterday), now=NOW)
    aggregate.apply(ev(P, yesterday, amount=4), now=NOW)
    today = aggregate.snapshot(now=NOW)
    assert (today.total_users, today.new_users_today, today.total_revenue, today.revenue_today) == (1, 0, 4.0, 0.0)
    assert aggregate.to_checkpoint(now=NOW)["days"] == {
        yesterday.date().isoformat(): {"newUsers": 1, "revenueCents": 400}
    }


# -- gaps -------------------------------------------------------------------------------------


def test_a_skipped_sequence_is_a_gap_until_a_new_baseline() -> None:
    aggregate = PlatformAggregate()
    assert aggregate.advance(1, NOW) is None
    gap = aggregate.advance(5, NOW)
    assert gap is not None and (gap.first, gap.last, gap.missing) == (2, 4, 3)
    second = aggregate.advance(10, NOW)
    assert second is not None and (second.first, second.last, second.missing) == (2, 9, 7)
    assert aggregate.gap == second
    assert second.to_snapshot_gap().to_wire() == {
        "firstSequence": 2,
        "lastSequence": 9,
        "missing": 7,
        "detectedAt": "2025-10-17T12:00:00.000Z",
    }
    aggregate.seed(total_users=1, mark="seeded-1")
    assert aggregate.gap is None
    aggregate.advance(12, NOW)
    aggregate.seed(total_users=1, mark="seeded-1")  # the same seeding again: still incomplete
    assert aggregate.gap == Gap(11, 11, 1, second.detected_at_micros)


def test_a_stream_that_ends_before_the_state_is_a_gap_and_reading_goes_on_after_its_end() -> None:
    aggregate = PlatformAggregate()
    apply_all(aggregate, [ev(R, id=f"r{n}") for n in range(10)])
    gap = aggregate.rewind(4)
    assert (gap.first, gap.last, gap.missing, aggregate.sequence) == (5, 10, 6, 4)
    assert aggregate.advance(5, NOW) is None  # the new stream's next event
    assert aggregate.apply(ev(R, id="new"), now=NOW, sequence=6) is Outcome.COUNTED
    assert aggregate.snapshot(now=NOW).total_users == 11
    with pytest.raises(ValueError, match="rewind"):
        aggregate.rewind(6)


def test_sequences_must_advance() -> None:
    aggregate = PlatformAggregate()
    aggregate.advance(3, NOW)
    with pytest.raises(ValueError, match="not after"):
        aggregate.advance(3, NOW)


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="active_window_seconds"):
        PlatformAggregate(active_window_seconds=0)
    with pytest.raises(ValueError, match="dedup_window_seconds"):
        PlatformAggregate(dedup_window_seconds=float("nan"))
    with pytest.raises(ValueError, match="currency"):
        PlatformAggregate(currency="US")


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PlatformAggregate().snapshot(now=NOW.replace(tzinfo=None))


# -- active users -----------------------------------------------------------------------------


def test_active_window_boundaries_and_expiry() -> None:
    aggregate = knowing_users(PlatformAggregate(active_window_seconds=900))
    apply_all(
        aggregate,
        [
            ev(A, NOW - timedelta(seconds=900), user="edge"),  # exactly at the window start: counts
            ev(A, NOW - timedelta(seconds=901), user="stale"),  # just outside: never counts
            ev(A, NOW + timedelta(seconds=30), user="ahead"),  # producer clock ahead: counts
        ],
    )
    assert aggregate.snapshot(now=NOW).active_users == 2
    assert aggregate.snapshot(now=NOW + timedelta(microseconds=1)).active_users == 1
    assert aggregate.snapshot(now=NOW + timedelta(seconds=931)).active_users == 0
    assert aggregate.tracked_users == 0


def test_beyond_max_active_users_the_least_recent_are_dropped_and_counted() -> None:
    aggregate = knowing_users(PlatformAggregate(max_active_users=3))
    for n in range(5):
        aggregate.apply(ev(A, NOW - timedelta(seconds=10 - n), user=f"u{n}"), now=NOW)
    assert (aggregate.snapshot(now=NOW).active_users, aggregate.evicted_users) == (3, 2)


def test_out_of_order_activity_keeps_the_newest_time() -> None:
    aggregate = knowing_users(PlatformAggregate(active_window_seconds=900))
    aggregate.apply(ev(A, NOW - timedelta(seconds=10), user="u"), now=NOW)
    aggregate.apply(ev(A, NOW - timedelta(seconds=800), user="u"), now=NOW)  # late, older: no effect
    assert aggregate.snapshot(now=NOW + timedelta(seconds=850)).active_users == 1
    assert aggregate.snapshot(now=NOW + timedelta(seconds=891)).active_users == 0


def test_many_touches_of_few_users_keep_memory_bounded() -> None:
    aggregate = knowing_users(PlatformAggregate())
    for second in range(5000):
        moment = NOW + timedelta(seconds=second)
        aggregate.apply(ev(A, moment, user=f"u{second % 3}"), now=moment)
    assert aggregate.snapshot(now=NOW + timedelta(seconds=5000)).active_users == 3
    assert len(aggregate._active_heap) < 200


# -- days -------------------------------------------------------------------------------------


def test_snapshot_after_midnight_shows_zero_today_without_new_events() -> None:
    aggregate = PlatformAggregate()
    evening = datetime(2025, 10, 17, 23, 50, tzinfo=UTC)
    apply_all(aggregate, [ev(R, evening), ev(P, evening, amount=12.5)], now=evening)
    assert aggregate.snapshot(now=evening).new_users_today == 1
    after_midnight = aggregate.snapshot(now=evening + timedelta(minutes=15))
    assert (after_midnight.new_users_today, after_midnight.revenue_today) == (0, 0.0)
    assert (after_midnight.total_users, after_midnight.total_revenue) == (1, 12.5)


def test_late_event_from_yesterday_does_not_count_today() -> None:
    aggregate = PlatformAggregate()
    midnight = datetime(2025, 10, 18, tzinfo=UTC)
    aggregate.apply(ev(R, midnight - timedelta(seconds=5)), now=midnight + timedelta(seconds=5))
    aggregate.apply(ev(R, midnight + timedelta(seconds=1)), now=midnight + timedelta(seconds=5))
    snapshot = aggregate.snapshot(now=midnight + timedelta(seconds=5))
    assert (snapshot.total_users, snapshot.new_users_today) == (2, 1)
    # and "yesterday" as seen just before midnight still had it
    assert aggregate.snapshot(now=midnight - timedelta(seconds=1)).new_users_today == 1


def test_event_ahead_of_midnight_counts_when_the_day_starts() -> None:
    aggregate = PlatformAggregate()
    midnight = datetime(2025, 10, 18, tzinfo=UTC)
    aggregate.apply(ev(P, midnight + timedelta(seconds=2), amount=3), now=midnight - timedelta(seconds=1))
    assert aggregate.snapshot(now=midnight - timedelta(seconds=1)).revenue_today == 0.0
    assert aggregate.snapshot(now=midnight + timedelta(seconds=3)).revenue_today == 3.0


def test_events_days_away_count_in_totals_only() -> None:
    aggregate = PlatformAggregate()
    apply_all(aggregate, [ev(R, NOW - timedelta(days=3)), ev(P, NOW - timedelta(days=3), amount=1)])
    snapshot = aggregate.snapshot(now=NOW)
    assert (snapshot.total_users, snapshot.new_users_today, snapshot.total_revenue, snapshot.revenue_today) == (
        1,
        0,
        1.0,
        0.0,
    )
    assert aggregate.to_checkpoint(now=NOW)["days"] == {}


def test_old_day_buckets_are_pruned() -> None:
    aggregate = PlatformAggregate()
    for day in range(10):
        moment = NOW + timedelta(days=day)
        aggregate.apply(ev(R, moment), now=moment)
    assert sorted(aggregate.to_checkpoint(now=NOW + timedelta(days=9))["days"]) == ["2025-10-25", "2025-10-26"]


def test_berlin_midnight_is_not_utc_midnight() -> None:
    aggregate = PlatformAggregate(timezone=BERLIN)
    # 2025-10-17 22:30 UTC is 00:30 on the 18th in Berlin (summer time, UTC+2)
    berlin_morning = datetime(2025, 10, 18, 8, 0, tzinfo=BERLIN)
    apply_all(
        aggregate,
        [
            ev(R, datetime(2025, 10, 17, 22, 30, tzinfo=UTC)),  # Berlin 18th: today
            ev(R, datetime(2025, 10, 17, 21, 30, tzinfo=UTC)),  # Berlin 17th 23:30: yesterday
        ],
        now=berlin_morning,
    )
    assert aggregate.snapshot(now=berlin_morning).new_users_today == 1
    utc_aggregate = PlatformAggregate()
    apply_all(
        utc_aggregate,
        [ev(R, datetime(2025, 10, 17, 22, 30, tzinfo=UTC)), ev(R, datetime(2025, 10, 17, 21, 30, tzinfo=UTC))],
        now=berlin_morning,
    )
    assert utc_aggregate.snapshot(now=berlin_morning).new_users_today == 0


def test_berlin_day_with_daylight_saving_change() -> None:
    # 2025-10-26 has 25 hours in Berlin: from 2025-10-25 22:00 UTC to 2025-10-26 23:00 UTC
    aggregate = PlatformAggregate(timezone=BERLIN)
    start, end = datetime(2025, 10, 25, 22, 0, tzinfo=UTC), datetime(2025, 10, 26, 23, 0, tzinfo=UTC)
    now = end - timedelta(seconds=1)
    apply_all(
        aggregate,
        [ev(R, start - timedelta(seconds=1)), ev(R, start), ev(R, end - timedelta(seconds=1)), ev(R, end)],
        now=now,
    )
    assert aggregate.snapshot(now=now).new_users_today == 2
    assert aggregate.snapshot(now=end).new_users_today == 1


# -- seeding ----------------------------------------------------------------------------------


def test_seed_sets_the_baseline_and_is_idempotent() -> None:
    aggregate = PlatformAggregate()
    apply_all(aggregate, [ev(R), ev(W), ev(P, amount=1.5)])
    for _ in range(2):
        aggregate.seed(total_users=5432, websites_generated=1203, total_revenue=1000.1)
    snapshot = aggregate.snapshot(now=NOW)
    assert (snapshot.total_users, snapshot.websites_generated, snapshot.total_revenue) == (5433, 1204, 1001.6)
    assert (snapshot.new_users_today, snapshot.revenue_today) == (1, 1.5)
    aggregate.seed(images_generated=7, failed_generations=3)  # others stay as they were
    snapshot = aggregate.snapshot(now=NOW)
    assert (snapshot.total_users, snapshot.images_generated, snapshot.failed_generations) == (5433, 7, 3)
    aggregate.seed(total_users=0)
    assert aggregate.snapshot(now=NOW).total_users == 1


@pytest.mark.parametrize(
    "arguments",
    [{"total_users": -1}, {"websites_generated": 1.5}, {"images_generated": True}, {"total_revenue": float("inf")}],
)
def test_seed_rejects_bad_values(arguments: dict[str, object]) -> None:
    aggregate = PlatformAggregate()
    with pytest.raises(ValueError, match="must be"):
        aggregate.seed(**arguments)  # type: ignore[arg-type]
    assert aggregate.snapshot(now=NOW) == PlatformSnapshot()


# -- money ------------------------------------------------------------------------------------


def test_cents_are_exact_where_floats_are_not() -> None:
    aggregate = PlatformAggregate()
    apply_all(aggregate, [ev(P, amount=0.1) for _ in range(10)] + [ev(P, amount=0.2)])
    assert sum([0.1] * 10) != 1.0
    assert aggregate.snapshot(now=NOW).total_revenue == 1.2


def test_sub_cent_amounts_round_half_to_even() -> None:
    assert [to_cents(x) for x in (19.99, 0.005, 0.015, 0.025, 2.675, 1e9)] == [1999, 0, 2, 2, 268, 100_000_000_000]


@given(st.lists(st.integers(min_value=0, max_value=10**11), max_size=60))
def test_revenue_is_the_exact_sum_of_cents(cents: list[int]) -> None:
    aggregate = PlatformAggregate(dedup_window_seconds=10**9)
    apply_all(aggregate, [ev(P, amount=float(Decimal(c) / 100)) for c in cents])
    snapshot = aggregate.snapshot(now=NOW)
    expected = float(Decimal(sum(cents)) / 100)
    assert snapshot.total_revenue == expected == snapshot.revenue_today


@given(st.lists(st.floats(min_value=0, max_value=1e9), max_size=40), st.randoms(use_true_random=False))
def test_revenue_does_not_depend_on_order(amounts: list[float], random: object) -> None:
    events = [ev(P, amount=amount) for amount in amounts]
    forward, shuffled = PlatformAggregate(), PlatformAggregate()
    apply_all(forward, events)
    mixed = list(events)
    random.shuffle(mixed)  # type: ignore[attr-defined]
    apply_all(shuffled, mixed)
    assert forward.snapshot(now=NOW) == shuffled.snapshot(now=NOW)
    assert forward.snapshot(now=NOW).total_revenue == sum(to_cents(amount) for amount in amounts) / 100


# -- saved state ------------------------------------------------------------------------------

OPTIONS = {"active_window_seconds": 900.0, "dedup_window_seconds": 120.0}


def test_checkpoint_is_small_json_and_round_trips_with_the_journal() -> None:
    aggregate = PlatformAggregate(timezone=BERLIN)
    apply_all(aggregate, [ev(R), ev(W, gen=1.25), ev(P, amount=9.99), ev(F, user=None)])
    aggregate.seed(total_users=10)
    checkpoint = aggregate.to_checkpoint(now=NOW)
    assert checkpoint["version"] == 2 and checkpoint["sequence"] == 4
    assert len(orjson.dumps(checkpoint)) < 1000
    delta = aggregate.take_delta()
    assert (delta.after, delta.upto, len(delta.ids), len(delta.users)) == (0, 4, 4, 1)
    users = [(sequence, at, user) for user, (sequence, at) in delta.users.items()]
    restored = PlatformAggregate.restore(
        orjson.loads(orjson.dumps(checkpoint)), ids=delta.ids, users=users, now=NOW, timezone=BERLIN
    )
    assert restored.to_checkpoint(now=NOW) == checkpoint
    assert restored.snapshot(now=NOW) == aggregate.snapshot(now=NOW)
    assert restored.average_generation_time() == aggregate.average_generation_time() == 1.25
    assert restored.journal_entries() == aggregate.journal_entries()


def test_journal_entries_above_the_checkpoint_are_ignored() -> None:
    # SIGKILL after the journal of sequences 3..4 was written but before the checkpoint at 4
    aggregate = knowing_users(PlatformAggregate())
    apply_all(aggregate, [ev(A, id="a", user="x"), ev(A, id="b", user="y")])
    checkpoint = aggregate.to_checkpoint(now=NOW)
    first = aggregate.take_delta()
    apply_all(aggregate, [ev(A, id="c", user="z"), ev(A, id="a", user="w")])
    second = aggregate.take_delta()
    ids = first.ids + second.ids
    users = [(seq, at, user) for delta in (first, second) for user, (seq, at) in delta.users.items()]
    restored = PlatformAggregate.restore(checkpoint, ids=ids, users=users, now=NOW)
    assert (restored.sequence, restored.remembered_ids, restored.snapshot(now=NOW).active_users) == (2, 2, 2)
    assert restored.apply(ev(A, id="c", user="z"), now=NOW) is Outcome.COUNTED  # applied again: counted once


def test_the_single_value_state_of_earlier_collectors_is_converted() -> None:
    micros = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    old = {
        "seq": 41,
        "state": {
            "version": 1,
            "currency": "USD",
            "baseline": {
                "totalUsers": 100,
                "websitesGenerated": 0,
                "imagesGenerated": 0,
                "failedGenerations": 0,
                "totalRevenueCents": 0,
            },
            "counts": {
                "registeredUsers": 3,
                "websitesGenerated": 1,
                "imagesGenerated": 0,
                "failedGenerations": 0,
                "revenueCents": 1999,
                "generationMicros": 2_500_000,
                "timedGenerations": 1,
            },
            "days": {"2025-10-17": {"newUsers": 2, "revenueCents": 1999}},
            "activeUsers": {"u1": micros - 60_000_000, "u2": micros - 10_000_000},
            "seenIds": {"e1": micros - 5_000_000},
            "newestEventMicros": micros,
            "lastNowMicros": micros,
        },
    }
    checkpoint, ids, users = from_single_value_state(orjson.loads(orjson.dumps(old)))
    aggregate = PlatformAggregate.restore(checkpoint, ids=ids, users=users, now=NOW)
    assert aggregate.sequence == 41
    assert aggregate.snapshot(now=NOW) == PlatformSnapshot(
        total_users=103,
        active_users=2,
        new_users_today=2,
        websites_generated=1,
        total_revenue=19.99,
        revenue_today=19.99,
    )
    assert aggregate.apply(ev(A, id="e1"), now=NOW + timedelta(seconds=60)) is Outcome.DUPLICATE
    with pytest.raises(ValueError, match="version"):
        from_single_value_state({"seq": 1, "state": {"version": 7}})


def test_checkpoint_of_an_unknown_version_is_refused() -> None:
    checkpoint = PlatformAggregate().to_checkpoint(now=NOW)
    with pytest.raises(ValueError, match="version"):
        PlatformAggregate.restore({**checkpoint, "version": 1}, now=NOW)
    with pytest.raises(ValueError, match="version"):
        PlatformAggregate.restore({}, now=NOW)


def test_checkpoint_in_another_currency_is_refused() -> None:
    checkpoint = PlatformAggregate(currency="EUR").to_checkpoint(now=NOW)
    with pytest.raises(ValueError, match="currency"):
        PlatformAggregate.restore(checkpoint, now=NOW, currency="USD")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("counts", "registeredUsers"), -1, "registeredUsers"),
        (("baseline", "totalRevenueCents"), 1.5, "totalRevenueCents"),
        (("baseline", "mark"), 5, "mark"),
        (("counts",), [], "counts"),
        (("days",), {"not-a-date": {"newUsers": 1, "revenueCents": 0}}, "not a date"),
        (("sequence",), "x", "sequence"),
        (("gap",), {"first": 1}, "last"),
    ],
)
def test_malformed_checkpoint_names_the_key(path: tuple[str, ...], value: object, message: str) -> None:
    state = PlatformAggregate().to_checkpoint(now=NOW)
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        PlatformAggregate.restore(state, now=NOW)


# -- properties over event streams ------------------------------------------------------------

USERS = [f"user-{n}" for n in range(6)]
IDS = [f"id-{n}" for n in range(25)]
KINDS = list(EventKind)


@st.composite
def stream_events(draw: st.DrawFn, *, span_seconds: int) -> PlatformEvent:
    """Events from a small pool of ids and users (so duplicates and repeat users are common)."""
    kind = draw(st.sampled_from(KINDS))
    at = NOW - timedelta(microseconds=draw(st.integers(-60 * 10**6, span_seconds * 10**6)))
    user = draw(st.none() | st.sampled_from(USERS)) if kind is F else draw(st.sampled_from(USERS))
    amount = draw(st.integers(0, 10**6)) / 100 if kind is P else None
    currency = draw(st.sampled_from(["USD", "USD", "EUR"])) if kind is P else None
    gen = draw(st.floats(0, 600)) if kind is W else None
    return PlatformEvent(draw(st.sampled_from(IDS)), kind, at, user, gen, amount, currency)


@dataclass
class Expected:
    snapshot: PlatformSnapshot
    average: float


def recompute(events: Sequence[PlatformEvent], now: datetime, *, active_seconds: float, zone: tzinfo) -> Expected:
    """The figures straight from the event list: first copy of each id, USD payments only."""
    firsts: dict[str, PlatformEvent] = {}
    for event in events:
        if event.kind is P and event.currency != "USD":
            continue
        firsts.setdefault(event.id, event)
    unique = list(firsts.values())
    today = now.astimezone(zone).date()

    def on_today(event: PlatformEvent) -> bool:
        return event.timestamp.astimezone(zone).date() == today

    def of(kind: EventKind) -> list[PlatformEvent]:
        return [event for event in unique if event.kind is kind]

    active = {e.user_id for e in unique if e.user_id and e.timestamp >= now - timedelta(seconds=active_seconds)}
    cents = [round(Decimal(repr(e.amount)) * 100) for e in of(P)]
    today_cents = [round(Decimal(repr(e.amount)) * 100) for e in of(P) if on_today(e)]
    times = [round(e.generation_time * 1_000_000) for e in of(W) if e.generation_time is not None]
    return Expected(
        PlatformSnapshot(
            total_users=len(of(R)),
            active_users=min(len(active), len(of(R))),  # never more active users than users
            new_users_today=sum(1 for e in of(R) if on_today(e)),
            websites_generated=len(of(W)),
            images_generated=len(of(I)),
            failed_generations=len(of(F)),
            total_revenue=sum(cents) / 100,
            revenue_today=sum(today_cents) / 100,
        ),
        sum(times) / len(times) / 1_000_000 if times else 0.0,
    )


@settings(max_examples=150)
@given(st.lists(stream_events(span_seconds=100), max_size=60), st.sampled_from([UTC, BERLIN]))
def test_duplicates_never_count_twice(events: list[PlatformEvent], zone: tzinfo) -> None:
    # every timestamp lies within 160 s of the others, inside a 200 s dedup window: each id counts once
    aggregate = PlatformAggregate(dedup_window_seconds=200, timezone=zone)
    applied = apply_all(aggregate, events)
    expected = recompute(events, NOW, active_seconds=900, zone=zone)
    assert aggregate.snapshot(now=NOW) == expected.snapshot
    assert aggregate.average_generation_time() == expected.average
    first_ids = [event.id for event, counted in zip(events, applied, strict=True) if counted]
    assert len(first_ids) == len(set(first_ids))


@settings(max_examples=150)
@given(st.lists(stream_events(span_seconds=3000), max_size=60), st.randoms(use_true_random=False))
def test_out_of_order_events_give_the_same_figures(events: list[PlatformEvent], random: object) -> None:
    # ids remembered for longer than the spread of timestamps, so every arrival order is equivalent
    in_order = sorted(events, key=lambda event: event.timestamp)
    shuffled = list(events)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    results = []
    for order in (in_order, shuffled):
        aggregate = PlatformAggregate(active_window_seconds=900, dedup_window_seconds=10_000)
        apply_all(aggregate, order)
        results.append(aggregate.snapshot(now=NOW))
    # the first copy of an id wins, so compare each with its own recomputation
    assert results[1] == recompute(shuffled, NOW, active_seconds=900, zone=UTC).snapshot
    assert results[0] == recompute(in_order, NOW, active_seconds=900, zone=UTC).snapshot
    unique_ids = {e.id: e for e in events}
    if len(unique_ids) == len(events):  # no id collisions: the order cannot matter at all
        assert results[0] == results[1]


@settings(max_examples=100)
@given(
    st.lists(st.integers(0, 4 * 3600 * 10**6), min_size=1, max_size=40),
    st.integers(0, 4 * 3600 * 10**6),
    st.sampled_from([UTC, BERLIN, timezone(timedelta(hours=-5))]),
)
def test_daily_figures_follow_the_day_of_now(offsets: list[int], now_offset: int, zone: tzinfo) -> None:
    # events and "now" spread over the two hours either side of local midnight
    midnight = datetime(2025, 10, 18, tzinfo=zone).astimezone(UTC) - timedelta(hours=2)
    events = [ev(R, midnight + timedelta(microseconds=offset)) for offset in offsets]
    events += [ev(P, midnight + timedelta(microseconds=offset), amount=1) for offset in offsets]
    now = midnight + timedelta(microseconds=now_offset)
    aggregate = PlatformAggregate(timezone=zone, dedup_window_seconds=10**6)
    for event in events:  # applied live, each when it happened, in the drawn (unsorted) order
        aggregate.apply(event, now=event.timestamp)
    expected = recompute(events, now, active_seconds=900, zone=zone)
    snapshot = aggregate.snapshot(now=now)
    assert (snapshot.new_users_today, snapshot.revenue_today) == (
        expected.snapshot.new_users_today,
        expected.snapshot.revenue_today,
    )


@settings(max_examples=150)
@given(
    st.lists(stream_events(span_seconds=1500), max_size=50),
    st.lists(st.integers(0, 60 * 10**6), max_size=50),
    st.integers(0, 50),
    st.integers(0, 50),
    st.sampled_from([UTC, BERLIN]),
)
def test_a_crash_at_any_point_then_restore_and_replay_changes_nothing(
    events: list[PlatformEvent], steps: list[int], saved: int, journaled: int, zone: tzinfo
) -> None:
    """The checkpoint was saved after ``saved`` events and the journal written up to ``journaled`` (the
    journal is written before its checkpoint, so journaled >= saved); a new process restores both and
    applies every event after the checkpoint again: the figures equal those of one uninterrupted pass."""
    arrivals, at = [], NOW - timedelta(seconds=200)
    for index in range(len(events)):
        at += timedelta(microseconds=steps[index] if index < len(steps) else 0)
        arrivals.append(at)
    options = {**OPTIONS, "timezone": zone}
    direct = PlatformAggregate(**options)  # type: ignore[arg-type]
    for event, arrival in zip(events, arrivals, strict=True):
        direct.apply(event, now=NOW, arrival=arrival)
    saved = min(saved, len(events))
    journaled = min(max(journaled, saved), len(events))
    first = PlatformAggregate(**options)  # type: ignore[arg-type]
    checkpoint: dict[str, object] | None = None
    deltas = []
    for index, (event, arrival) in enumerate(zip(events, arrivals, strict=True), start=1):
        first.apply(event, now=NOW, arrival=arrival)
        if index == saved:
            checkpoint = orjson.loads(orjson.dumps(first.to_checkpoint(now=NOW)))
        if index in (saved, journaled):
            deltas.append(first.take_delta())
    ids = [entry for delta in deltas for entry in delta.ids]
    users = [(seq, when, user) for delta in deltas for user, (seq, when) in delta.users.items()]
    resumed = PlatformAggregate.restore(checkpoint, ids=ids, users=users, now=NOW, **options)  # type: ignore[arg-type]
    for event, arrival in zip(events[saved:], arrivals[saved:], strict=True):
        resumed.apply(event, now=NOW, arrival=arrival)
    assert resumed.snapshot(now=NOW) == direct.snapshot(now=NOW)
    assert resumed.average_generation_time() == direct.average_generation_time()
    assert resumed.to_checkpoint(now=NOW) == direct.to_checkpoint(now=NOW)
    assert resumed.journal_entries() == direct.journal_entries()


@settings(max_examples=150)
@given(
    st.lists(stream_events(span_seconds=3000), max_size=60),
    st.randoms(use_true_random=False),
    st.integers(0, 8),
    st.lists(st.integers(0, 1200), min_size=1, max_size=4),
)
def test_active_users_never_exceed_total_users_in_any_order(
    events: list[PlatformEvent], random: object, baseline: int, later_seconds: list[int]
) -> None:
    # activity that arrives before its registration, or without one, with or without a baseline, read in any
    # order and looked at any time later: never more active users than users, and the rest is reported apart
    shuffled = list(events)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    aggregate = PlatformAggregate(active_window_seconds=900, dedup_window_seconds=10_000)
    aggregate.seed(total_users=baseline)
    for event in shuffled:
        aggregate.apply(event, now=NOW)
        snapshot = aggregate.snapshot(now=NOW)
        assert snapshot.active_users <= snapshot.total_users
        assert snapshot.active_users + aggregate.active_beyond_total == aggregate.tracked_users
    for seconds in sorted(later_seconds):
        snapshot = aggregate.snapshot(now=NOW + timedelta(seconds=seconds))
        assert snapshot.active_users <= snapshot.total_users
        assert snapshot.active_users + aggregate.active_beyond_total == aggregate.tracked_users


def test_activity_before_its_registration_counts_once_the_registration_is_read() -> None:
    aggregate = PlatformAggregate()
    aggregate.apply(ev(A, user="early"), now=NOW)
    assert (aggregate.snapshot(now=NOW).active_users, aggregate.active_beyond_total) == (0, 1)
    aggregate.apply(ev(R, NOW - timedelta(seconds=5), user="early"), now=NOW)
    snapshot = aggregate.snapshot(now=NOW)
    assert (snapshot.total_users, snapshot.active_users, aggregate.active_beyond_total) == (1, 1, 0)

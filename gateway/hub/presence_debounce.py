"""Which presence notifications are due: a user's online or offline change, once it has held.

Pure: the merged view, the announced state and the time come in; the changes and the next announced
state go out. :mod:`gateway.hub.cluster_presence` keeps the announced state in KV (written with
compare-and-set, so however many replicas decide at once, one change is sent once) and sends the
changes; this module only decides.

A user whose presence in the merged view differs from the announced state is *pending* from the first
step that sees the difference; the change is due once every step for ``debounce_seconds`` has seen
it. A step that sees the view agree again forgets the user: a reconnect quicker than the debounce, or
a connection shorter than it, announces nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker_bridge import catalog

Action = catalog.PresenceAction


@dataclass(frozen=True, slots=True)
class PresenceChange:
    user_id: str
    user_name: str | None
    action: Action

    def event(self, *, timestamp: str) -> catalog.HubEvent:
        return catalog.presence_change(
            user_id=self.user_id, user_name=self.user_name, action=self.action, timestamp=timestamp
        )


@dataclass(frozen=True, slots=True)
class Decision:
    announced: dict[str, str | None]
    """The announced state after ``changes`` (user id -> name of everyone announced online)."""
    changes: tuple[PresenceChange, ...]
    left_out: int
    """Users due online but not announced: the announced state already holds ``max_users``."""


def notifications(
    changes: Sequence[PresenceChange], *, limit: int, timestamp: str
) -> list[tuple[catalog.HubEvent, str]]:
    """What to send for ``changes`` (with the metric label of each): one notification per change, or, when
    more than ``limit`` are due at once (a deploy, a reconnect storm: every admin dashboard would get one
    per user), one ``presence-summary`` with the counts; the dashboards then ask ``GetPresence``."""
    if len(changes) <= limit:
        return [(change.event(timestamp=timestamp), change.action) for change in changes]
    online = sum(1 for change in changes if change.action == "online")
    summary = catalog.presence_summary(online=online, offline=len(changes) - online, timestamp=timestamp)
    return [(summary, "summary")]


class PresenceDebouncer:
    """The pending users and since when; bounded by the users of the view and the announced state."""

    def __init__(self, *, debounce_seconds: float, max_users: int) -> None:
        self._debounce = debounce_seconds
        self._max_users = max_users
        self._pending: dict[str, float] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        """Forget every pending user (this replica stopped deciding; another one times them now)."""
        self._pending.clear()

    def step(self, *, online: Mapping[str, str | None], announced: Mapping[str, str | None], now: float) -> Decision:
        """Compare the view's ``online`` users with ``announced`` at ``now`` (monotonic seconds).

        Nothing here changes when the result is not stored: a due user stays pending (since the same
        time) until a step sees the announced state agree with the view.
        """
        differing = (online.keys() - announced.keys()) | (announced.keys() - online.keys())
        # A new dict rather than deletions: a dict keeps its largest size, and after a burst of
        # arrivals (every user of a restarted replica) the pending ones are few again.
        self._pending = {user_id: since for user_id, since in self._pending.items() if user_id in differing}
        result = dict(announced)
        changes: list[PresenceChange] = []
        left_out = 0
        for user_id in sorted(differing):
            since = self._pending.setdefault(user_id, now)
            if now - since < self._debounce:
                continue
            if user_id in online:
                if len(result) >= self._max_users:
                    left_out += 1
                    continue
                result[user_id] = online[user_id]
                changes.append(PresenceChange(user_id, online[user_id], "online"))
            else:
                changes.append(PresenceChange(user_id, result.pop(user_id), "offline"))
        return Decision(result, tuple(changes), left_out)

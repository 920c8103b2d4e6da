import { formatClock, formatRelative } from "../format";
import type { FeedItem } from "../state";
import type { AdminNotification, UserActivityUpdate } from "../types";
import { useNow } from "../useNow";

function When({ at, now }: { at: number; now: number }) {
  return (
    <time dateTime={new Date(at).toISOString()} title={formatClock(at)} className="muted">
      {formatRelative(at, now)}
    </time>
  );
}

function summary(details: Record<string, unknown> | null): string {
  if (!details) return "";
  return Object.entries(details)
    .slice(0, 4)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : String(v)}`)
    .join(", ");
}

const BADGE: Record<AdminNotification["type"], string> = {
  "role-assignment": "role",
  "system-event": "system",
  presence: "presence",
  "presence-summary": "presence",
};

function NotificationText({ payload }: { payload: AdminNotification }) {
  switch (payload.type) {
    case "role-assignment":
      return <>{payload.message}</>;
    case "system-event":
      return (
        <>
          <strong>{payload.eventType}</strong>: {payload.description}
        </>
      );
    case "presence":
      return (
        <>
          <strong>{payload.userName ?? payload.userId}</strong> is {payload.action}
        </>
      );
    case "presence-summary":
      return <>{payload.message}</>;
  }
}

export function AdminFeed({ items }: { items: FeedItem<AdminNotification>[] }) {
  const now = useNow(5000);
  return (
    <section className="card" aria-labelledby="admin-feed-title" id="notifications">
      <div className="section-head">
        <h2 id="admin-feed-title">Admin notifications &amp; system events</h2>
      </div>
      <ol className="feed" aria-live="polite" aria-relevant="additions" data-testid="admin-feed">
        {items.map(({ id, at, payload }) => (
          <li key={id} className="feed-item" data-testid="admin-item">
            <span className={`badge ${payload.type}`}>{BADGE[payload.type]}</span>
            <span className="feed-text">
              <NotificationText payload={payload} />
            </span>
            <When at={at} now={now} />
          </li>
        ))}
      </ol>
      {items.length === 0 && <p className="empty">Nothing yet. Role changes, system events and users coming online appear here.</p>}
    </section>
  );
}

export function ActivityFeed({ items, subscribed }: { items: FeedItem<UserActivityUpdate>[]; subscribed: boolean }) {
  const now = useNow(5000);
  return (
    <section className="card" aria-labelledby="activity-title" id="activity">
      <div className="section-head">
        <h2 id="activity-title">User activity</h2>
      </div>
      {!subscribed && <p className="muted">Turn on “User activity” under Subscriptions to follow it here.</p>}
      <ol className="feed" data-testid="activity-feed">
        {items.map(({ id, at, payload }) => (
          <li key={id} className="feed-item">
            <span className="feed-text">
              <strong>{payload.action}</strong> <span className="mono">{payload.userId}</span>
              {payload.details && <span className="muted"> {summary(payload.details)}</span>}
            </span>
            <When at={at} now={now} />
          </li>
        ))}
      </ol>
      {subscribed && items.length === 0 && <p className="empty">Waiting for activity…</p>}
    </section>
  );
}

import type { Presence } from "../adapters";
import { formatClock, formatInteger, formatRelative } from "../format";
import { useNow } from "../useNow";

interface Props {
  presence: Presence | null;
  error: string | null;
  connected: boolean;
  onRefresh: () => void;
}

const plural = (count: number, one: string, many: string = `${one}s`): string =>
  `${formatInteger(count)} ${count === 1 ? one : many}`;

export function PresencePanel({ presence, error, connected, onRefresh }: Props) {
  const now = useNow(15_000);
  return (
    <section className="card" aria-labelledby="presence-title" id="presence" data-testid="presence">
      <div className="section-head">
        <h2 id="presence-title">
          Who is online <span className="count">{presence ? formatInteger(presence.totalUsers) : "—"}</span>
        </h2>
        <button type="button" className="button small" onClick={onRefresh} disabled={!connected}>
          Refresh
        </button>
      </div>
      <p className="muted small" data-testid="presence-total" aria-live="polite">
        {presence === null
          ? error
            ? `Presence unavailable: ${error}`
            : "Asking who is online…"
          : `${plural(presence.totalUsers, "user")}, ${plural(presence.totalConnections, "connection")} on ` +
            `${plural(presence.replicas, "replica")} · as of ${formatClock(presence.at)}`}
      </p>
      {presence !== null && !presence.complete && (
        <p className="small paused">Some users are counted but not listed (a replica lists its longest connected only).</p>
      )}
      {presence?.groups.map((group) => (
        <div key={group.name} className="presence-group" data-testid={`presence-group-${group.name}`}>
          <h3 className="presence-group-name">
            {group.name}{" "}
            <span className="muted small">
              {plural(group.totalUsers, "user")} · {plural(group.totalConnections, "connection")}
            </span>
          </h3>
          {group.users.length === 0 ? (
            <p className="empty small">Nobody.</p>
          ) : (
            <ul className="presence-users">
              {group.users.map((user) => (
                <li key={user.userId} className="presence-user" data-testid="presence-user" data-user-id={user.userId}>
                  <span className="presence-name" title={user.userId}>
                    {user.name}
                  </span>
                  <span className="muted small">
                    {plural(user.connections, "connection")} · since{" "}
                    <time dateTime={new Date(user.since).toISOString()} title={formatClock(user.since)}>
                      {formatRelative(user.since, now)}
                    </time>
                  </span>
                </li>
              ))}
            </ul>
          )}
        </div>
      ))}
    </section>
  );
}

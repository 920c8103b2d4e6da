import { formatClock, parseTime } from "../format";
import type { SubscriptionState } from "../state";
import type { Group } from "../types";

interface Props {
  subscriptions: Record<Group, SubscriptionState>;
  connected: boolean;
  onToggle: (group: Group) => void;
}

const ROWS: { group: Group; label: string; help: string }[] = [
  { group: "analytics", label: "Analytics", help: "Live figures and charts" },
  { group: "alerts", label: "Alerts", help: "System alerts panel and toasts" },
  { group: "user-activity", label: "User activity", help: "Every user action (busy)" },
];

function describe(sub: SubscriptionState, connected: boolean): string {
  if (sub.pending) return sub.wanted ? "Subscribing…" : "Unsubscribing…";
  if (sub.error) return `Failed: ${sub.error}`;
  if (!connected) return sub.wanted ? "Will subscribe when connected" : "Off";
  if (sub.confirmed) return `On · confirmed ${sub.confirmedAt ? formatClock(parseTime(sub.confirmedAt)) : ""}`;
  return sub.confirmedAt ? `Off · confirmed ${formatClock(parseTime(sub.confirmedAt))}` : "Off";
}

export function Subscriptions({ subscriptions, connected, onToggle }: Props) {
  return (
    <section className="card" aria-labelledby="subs-title" id="subscriptions">
      <div className="section-head">
        <h2 id="subs-title">Subscriptions</h2>
      </div>
      <p className="muted small">Switches show what the server confirmed for this connection.</p>
      <ul className="switches">
        {ROWS.map(({ group, label, help }) => {
          const sub = subscriptions[group];
          const stateId = `sub-${group}-state`;
          return (
            <li key={group} className="switch-row">
              <button
                type="button"
                role="switch"
                className="switch"
                aria-checked={sub.confirmed}
                aria-busy={sub.pending || undefined}
                aria-describedby={stateId}
                data-testid={`toggle-${group}`}
                data-wanted={sub.wanted}
                onClick={() => onToggle(group)}
              >
                <span className="switch-track" aria-hidden="true">
                  <span className="switch-thumb" />
                </span>
                <span className="switch-label">{label}</span>
              </button>
              <span className="switch-help">
                <span className="muted small">{help}</span>
                <span id={stateId} className="small" data-testid={`sub-state-${group}`} aria-live="polite">
                  {describe(sub, connected)}
                </span>
              </span>
            </li>
          );
        })}
      </ul>
    </section>
  );
}

import { useId, useState } from "react";

import { formatClock, formatRelative } from "../format";
import type { AlertItem } from "../state";
import { ALERT_TYPES, type AlertType } from "../types";
import { useNow } from "../useNow";

interface Props {
  alerts: AlertItem[];
  subscribed: boolean;
  onDismiss: (id: number) => void;
  onClear: () => void;
}

export function AlertsPanel({ alerts, subscribed, onDismiss, onClear }: Props) {
  const now = useNow(5000);
  const [filter, setFilter] = useState<AlertType | "all">("all");
  const filterId = useId();
  const shown = filter === "all" ? alerts : alerts.filter((a) => a.type === filter);

  return (
    <section className="card" aria-labelledby="alerts-title" id="alerts">
      <div className="section-head">
        <h2 id="alerts-title">
          Alerts <span className="count">{alerts.length}</span>
        </h2>
        <div className="controls">
          <label htmlFor={filterId}>Type</label>
          <select id={filterId} value={filter} onChange={(e) => setFilter(e.target.value as AlertType | "all")}>
            <option value="all">All types</option>
            {ALERT_TYPES.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
          <button type="button" className="button small" onClick={onClear} disabled={alerts.length === 0}>
            Dismiss all
          </button>
        </div>
      </div>
      {!subscribed && <p className="muted">Alerts are off: turn them on under Subscriptions.</p>}
      <ol className="alerts" aria-live="polite" aria-relevant="additions" data-testid="alerts-list">
        {shown.map((alert) => (
          <li key={alert.id} className={`alert alert-${alert.type}`} data-testid="alert" data-type={alert.type}>
            <div className="alert-meta">
              <span className={`badge type-${alert.type}`}>{alert.type}</span>
              <span className={`badge severity-${alert.severity}`}>{alert.severity}</span>
              <time dateTime={new Date(alert.at).toISOString()} title={formatClock(alert.at)}>
                {formatRelative(alert.at, now)}
              </time>
            </div>
            <p className="alert-message">{alert.message}</p>
            <button
              type="button"
              className="icon-button"
              onClick={() => onDismiss(alert.id)}
              aria-label={`Dismiss alert: ${alert.message}`}
            >
              ×
            </button>
          </li>
        ))}
      </ol>
      {shown.length === 0 && (
        <p className="empty">{alerts.length === 0 ? "No alerts yet." : `No ${filter} alerts.`}</p>
      )}
    </section>
  );
}

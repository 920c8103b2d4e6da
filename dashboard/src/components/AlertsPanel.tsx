import { useId, useState } from "react";

import { alertStatus, coveringSilence, silenceTarget, type Silence } from "../adapters";
import { formatClock, formatMinutes, formatRelative } from "../format";
import type { AlertActionState, AlertItem } from "../state";
import { ALERT_TYPES, type AlertStatus, type AlertType } from "../types";
import { useNow } from "../useNow";

interface Props {
  alerts: AlertItem[];
  omitted: number;
  silences: Silence[];
  action: AlertActionState;
  subscribed: boolean;
  connected: boolean;
  onDismiss: (id: number) => void;
  onClear: () => void;
  onAcknowledge: (alertId: string) => void;
  onSilence: (target: string, minutes: number) => void;
}

/** Silence lengths offered (the server allows up to its alert retention, a day by default). */
const SILENCE_MINUTES: readonly number[] = [15, 60, 240, 1440];

function stateLine(alert: AlertItem, status: AlertStatus, silences: Silence[], now: number): string | null {
  if (status === "acknowledged" && alert.acknowledged) {
    return `Acknowledged by ${alert.acknowledged.by} at ${formatClock(alert.acknowledged.at)}`;
  }
  if (status === "silenced") {
    const silence = coveringSilence(alert, silences, now);
    const held = alert.suppressed ? "Held back by a silence" : "Silenced";
    return silence
      ? `${held}: ${silence.target} silenced by ${silence.silenced.by} until ${formatClock(silence.until)}`
      : held;
  }
  return null;
}

export function AlertsPanel({
  alerts,
  omitted,
  silences,
  action,
  subscribed,
  connected,
  onDismiss,
  onClear,
  onAcknowledge,
  onSilence,
}: Props) {
  const now = useNow(5000);
  const [filter, setFilter] = useState<AlertType | "all">("all");
  const [silenceMinutes, setSilenceMinutes] = useState<number>(60);
  const filterId = useId();
  const minutesId = useId();
  const shown = filter === "all" ? alerts : alerts.filter((a) => a.type === filter);
  const live = silences.filter((s) => s.until > now);
  const busy = action.pending !== null;

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
          <label htmlFor={minutesId}>Silence for</label>
          <select id={minutesId} value={silenceMinutes} onChange={(e) => setSilenceMinutes(Number(e.target.value))}>
            {SILENCE_MINUTES.map((m) => (
              <option key={m} value={m}>
                {formatMinutes(m)}
              </option>
            ))}
          </select>
          <button type="button" className="button small" onClick={onClear} disabled={alerts.length === 0}>
            Dismiss all
          </button>
        </div>
      </div>
      {!subscribed && <p className="muted">Alerts are off: turn them on under Subscriptions.</p>}
      {live.length > 0 && (
        <ul className="silences" aria-label="Silences" data-testid="silences">
          {live.map((silence) => (
            <li key={silence.target} className="silence" data-testid="silence" data-target={silence.target}>
              <span>
                <strong>{silence.target}</strong> silenced by {silence.silenced.by} until {formatClock(silence.until)}
              </span>
              <button
                type="button"
                className="button small"
                disabled={!connected || busy}
                onClick={() => onSilence(silence.target, 0)}
                aria-label={`Lift the silence of ${silence.target}`}
              >
                Lift
              </button>
            </li>
          ))}
        </ul>
      )}
      <p className="small alert-action-error" role="status" data-testid="alert-action-error">
        {action.error ? `The server refused: ${action.error}` : ""}
      </p>
      <ol className="alerts" aria-live="polite" aria-relevant="additions" data-testid="alerts-list">
        {shown.map((alert) => {
          const status = alertStatus(alert, silences, now);
          const line = stateLine(alert, status, silences, now);
          const target = silenceTarget(alert);
          const canAct = connected && !busy && alert.alertId !== null;
          return (
            <li
              key={alert.id}
              className={`alert alert-${alert.type} status-${status}`}
              data-testid="alert"
              data-type={alert.type}
              data-status={status}
              data-alert-id={alert.alertId ?? ""}
            >
              <div className="alert-meta">
                <span className={`badge type-${alert.type}`}>{alert.type}</span>
                <span className={`badge severity-${alert.severity}`}>{alert.severity}</span>
                <span className={`badge state-${status}`} data-testid="alert-status">
                  {status}
                </span>
                <time dateTime={new Date(alert.at).toISOString()} title={formatClock(alert.at)}>
                  {formatRelative(alert.at, now)}
                </time>
              </div>
              <p className="alert-message">{alert.message}</p>
              {line && (
                <p className="alert-state small" data-testid="alert-state">
                  {line}
                </p>
              )}
              {alert.alertId !== null && (
                <div className="alert-actions">
                  {status === "active" && (
                    <button
                      type="button"
                      className="button small"
                      disabled={!canAct}
                      onClick={() => alert.alertId !== null && onAcknowledge(alert.alertId)}
                      aria-label={`Acknowledge alert: ${alert.message}`}
                    >
                      Acknowledge
                    </button>
                  )}
                  {status !== "silenced" && (
                    <button
                      type="button"
                      className="button small"
                      disabled={!canAct}
                      onClick={() => onSilence(target, silenceMinutes)}
                      aria-label={`Silence ${target} for ${formatMinutes(silenceMinutes)}: ${alert.message}`}
                    >
                      Silence {target}
                    </button>
                  )}
                </div>
              )}
              <button
                type="button"
                className="icon-button"
                onClick={() => onDismiss(alert.id)}
                aria-label={`Dismiss alert: ${alert.message}`}
              >
                ×
              </button>
            </li>
          );
        })}
      </ol>
      {omitted > 0 && (
        <p className="muted small">{omitted} older alerts kept by the cluster are not shown (the answer's size limit).</p>
      )}
      {shown.length === 0 && (
        <p className="empty">{alerts.length === 0 ? "No alerts yet." : `No ${filter} alerts.`}</p>
      )}
    </section>
  );
}

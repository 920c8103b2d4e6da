import { useEffect } from "react";

import type { AlertItem } from "../state";

interface Props {
  toasts: AlertItem[];
  onDismiss: (id: number) => void;
}

const TOAST_MS = 10_000;

function Toast({ alert, onDismiss }: { alert: AlertItem; onDismiss: (id: number) => void }) {
  useEffect(() => {
    const timer = window.setTimeout(() => onDismiss(alert.id), TOAST_MS);
    return () => window.clearTimeout(timer);
  }, [alert.id, onDismiss]);
  return (
    <div className={`toast severity-${alert.severity}`} data-testid="toast">
      <strong>
        {alert.severity === "critical" ? "Critical" : "High"} {alert.type}:
      </strong>{" "}
      {alert.message}
      <button type="button" className="icon-button" onClick={() => onDismiss(alert.id)} aria-label="Close notification">
        ×
      </button>
    </div>
  );
}

/** High and critical alerts also pop up here (the alerts panel keeps them). */
export function Toasts({ toasts, onDismiss }: Props) {
  return (
    <div className="toasts" role="alert" aria-live="assertive" aria-label="Urgent alerts">
      {toasts.map((alert) => (
        <Toast key={alert.id} alert={alert} onDismiss={onDismiss} />
      ))}
    </div>
  );
}

import type { ConnectionStatus } from "../hub";
import { formatSeconds } from "../format";
import { useNow } from "../useNow";

interface Props {
  status: ConnectionStatus;
  onReconnect: () => void;
}

const LABEL: Record<ConnectionStatus["kind"], string> = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting",
  disconnected: "Disconnected",
};

export function ConnectionIndicator({ status, onReconnect }: Props) {
  const now = useNow(500);
  let detail: string | null = null;
  let countdown: string | null = null;
  if (status.kind === "reconnecting") {
    detail = `attempt ${status.attempt} of ${status.maxAttempts}`;
    const wait = status.nextAttemptAt - now;
    countdown = wait > 250 ? `next try in ${formatSeconds(wait)}` : "trying now";
  } else if (status.kind === "disconnected") {
    detail = status.reason;
  }
  return (
    <div className={`connection connection-${status.kind}`} data-testid="connection-status" data-state={status.kind}>
      <span className="connection-dot" aria-hidden="true" />
      <span role="status" aria-live="polite" aria-atomic="true" className="connection-text">
        <span className="connection-label">{LABEL[status.kind]}</span>
        {detail && <span className="connection-detail"> · {detail}</span>}
      </span>
      {countdown && (
        <span className="connection-detail" data-testid="retry-countdown">
          {" "}
          · {countdown}
        </span>
      )}
      {status.kind === "disconnected" && (
        <button type="button" className="button small" onClick={onReconnect}>
          Reconnect
        </button>
      )}
    </div>
  );
}

import type { ConnectionStatus } from "../hub";
import { formatClock, formatDecimal, formatInteger, parseTime } from "../format";
import type { TestMessageState } from "../state";
import type { ConnectionCount, ConnectionEstablished } from "../types";

interface Props {
  status: ConnectionStatus;
  established: ConnectionEstablished | null;
  counts: ConnectionCount | null;
  test: TestMessageState;
  onRefreshCounts: () => void;
  onTest: () => void;
}

export function ConnectionPanel({ status, established, counts, test, onRefreshCounts, onTest }: Props) {
  const connected = status.kind === "connected";
  return (
    <section className="card" aria-labelledby="conn-title" id="connection">
      <div className="section-head">
        <h2 id="conn-title">Connection</h2>
      </div>
      <dl className="facts">
        <dt>Connection id</dt>
        <dd className="mono" data-testid="connection-id">
          {established?.connectionId ?? "—"}
        </dd>
        <dt>Signed in as</dt>
        <dd>{established?.userName ?? established?.userId ?? "—"}</dd>
        <dt>Groups</dt>
        <dd>{established && established.groups.length > 0 ? established.groups.join(", ") : "—"}</dd>
        <dt>On this replica</dt>
        <dd data-testid="connections-on-replica">{counts ? formatInteger(counts.connectionsOnReplica) : "—"}</dd>
        <dt>All replicas</dt>
        <dd data-testid="connections-total">
          {counts
            ? `${formatInteger(counts.totalConnections)} on ${formatInteger(counts.replicas)} replica${counts.replicas === 1 ? "" : "s"}`
            : "—"}
        </dd>
        <dt>Counted at</dt>
        <dd>{counts ? formatClock(parseTime(counts.timestamp)) : "—"}</dd>
      </dl>
      <div className="button-row">
        <button type="button" className="button small" onClick={onRefreshCounts} disabled={!connected}>
          Refresh counts
        </button>
        <button
          type="button"
          className="button small primary"
          onClick={onTest}
          disabled={!connected || test.pending}
          data-testid="send-test"
        >
          Send test message
        </button>
      </div>
      <p className="small" aria-live="polite" data-testid="test-result">
        {test.pending
          ? "Waiting for the echo…"
          : test.error
            ? `Test failed: ${test.error}`
            : test.roundTripMs !== null
              ? `Round trip ${formatDecimal(test.roundTripMs)} ms (at ${formatClock(test.at ?? Date.now())})`
              : ""}
      </p>
    </section>
  );
}

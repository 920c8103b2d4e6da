import { useEffect, useMemo } from "react";

import { decodeToken } from "./auth";
import { formatClock, formatRelative } from "./format";
import { useAdminHub } from "./useAdminHub";
import { useNow } from "./useNow";
import { ActivityFeed, AdminFeed } from "./components/Feeds";
import { AlertsPanel } from "./components/AlertsPanel";
import { Charts } from "./components/Charts";
import { ConnectionIndicator } from "./components/ConnectionIndicator";
import { ConnectionPanel } from "./components/ConnectionPanel";
import { KpiTiles } from "./components/KpiTiles";
import { PresencePanel } from "./components/PresencePanel";
import { Subscriptions } from "./components/Subscriptions";
import { Toasts } from "./components/Toasts";

interface Props {
  token: string;
  onSignOut: (message: string | null) => void;
}

const EXPIRY_WARNING_MS = 5 * 60 * 1000;
const MAX_TIMER_MS = 2 ** 31 - 1;

export function Dashboard({ token, onSignOut }: Props) {
  const info = useMemo(() => decodeToken(token), [token]);
  const hub = useAdminHub(token, onSignOut);
  const { state } = hub;
  const now = useNow(15_000);

  // The server checks the token when connecting; the page also signs out when it expires.
  useEffect(() => {
    const expiresAt = info?.expiresAt;
    if (expiresAt == null) return;
    const timer = window.setTimeout(
      () => onSignOut(`Your token expired at ${formatClock(expiresAt)}. Sign in with a new one.`),
      Math.min(Math.max(expiresAt - Date.now(), 0), MAX_TIMER_MS),
    );
    return () => window.clearTimeout(timer);
  }, [info, onSignOut]);

  const expiresSoon = info?.expiresAt != null && info.expiresAt - now < EXPIRY_WARNING_MS;
  const who = state.established?.userName ?? info?.name ?? info?.userId ?? "admin";
  const subs = state.subscriptions;
  const connected = state.status.kind === "connected";

  return (
    <div className="app">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="app-header">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <h1>Realtime admin</h1>
        </div>
        <ConnectionIndicator status={state.status} onReconnect={hub.reconnect} />
        <div className="user">
          <span className="muted small" title={info?.userId ?? undefined}>
            {who}
          </span>
          <button type="button" className="button small" onClick={() => onSignOut(null)}>
            Sign out
          </button>
        </div>
      </header>
      <nav className="app-nav" aria-label="Sections">
        <ul>
          <li><a href="#figures">Figures</a></li>
          <li><a href="#trends">Trends</a></li>
          <li><a href="#alerts">Alerts</a></li>
          <li><a href="#subscriptions">Subscriptions</a></li>
          <li><a href="#presence">Presence</a></li>
          <li><a href="#connection">Connection</a></li>
          <li><a href="#notifications">Notifications</a></li>
          <li><a href="#activity">Activity</a></li>
        </ul>
      </nav>
      <main id="main" tabIndex={-1}>
        {expiresSoon && info?.expiresAt != null && (
          <p className="banner warning" role="status">
            Your token expires {formatRelative(info.expiresAt, now)} ({formatClock(info.expiresAt)}); you will be asked
            for a new one.
          </p>
        )}
        <KpiTiles
          figures={state.figures}
          updatedAt={state.updatedAt}
          updatedBy={state.updatedBy}
          analyticsOn={subs.analytics.confirmed}
        />
        <Charts history={state.history} info={state.historyInfo} onMinutes={hub.setHistoryMinutes} />
        <div className="columns">
          <AlertsPanel
            alerts={state.alerts}
            omitted={state.alertsOmitted}
            silences={state.silences}
            action={state.alertAction}
            subscribed={subs.alerts.wanted}
            connected={connected}
            onDismiss={hub.dismissAlert}
            onClear={hub.clearAlerts}
            onAcknowledge={hub.acknowledgeAlert}
            onSilence={hub.silenceAlerts}
          />
          <div className="side">
            <Subscriptions subscriptions={subs} connected={connected} onToggle={hub.toggle} />
            <PresencePanel
              presence={state.presence}
              error={state.presenceError}
              connected={connected}
              onRefresh={hub.refreshPresence}
            />
            <ConnectionPanel
              status={state.status}
              established={state.established}
              counts={state.counts}
              test={state.test}
              onRefreshCounts={hub.refreshCounts}
              onTest={hub.sendTestMessage}
            />
          </div>
        </div>
        <div className="columns even">
          <AdminFeed items={state.adminFeed} />
          <ActivityFeed items={state.activity} subscribed={subs["user-activity"].wanted} />
        </div>
      </main>
      <Toasts toasts={state.toasts} onDismiss={hub.dismissToast} />
    </div>
  );
}

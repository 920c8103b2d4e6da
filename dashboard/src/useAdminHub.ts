// Owns one hub connection per token: registers the client methods, follows the connection state, after
// every (re)connect asks the figures' history, re-subscribes and refreshes the figures, counts, presence
// and alert states, and exposes the page's actions (payloads go through src/adapters.ts).

import { HubConnectionState, type HubConnection } from "@microsoft/signalr";
import { useCallback, useEffect, useMemo, useReducer, useRef } from "react";

import {
  alertChangeOf,
  alertOfSystemAlert,
  alertOfView,
  alertStatesOf,
  analyticsFigures,
  generationFigures,
  historyWindow,
  pickFigures,
  presenceOf,
  revenueFigures,
  silenceOf,
  userCountFigures,
} from "./adapters";
import { RecordingRetryPolicy, RETRY_DELAYS_MS, authFailure, buildConnection, describeError } from "./hub";
import { DEFAULT_HISTORY_MINUTES, HISTORY_MINUTES, initialState, reducer, type DashboardState } from "./state";
import type {
  AdminNotification,
  AlertStateChanged,
  AlertStates,
  AlertView,
  AnalyticsHistory,
  AnalyticsUpdate,
  ConnectionCount,
  ConnectionEstablished,
  GenerationMetricsUpdate,
  Group,
  PresenceAnswer,
  RevenueUpdate,
  SilenceView,
  SubscriptionResult,
  SystemAlert,
  TestMessageResult,
  UserActivityUpdate,
  UserCountUpdate,
} from "./types";

const METHOD_SUFFIX: Record<Group, string> = {
  analytics: "Analytics",
  alerts: "Alerts",
  "user-activity": "UserActivity",
};
const WANTED_KEY = "realtime-admin.subscriptions";
const DEFAULT_WANTED: Record<Group, boolean> = { analytics: true, alerts: true, "user-activity": false };
const MINUTES_KEY = "realtime-admin.history-minutes";
/** Connection totals and presence change as others come and go: asked again this often while connected. */
const REFRESH_MS = 15_000;
/** A burst of presence notifications (a deploy reconnecting everyone) is answered by one GetPresence. */
const PRESENCE_DEBOUNCE_MS = 500;

function loadWanted(): Record<Group, boolean> {
  try {
    const stored: unknown = JSON.parse(window.sessionStorage.getItem(WANTED_KEY) ?? "null");
    if (stored && typeof stored === "object") {
      const record = stored as Record<string, unknown>;
      return {
        analytics: typeof record["analytics"] === "boolean" ? record["analytics"] : DEFAULT_WANTED.analytics,
        alerts: typeof record["alerts"] === "boolean" ? record["alerts"] : DEFAULT_WANTED.alerts,
        "user-activity":
          typeof record["user-activity"] === "boolean" ? record["user-activity"] : DEFAULT_WANTED["user-activity"],
      };
    }
  } catch {
    // ignore unreadable storage
  }
  return { ...DEFAULT_WANTED };
}

function saveWanted(wanted: Record<Group, boolean>): void {
  try {
    window.sessionStorage.setItem(WANTED_KEY, JSON.stringify(wanted));
  } catch {
    // not persisted; still applied for this page
  }
}

function loadMinutes(): number {
  try {
    const stored = Number(window.sessionStorage.getItem(MINUTES_KEY));
    if (HISTORY_MINUTES.includes(stored)) return stored;
  } catch {
    // ignore unreadable storage
  }
  return DEFAULT_HISTORY_MINUTES;
}

function saveMinutes(minutes: number): void {
  try {
    window.sessionStorage.setItem(MINUTES_KEY, String(minutes));
  } catch {
    // not persisted; still applied for this page
  }
}

export interface AdminHub {
  state: DashboardState;
  toggle: (group: Group) => void;
  reconnect: () => void;
  refreshStats: () => void;
  refreshCounts: () => void;
  sendTestMessage: () => void;
  setHistoryMinutes: (minutes: number) => void;
  refreshPresence: () => void;
  acknowledgeAlert: (alertId: string) => void;
  silenceAlerts: (target: string, minutes: number) => void;
  dismissAlert: (id: number) => void;
  dismissToast: (id: number) => void;
  clearAlerts: () => void;
}

export function useAdminHub(token: string, onAuthFailure: (message: string) => void): AdminHub {
  const wantedRef = useRef<Record<Group, boolean>>(loadWanted());
  const minutesRef = useRef<number>(loadMinutes());
  const [state, dispatch] = useReducer(reducer, { wanted: wantedRef.current, minutes: minutesRef.current }, initialState);
  const connectionRef = useRef<HubConnection | null>(null);
  const startRef = useRef<() => void>(() => undefined);
  const onAuthFailureRef = useRef(onAuthFailure);
  onAuthFailureRef.current = onAuthFailure;
  const testCounter = useRef(0);

  const connected = (): HubConnection | null => {
    const connection = connectionRef.current;
    return connection && connection.state === HubConnectionState.Connected ? connection : null;
  };

  const loadAlertStatesOn = useCallback(async (connection: HubConnection) => {
    try {
      const states = alertStatesOf(await connection.invoke<AlertStates>("GetAlertStates"));
      dispatch({ type: "alertStates", ...states });
    } catch (error) {
      console.warn(`[hub] GetAlertStates failed: ${describeError(error)}`);
    }
  }, []);

  const setSubscription = useCallback(
    async (connection: HubConnection, group: Group, subscribe: boolean) => {
      dispatch({ type: "subPending", group });
      try {
        const method = `${subscribe ? "SubscribeTo" : "UnsubscribeFrom"}${METHOD_SUFFIX[group]}`;
        const result = await connection.invoke<SubscriptionResult>(method);
        dispatch({ type: "subConfirmed", group, result });
      } catch (error) {
        dispatch({ type: "subFailed", group, error: describeError(error) });
        return;
      }
      // AlertStateChanged reaches the alerts group only: what changed meanwhile is read again.
      if (group === "alerts" && subscribe) await loadAlertStatesOn(connection);
    },
    [loadAlertStatesOn],
  );

  const loadHistoryOn = useCallback(async (connection: HubConnection, minutes: number) => {
    try {
      const answer = await connection.invoke<AnalyticsHistory>("GetAnalyticsHistory", minutes);
      dispatch({ type: "history", window: historyWindow(answer) });
    } catch (error) {
      const reason = describeError(error);
      dispatch({ type: "historyFailed", minutes, error: reason });
      console.warn(`[hub] GetAnalyticsHistory failed: ${reason}`);
    }
  }, []);

  const refreshPresenceOn = useCallback(async (connection: HubConnection) => {
    try {
      dispatch({ type: "presence", presence: presenceOf(await connection.invoke<PresenceAnswer>("GetPresence")) });
    } catch (error) {
      const reason = describeError(error);
      dispatch({ type: "presenceFailed", error: reason });
      console.warn(`[hub] GetPresence failed: ${reason}`);
    }
  }, []);

  const refreshStatsOn = useCallback(async (connection: HubConnection) => {
    try {
      const stats = await connection.invoke<Record<string, unknown> & { timestamp: string }>("GetPlatformStats");
      dispatch({ type: "figures", figures: pickFigures(stats), timestamp: stats.timestamp, source: "GetPlatformStats" });
    } catch (error) {
      console.warn(`[hub] GetPlatformStats failed: ${describeError(error)}`);
    }
  }, []);

  const refreshCountsOn = useCallback(async (connection: HubConnection) => {
    try {
      dispatch({ type: "counts", payload: await connection.invoke<ConnectionCount>("GetConnectionCount") });
    } catch (error) {
      console.warn(`[hub] GetConnectionCount failed: ${describeError(error)}`);
    }
  }, []);

  useEffect(() => {
    let disposed = false;
    let rejected: string | null = null;
    const policy = new RecordingRetryPolicy(
      RETRY_DELAYS_MS,
      (info) => {
        if (!disposed) dispatch({ type: "status", status: { kind: "reconnecting", ...info } });
      },
      (reason) => {
        rejected = authFailure(reason);
        return rejected !== null;
      },
    );
    const connection = buildConnection(() => token, policy);
    connectionRef.current = connection;

    let presenceTimer: number | undefined;
    const presenceSoon = () => {
      window.clearTimeout(presenceTimer);
      presenceTimer = window.setTimeout(() => {
        if (!disposed && connection.state === HubConnectionState.Connected) void refreshPresenceOn(connection);
      }, PRESENCE_DEBOUNCE_MS);
    };

    const afterConnect = async (): Promise<void> => {
      dispatch({ type: "status", status: { kind: "connected", since: Date.now() } });
      const wanted = wantedRef.current;
      // The hub runs one connection's invocations one at a time, in the order sent: the history goes
      // first so the charts fill at once; the alert states follow the subscriptions, so an alert raised
      // in between is either in the states or arrives live.
      const history = loadHistoryOn(connection, minutesRef.current);
      const subscribed = Promise.all(
        (Object.keys(wanted) as Group[]).filter((g) => wanted[g]).map((g) => setSubscription(connection, g, true)),
      );
      const others = [refreshStatsOn(connection), refreshCountsOn(connection), refreshPresenceOn(connection)];
      const states = wanted.alerts ? Promise.resolve() : loadAlertStatesOn(connection);
      await Promise.all([history, subscribed, ...others, states]);
    };

    connection.on("ConnectionEstablished", (payload: ConnectionEstablished) => dispatch({ type: "established", payload }));
    const figuresFrom =
      <T extends { timestamp: string }>(source: string, adapt: (payload: T) => DashboardState["figures"]) =>
      (payload: T) =>
        dispatch({ type: "figures", figures: adapt(payload), timestamp: payload.timestamp, source });
    connection.on("AnalyticsUpdate", figuresFrom<AnalyticsUpdate>("AnalyticsUpdate", analyticsFigures));
    connection.on("UserCountUpdate", figuresFrom<UserCountUpdate>("UserCountUpdate", userCountFigures));
    connection.on(
      "GenerationMetricsUpdate",
      figuresFrom<GenerationMetricsUpdate>("GenerationMetricsUpdate", generationFigures),
    );
    connection.on("RevenueUpdate", figuresFrom<RevenueUpdate>("RevenueUpdate", revenueFigures));
    connection.on("SystemAlert", (payload: SystemAlert) => dispatch({ type: "alert", alert: alertOfSystemAlert(payload) }));
    connection.on("AlertStateChanged", (payload: AlertStateChanged) => {
      const change = alertChangeOf(payload);
      if (change) dispatch({ type: "alertChange", change });
    });
    connection.on("AdminNotification", (payload: AdminNotification) => {
      dispatch({ type: "admin", payload });
      if (payload.type === "presence" || payload.type === "presence-summary") presenceSoon();
    });
    connection.on("UserActivityUpdate", (payload: UserActivityUpdate) => dispatch({ type: "activity", payload }));
    // Sent by the hub in some error paths and by SendTestMessage-style tools; accepted so the client never warns.
    connection.on("ErrorOccurred", (payload: { message?: string }) =>
      console.warn(`[hub] server reported: ${payload?.message ?? "an error"}`),
    );
    connection.on("ReceiveMessage", () => undefined);

    connection.onreconnecting(() => {
      if (disposed) return;
      dispatch({ type: "subsLost" });
      if (policy.last) dispatch({ type: "status", status: { kind: "reconnecting", ...policy.last } });
    });
    connection.onreconnected(() => {
      if (!disposed) void afterConnect();
    });
    connection.onclose((error) => {
      if (disposed) return;
      dispatch({ type: "subsLost" });
      if (rejected !== null) {
        onAuthFailureRef.current(rejected);
        return;
      }
      dispatch({ type: "status", status: { kind: "disconnected", reason: error ? describeError(error) : null } });
    });

    const start = async (): Promise<void> => {
      dispatch({ type: "status", status: { kind: "connecting" } });
      try {
        await connection.start();
      } catch (error) {
        if (disposed) return;
        const message = authFailure(error);
        if (message !== null) onAuthFailureRef.current(message);
        else dispatch({ type: "status", status: { kind: "disconnected", reason: describeError(error) } });
        return;
      }
      if (!disposed) await afterConnect();
    };
    startRef.current = () => {
      if (connection.state === HubConnectionState.Disconnected) void start();
    };
    void start();

    return () => {
      disposed = true;
      window.clearTimeout(presenceTimer);
      connectionRef.current = null;
      void connection.stop();
    };
  }, [token, setSubscription, refreshStatsOn, refreshCountsOn, loadHistoryOn, refreshPresenceOn, loadAlertStatesOn]);

  const isConnected = state.status.kind === "connected";
  useEffect(() => {
    if (!isConnected) return;
    const timer = window.setInterval(() => {
      const connection = connected();
      if (connection) void Promise.all([refreshCountsOn(connection), refreshPresenceOn(connection)]);
    }, REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [isConnected, refreshCountsOn, refreshPresenceOn]);

  const setHistoryMinutes = useCallback(
    (minutes: number) => {
      if (minutes === minutesRef.current) return;
      minutesRef.current = minutes;
      saveMinutes(minutes);
      dispatch({ type: "historyWanted", minutes });
      const connection = connected();
      if (connection) void loadHistoryOn(connection, minutes);
    },
    [loadHistoryOn],
  );

  /** Acknowledge or silence: the answer updates this page at once, AlertStateChanged every other one. */
  const alertAction = useCallback(
    <T,>(key: string, invoke: (connection: HubConnection) => Promise<T>, apply: (answer: T) => void) => {
      const connection = connected();
      if (!connection) return;
      dispatch({ type: "alertActionPending", key });
      invoke(connection)
        .then((answer) => {
          apply(answer);
          dispatch({ type: "alertActionDone" });
        })
        .catch((error: unknown) => dispatch({ type: "alertActionFailed", error: describeError(error) }));
    },
    [],
  );

  const acknowledgeAlert = useCallback(
    (alertId: string) =>
      alertAction(
        alertId,
        (connection) => connection.invoke<AlertView>("AcknowledgeAlert", alertId),
        (view) => dispatch({ type: "alertChange", change: { kind: "alert", alert: alertOfView(view), isNew: false } }),
      ),
    [alertAction],
  );

  const silenceAlerts = useCallback(
    (target: string, minutes: number) =>
      alertAction(
        target,
        (connection) => connection.invoke<SilenceView>("SilenceAlert", target, minutes),
        (view) =>
          dispatch({
            type: "alertChange",
            change: minutes > 0 ? { kind: "silence", silence: silenceOf(view) } : { kind: "unsilence", target },
          }),
      ),
    [alertAction],
  );

  const toggle = useCallback(
    (group: Group) => {
      const wanted = !wantedRef.current[group];
      wantedRef.current = { ...wantedRef.current, [group]: wanted };
      saveWanted(wantedRef.current);
      dispatch({ type: "want", group, wanted });
      const connection = connected();
      if (connection) void setSubscription(connection, group, wanted);
    },
    [setSubscription],
  );

  const sendTestMessage = useCallback(() => {
    const connection = connected();
    if (!connection) return;
    testCounter.current += 1;
    dispatch({ type: "testPending" });
    const started = performance.now();
    connection
      .invoke<TestMessageResult>("SendTestMessage", `ping ${testCounter.current}`)
      .then(() => dispatch({ type: "testDone", roundTripMs: performance.now() - started }))
      .catch((error: unknown) => dispatch({ type: "testFailed", error: describeError(error) }));
  }, []);

  const refreshers = useMemo(() => {
    const whenConnected = (run: (connection: HubConnection) => Promise<void>) => () => {
      const connection = connected();
      if (connection) void run(connection);
    };
    return {
      refreshStats: whenConnected(refreshStatsOn),
      refreshCounts: whenConnected(refreshCountsOn),
      refreshPresence: whenConnected(refreshPresenceOn),
    };
  }, [refreshStatsOn, refreshCountsOn, refreshPresenceOn]);

  return {
    state,
    toggle,
    reconnect: useCallback(() => startRef.current(), []),
    ...refreshers,
    sendTestMessage,
    setHistoryMinutes,
    acknowledgeAlert,
    silenceAlerts,
    dismissAlert: useCallback((id: number) => dispatch({ type: "dismissAlert", id }), []),
    dismissToast: useCallback((id: number) => dispatch({ type: "dismissToast", id }), []),
    clearAlerts: useCallback(() => dispatch({ type: "clearAlerts" }), []),
  };
}

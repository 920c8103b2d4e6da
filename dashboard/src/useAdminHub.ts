// Owns one hub connection per token: registers the client methods, follows the connection state,
// re-subscribes and refreshes the figures after every (re)connect, and exposes the page's actions.

import { HubConnectionState, type HubConnection } from "@microsoft/signalr";
import { useCallback, useEffect, useReducer, useRef } from "react";

import { RecordingRetryPolicy, RETRY_DELAYS_MS, authFailure, buildConnection, describeError } from "./hub";
import { initialState, reducer, type DashboardState } from "./state";
import type {
  AdminNotification,
  AnalyticsUpdate,
  ConnectionCount,
  ConnectionEstablished,
  GenerationMetricsUpdate,
  Group,
  PlatformFigures,
  RevenueUpdate,
  SubscriptionResult,
  SystemAlert,
  TestMessageResult,
  UserActivityUpdate,
  UserCountUpdate,
} from "./types";
import { parseTime } from "./format";

const METHOD_SUFFIX: Record<Group, string> = {
  analytics: "Analytics",
  alerts: "Alerts",
  "user-activity": "UserActivity",
};
const WANTED_KEY = "realtime-admin.subscriptions";
const DEFAULT_WANTED: Record<Group, boolean> = { analytics: true, alerts: true, "user-activity": false };
const COUNTS_REFRESH_MS = 15_000;

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

function pick(source: Record<string, unknown>, keys: (keyof PlatformFigures)[]): Partial<PlatformFigures> {
  const out: Partial<PlatformFigures> = {};
  for (const key of keys) {
    const value = source[key];
    if (typeof value === "number" && Number.isFinite(value)) out[key] = value;
  }
  return out;
}

const ALL_FIGURES: (keyof PlatformFigures)[] = [
  "totalUsers",
  "activeUsers",
  "newUsersToday",
  "websitesGenerated",
  "imagesGenerated",
  "failedGenerations",
  "totalRevenue",
  "revenueToday",
  "averageGenerationTime",
];

export interface AdminHub {
  state: DashboardState;
  toggle: (group: Group) => void;
  reconnect: () => void;
  refreshStats: () => void;
  refreshCounts: () => void;
  sendTestMessage: () => void;
  dismissAlert: (id: number) => void;
  dismissToast: (id: number) => void;
  clearAlerts: () => void;
}

export function useAdminHub(token: string, onAuthFailure: (message: string) => void): AdminHub {
  const wantedRef = useRef<Record<Group, boolean>>(loadWanted());
  const [state, dispatch] = useReducer(reducer, wantedRef.current, initialState);
  const connectionRef = useRef<HubConnection | null>(null);
  const startRef = useRef<() => void>(() => undefined);
  const onAuthFailureRef = useRef(onAuthFailure);
  onAuthFailureRef.current = onAuthFailure;
  const testCounter = useRef(0);

  const connected = (): HubConnection | null => {
    const connection = connectionRef.current;
    return connection && connection.state === HubConnectionState.Connected ? connection : null;
  };

  const setSubscription = useCallback(async (connection: HubConnection, group: Group, subscribe: boolean) => {
    dispatch({ type: "subPending", group });
    try {
      const method = `${subscribe ? "SubscribeTo" : "UnsubscribeFrom"}${METHOD_SUFFIX[group]}`;
      const result = await connection.invoke<SubscriptionResult>(method);
      dispatch({ type: "subConfirmed", group, result });
    } catch (error) {
      dispatch({ type: "subFailed", group, error: describeError(error) });
    }
  }, []);

  const refreshStatsOn = useCallback(async (connection: HubConnection) => {
    try {
      const stats = await connection.invoke<Record<string, unknown> & { timestamp: string }>("GetPlatformStats");
      dispatch({ type: "figures", figures: pick(stats, ALL_FIGURES), timestamp: stats.timestamp, source: "GetPlatformStats" });
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

    const afterConnect = async (): Promise<void> => {
      dispatch({ type: "status", status: { kind: "connected", since: Date.now() } });
      const wanted = wantedRef.current;
      await Promise.all([
        ...(Object.keys(wanted) as Group[]).filter((g) => wanted[g]).map((g) => setSubscription(connection, g, true)),
        refreshStatsOn(connection),
        refreshCountsOn(connection),
      ]);
    };

    connection.on("ConnectionEstablished", (payload: ConnectionEstablished) => dispatch({ type: "established", payload }));
    connection.on("AnalyticsUpdate", (payload: AnalyticsUpdate) => {
      const figures = pick(payload as unknown as Record<string, unknown>, ALL_FIGURES);
      if (figures.totalRevenue === undefined && typeof payload.revenue === "number") figures.totalRevenue = payload.revenue;
      dispatch({ type: "figures", figures, timestamp: payload.timestamp, source: "AnalyticsUpdate" });
    });
    connection.on("UserCountUpdate", (payload: UserCountUpdate) =>
      dispatch({
        type: "figures",
        figures: pick(payload as unknown as Record<string, unknown>, ["totalUsers", "activeUsers", "newUsersToday"]),
        timestamp: payload.timestamp,
        source: "UserCountUpdate",
      }),
    );
    connection.on("GenerationMetricsUpdate", (payload: GenerationMetricsUpdate) =>
      dispatch({
        type: "figures",
        figures: pick(payload as unknown as Record<string, unknown>, [
          "websitesGenerated",
          "imagesGenerated",
          "failedGenerations",
          "averageGenerationTime",
        ]),
        timestamp: payload.timestamp,
        source: "GenerationMetricsUpdate",
      }),
    );
    connection.on("RevenueUpdate", (payload: RevenueUpdate) => {
      const figures: Partial<PlatformFigures> = {};
      if (typeof payload.dailyRevenue === "number") figures.revenueToday = payload.dailyRevenue;
      dispatch({ type: "figures", figures, timestamp: payload.timestamp, source: "RevenueUpdate" });
    });
    connection.on("SystemAlert", (payload: SystemAlert) =>
      dispatch({
        type: "alert",
        alert: {
          type: payload.type,
          severity: payload.severity,
          message: payload.message,
          at: parseTime(payload.timestamp),
          data: payload.data ?? null,
        },
      }),
    );
    connection.on("AdminNotification", (payload: AdminNotification) => dispatch({ type: "admin", payload }));
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
      connectionRef.current = null;
      void connection.stop();
    };
  }, [token, setSubscription, refreshStatsOn, refreshCountsOn]);

  // Connection totals change as others come and go: refresh them while connected.
  const isConnected = state.status.kind === "connected";
  useEffect(() => {
    if (!isConnected) return;
    const timer = window.setInterval(() => {
      const connection = connected();
      if (connection) void refreshCountsOn(connection);
    }, COUNTS_REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [isConnected, refreshCountsOn]);

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

  return {
    state,
    toggle,
    reconnect: useCallback(() => startRef.current(), []),
    refreshStats: useCallback(() => {
      const connection = connected();
      if (connection) void refreshStatsOn(connection);
    }, [refreshStatsOn]),
    refreshCounts: useCallback(() => {
      const connection = connected();
      if (connection) void refreshCountsOn(connection);
    }, [refreshCountsOn]),
    sendTestMessage,
    dismissAlert: useCallback((id: number) => dispatch({ type: "dismissAlert", id }), []),
    dismissToast: useCallback((id: number) => dispatch({ type: "dismissToast", id }), []),
    clearAlerts: useCallback(() => dispatch({ type: "clearAlerts" }), []),
  };
}

// Everything the page shows, as one reducer: figures and their 30-minute history, alerts, feeds,
// subscriptions (what the user wants vs what the server confirmed) and the connection panel.

import type { ConnectionStatus } from "./hub";
import { parseTime } from "./format";
import type {
  AdminNotification,
  AlertType,
  ConnectionCount,
  ConnectionEstablished,
  Group,
  PlatformFigures,
  Severity,
  SubscriptionResult,
  UserActivityUpdate,
} from "./types";

export const HISTORY_MS = 30 * 60 * 1000;
const MAX_ALERTS = 200;
const MAX_FEED = 100;
const MAX_TOASTS = 4;

export interface Sample {
  /** ms since the epoch (server timestamp of the figures). */
  t: number;
  activeUsers: number | null;
  websitesGenerated: number | null;
  imagesGenerated: number | null;
  failedGenerations: number | null;
  revenueToday: number | null;
  totalRevenue: number | null;
}

export interface AlertItem {
  id: number;
  type: AlertType;
  severity: Severity;
  message: string;
  at: number;
  data: Record<string, unknown> | null;
}

export interface FeedItem<T> {
  id: number;
  at: number;
  payload: T;
}

export interface SubscriptionState {
  /** What the user chose (re-applied after every reconnect). */
  wanted: boolean;
  /** What the server last confirmed for this connection. */
  confirmed: boolean;
  pending: boolean;
  confirmedAt: string | null;
  error: string | null;
}

export interface TestMessageState {
  pending: boolean;
  roundTripMs: number | null;
  at: number | null;
  error: string | null;
}

export interface DashboardState {
  status: ConnectionStatus;
  established: ConnectionEstablished | null;
  counts: ConnectionCount | null;
  figures: Partial<PlatformFigures>;
  /** Server timestamp (ISO) of the latest figures, and which event brought them. */
  updatedAt: string | null;
  updatedBy: string | null;
  history: Sample[];
  alerts: AlertItem[];
  toasts: AlertItem[];
  adminFeed: FeedItem<AdminNotification>[];
  activity: FeedItem<UserActivityUpdate>[];
  subscriptions: Record<Group, SubscriptionState>;
  test: TestMessageState;
  nextId: number;
}

export type Action =
  | { type: "status"; status: ConnectionStatus }
  | { type: "established"; payload: ConnectionEstablished }
  | { type: "counts"; payload: ConnectionCount }
  | { type: "figures"; figures: Partial<PlatformFigures>; timestamp: string; source: string }
  | { type: "alert"; alert: Omit<AlertItem, "id"> }
  | { type: "dismissAlert"; id: number }
  | { type: "dismissToast"; id: number }
  | { type: "clearAlerts" }
  | { type: "admin"; payload: AdminNotification }
  | { type: "activity"; payload: UserActivityUpdate }
  | { type: "want"; group: Group; wanted: boolean }
  | { type: "subPending"; group: Group }
  | { type: "subConfirmed"; group: Group; result: SubscriptionResult }
  | { type: "subFailed"; group: Group; error: string }
  | { type: "subsLost" }
  | { type: "testPending" }
  | { type: "testDone"; roundTripMs: number }
  | { type: "testFailed"; error: string };

export function initialState(wanted: Record<Group, boolean>): DashboardState {
  const sub = (group: Group): SubscriptionState => ({
    wanted: wanted[group],
    confirmed: false,
    pending: false,
    confirmedAt: null,
    error: null,
  });
  return {
    status: { kind: "connecting" },
    established: null,
    counts: null,
    figures: {},
    updatedAt: null,
    updatedBy: null,
    history: [],
    alerts: [],
    toasts: [],
    adminFeed: [],
    activity: [],
    subscriptions: { analytics: sub("analytics"), alerts: sub("alerts"), "user-activity": sub("user-activity") },
    test: { pending: false, roundTripMs: null, at: null, error: null },
    nextId: 1,
  };
}

function sampleOf(t: number, f: Partial<PlatformFigures>): Sample {
  return {
    t,
    activeUsers: f.activeUsers ?? null,
    websitesGenerated: f.websitesGenerated ?? null,
    imagesGenerated: f.imagesGenerated ?? null,
    failedGenerations: f.failedGenerations ?? null,
    revenueToday: f.revenueToday ?? null,
    totalRevenue: f.totalRevenue ?? null,
  };
}

function addSample(history: Sample[], sample: Sample): Sample[] {
  const cutoff = sample.t - HISTORY_MS;
  const kept = history.filter((s) => s.t >= cutoff && s.t !== sample.t);
  // Keep time order even if an older timestamp arrives late (e.g. GetPlatformStats after an event).
  const index = kept.findIndex((s) => s.t > sample.t);
  if (index === -1) return [...kept, sample];
  return [...kept.slice(0, index), sample, ...kept.slice(index)];
}

function updateSub(state: DashboardState, group: Group, change: Partial<SubscriptionState>): DashboardState {
  return { ...state, subscriptions: { ...state.subscriptions, [group]: { ...state.subscriptions[group], ...change } } };
}

export function reducer(state: DashboardState, action: Action): DashboardState {
  switch (action.type) {
    case "status":
      return { ...state, status: action.status };
    case "established":
      return { ...state, established: action.payload };
    case "counts":
      return { ...state, counts: action.payload };
    case "figures": {
      const at = parseTime(action.timestamp);
      const current = state.updatedAt ? parseTime(state.updatedAt) : -Infinity;
      // An older answer (a slow GetPlatformStats) never overwrites newer figures.
      if (at < current) {
        return { ...state, history: addSample(state.history, sampleOf(at, { ...state.figures, ...action.figures })) };
      }
      const figures = { ...state.figures, ...action.figures };
      return {
        ...state,
        figures,
        updatedAt: action.timestamp,
        updatedBy: action.source,
        history: addSample(state.history, sampleOf(at, figures)),
      };
    }
    case "alert": {
      const alert: AlertItem = { ...action.alert, id: state.nextId };
      const loud = alert.severity === "high" || alert.severity === "critical";
      return {
        ...state,
        nextId: state.nextId + 1,
        alerts: [alert, ...state.alerts].slice(0, MAX_ALERTS),
        toasts: loud ? [alert, ...state.toasts].slice(0, MAX_TOASTS) : state.toasts,
      };
    }
    case "dismissAlert":
      return {
        ...state,
        alerts: state.alerts.filter((a) => a.id !== action.id),
        toasts: state.toasts.filter((a) => a.id !== action.id),
      };
    case "dismissToast":
      return { ...state, toasts: state.toasts.filter((a) => a.id !== action.id) };
    case "clearAlerts":
      return { ...state, alerts: [], toasts: [] };
    case "admin":
      return {
        ...state,
        nextId: state.nextId + 1,
        adminFeed: [{ id: state.nextId, at: parseTime(action.payload.timestamp), payload: action.payload }, ...state.adminFeed].slice(
          0,
          MAX_FEED,
        ),
      };
    case "activity":
      return {
        ...state,
        nextId: state.nextId + 1,
        activity: [{ id: state.nextId, at: parseTime(action.payload.timestamp), payload: action.payload }, ...state.activity].slice(
          0,
          MAX_FEED,
        ),
      };
    case "want":
      return updateSub(state, action.group, { wanted: action.wanted, error: null });
    case "subPending":
      return updateSub(state, action.group, { pending: true, error: null });
    case "subConfirmed":
      return updateSub(state, action.group, {
        pending: false,
        confirmed: action.result.subscribed,
        confirmedAt: action.result.timestamp,
        error: null,
      });
    case "subFailed":
      return updateSub(state, action.group, { pending: false, error: action.error });
    case "subsLost": {
      // A new connection starts with no groups; the page subscribes again once connected.
      let next = state;
      for (const group of Object.keys(state.subscriptions) as Group[]) {
        next = updateSub(next, group, { confirmed: false, pending: false, confirmedAt: null });
      }
      return next;
    }
    case "testPending":
      return { ...state, test: { ...state.test, pending: true, error: null } };
    case "testDone":
      return { ...state, test: { pending: false, roundTripMs: action.roundTripMs, at: Date.now(), error: null } };
    case "testFailed":
      return { ...state, test: { ...state.test, pending: false, error: action.error } };
  }
}

// Everything the page shows, as one reducer: figures and their history (stored snapshots, then live
// updates), alerts with their shared state, presence, feeds, subscriptions (what the user wants vs what
// the server confirmed) and the connection panel.

import type { AlertChange, AlertFacts, HistoryWindow, Presence, Silence } from "./adapters";
import type { ConnectionStatus } from "./hub";
import { parseTime } from "./format";
import type {
  AdminNotification,
  ConnectionCount,
  ConnectionEstablished,
  Group,
  PlatformFigures,
  SubscriptionResult,
  UserActivityUpdate,
} from "./types";

/** The chart windows the page offers (GetAnalyticsHistory allows 1 to 1440 minutes). */
export const HISTORY_MINUTES: readonly number[] = [30, 360, 1440];
export const DEFAULT_HISTORY_MINUTES = 30;
/** Chart points at most, like the server's answer: live samples closer than window/500 share a point. */
const MAX_SAMPLES = 500;
const MAX_ALERTS = 200;
/** Ids of alerts dismissed in this page, so loading the states again does not bring them back; as many
 *  as the cluster keeps records by default (REALTIME_MAX_ALERT_RECORDS), the oldest forgotten first. */
const MAX_DISMISSED = 1000;
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

export interface AlertItem extends AlertFacts {
  /** The page's key (alerts without a server id need one too). */
  id: number;
}

export interface HistoryState {
  minutes: number;
  status: "loading" | "loaded" | "failed";
  /** Of the last answer: points, the server's bucket width (0: not downsampled), whether it was complete. */
  points: number;
  bucketMs: number;
  /** Where the answer's buckets start; live samples are bucketed from here too. */
  originMs: number;
  complete: boolean;
  error: string | null;
}

export interface AlertActionState {
  /** The alert id or silence target being acted on. */
  pending: string | null;
  error: string | null;
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
  historyInfo: HistoryState;
  alerts: AlertItem[];
  silences: Silence[];
  /** Older alerts the cluster keeps that the last GetAlertStates left out. */
  alertsOmitted: number;
  dismissed: string[];
  alertAction: AlertActionState;
  presence: Presence | null;
  presenceError: string | null;
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
  | { type: "historyWanted"; minutes: number }
  | { type: "history"; window: HistoryWindow }
  | { type: "historyFailed"; minutes: number; error: string }
  | { type: "alert"; alert: AlertFacts }
  | { type: "alertStates"; alerts: AlertFacts[]; omitted: number; silences: Silence[] }
  | { type: "alertChange"; change: AlertChange }
  | { type: "alertActionPending"; key: string }
  | { type: "alertActionDone" }
  | { type: "alertActionFailed"; error: string }
  | { type: "presence"; presence: Presence }
  | { type: "presenceFailed"; error: string }
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

export function initialState({ wanted, minutes }: { wanted: Record<Group, boolean>; minutes: number }): DashboardState {
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
    historyInfo: {
      minutes,
      status: "loading",
      points: 0,
      bucketMs: 0,
      originMs: 0,
      complete: false,
      error: null,
    },
    alerts: [],
    silences: [],
    alertsOmitted: 0,
    dismissed: [],
    alertAction: { pending: null, error: null },
    presence: null,
    presenceError: null,
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

const newestTime = (samples: Sample[]): number => samples.at(-1)?.t ?? -Infinity;

/** `sample` in time order, the window cut to `minutes` before the newest sample; a live sample in the
 *  same bucket as the newest one replaces it (the server's downsampling keeps each bucket's last
 *  snapshot too), so a day's window stays about MAX_SAMPLES points however long the page is open. */
function addSample(history: Sample[], sample: Sample, info: HistoryState): Sample[] {
  const newest = Math.max(sample.t, newestTime(history));
  const cutoff = newest - info.minutes * 60_000;
  let kept = history.filter((s) => s.t >= cutoff && s.t !== sample.t);
  const last = kept[kept.length - 1];
  const width = kept.length >= MAX_SAMPLES ? Math.max(info.bucketMs, (info.minutes * 60_000) / MAX_SAMPLES) : info.bucketMs;
  if (last !== undefined && width > 0 && sample.t > last.t) {
    const bucket = (t: number) => Math.floor((t - info.originMs) / width);
    if (bucket(last.t) === bucket(sample.t)) kept = kept.slice(0, -1);
  }
  if (sample.t < cutoff) return kept;
  // Keep time order even if an older timestamp arrives late (e.g. GetPlatformStats after an event).
  const index = kept.findIndex((s) => s.t > sample.t);
  if (index === -1) return [...kept, sample];
  return [...kept.slice(0, index), sample, ...kept.slice(index)];
}

/** The stored snapshots of the window, then the live samples newer than the last of them. */
function fromHistory(history: Sample[], window: HistoryWindow): Sample[] {
  const stored = window.points.map((point) => sampleOf(point.t, point.figures));
  const lastStored = newestTime(stored);
  const cutoff = window.endMs - window.minutes * 60_000;
  return [...stored.filter((s) => s.t >= cutoff), ...history.filter((s) => s.t > lastStored)];
}

/** The alert list with `alert` put in its place by time (newest first). */
function placeAlert(alerts: AlertItem[], alert: AlertItem): AlertItem[] {
  const index = alerts.findIndex((a) => a.at < alert.at);
  const placed = index === -1 ? [...alerts, alert] : [...alerts.slice(0, index), alert, ...alerts.slice(index)];
  return placed.slice(0, MAX_ALERTS);
}

/** Merge what the server says of alerts into the list: a known id is updated in place (its page key
 *  kept), an unknown one is added when `add` allows it. */
function mergeAlerts(state: DashboardState, facts: AlertFacts[], add: boolean): DashboardState {
  let { alerts, nextId } = state;
  const dismissed = new Set(state.dismissed);
  for (const fact of facts) {
    const known = fact.alertId === null ? -1 : alerts.findIndex((a) => a.alertId === fact.alertId);
    if (known !== -1) {
      alerts = alerts.map((a, i) => (i === known ? { ...fact, id: a.id } : a));
    } else if (add && (fact.alertId === null || !dismissed.has(fact.alertId))) {
      alerts = placeAlert(alerts, { ...fact, id: nextId });
      nextId += 1;
    }
  }
  return { ...state, alerts, nextId };
}

function remember(dismissed: string[], alerts: AlertItem[]): string[] {
  const ids = alerts.flatMap((a) => (a.alertId === null ? [] : [a.alertId]));
  return [...dismissed, ...ids].slice(-MAX_DISMISSED);
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
        const sample = sampleOf(at, { ...state.figures, ...action.figures });
        return { ...state, history: addSample(state.history, sample, state.historyInfo) };
      }
      const figures = { ...state.figures, ...action.figures };
      return {
        ...state,
        figures,
        updatedAt: action.timestamp,
        updatedBy: action.source,
        history: addSample(state.history, sampleOf(at, figures), state.historyInfo),
      };
    }
    case "historyWanted": {
      const cutoff = newestTime(state.history) - action.minutes * 60_000;
      return {
        ...state,
        history: state.history.filter((s) => s.t >= cutoff),
        historyInfo: { ...state.historyInfo, minutes: action.minutes, status: "loading", error: null },
      };
    }
    case "history": {
      const { window } = action;
      if (window.minutes !== state.historyInfo.minutes) return state; // the user picked another window since
      return {
        ...state,
        history: fromHistory(state.history, window),
        historyInfo: {
          minutes: window.minutes,
          status: "loaded",
          points: window.points.length,
          bucketMs: window.bucketMs,
          originMs: window.startMs,
          complete: window.complete,
          error: null,
        },
      };
    }
    case "historyFailed":
      if (action.minutes !== state.historyInfo.minutes) return state;
      return { ...state, historyInfo: { ...state.historyInfo, status: "failed", error: action.error } };
    case "alert": {
      const known = action.alert.alertId !== null && state.alerts.some((a) => a.alertId === action.alert.alertId);
      if (known) return mergeAlerts(state, [action.alert], false); // loaded from the shared state first
      const alert: AlertItem = { ...action.alert, id: state.nextId };
      const loud = alert.severity === "high" || alert.severity === "critical";
      return {
        ...state,
        nextId: state.nextId + 1,
        alerts: [alert, ...state.alerts].slice(0, MAX_ALERTS),
        toasts: loud ? [alert, ...state.toasts].slice(0, MAX_TOASTS) : state.toasts,
      };
    }
    case "alertStates":
      return { ...mergeAlerts(state, action.alerts, true), silences: action.silences, alertsOmitted: action.omitted };
    case "alertChange": {
      const { change } = action;
      switch (change.kind) {
        case "alert":
          // An acknowledgement of an alert this page dismissed (or never had) does not bring it back;
          // an alert the collector held back (suppressed) is news.
          return mergeAlerts(state, [change.alert], change.isNew);
        case "silence":
          return {
            ...state,
            silences: [...state.silences.filter((s) => s.target !== change.silence.target), change.silence],
          };
        case "unsilence":
          return { ...state, silences: state.silences.filter((s) => s.target !== change.target) };
      }
    }
    case "alertActionPending":
      return { ...state, alertAction: { pending: action.key, error: null } };
    case "alertActionDone":
      return { ...state, alertAction: { pending: null, error: null } };
    case "alertActionFailed":
      return { ...state, alertAction: { pending: null, error: action.error } };
    case "presence":
      return { ...state, presence: action.presence, presenceError: null };
    case "presenceFailed":
      return { ...state, presenceError: action.error };
    case "dismissAlert":
      return {
        ...state,
        alerts: state.alerts.filter((a) => a.id !== action.id),
        toasts: state.toasts.filter((a) => a.id !== action.id),
        dismissed: remember(state.dismissed, state.alerts.filter((a) => a.id === action.id)),
      };
    case "dismissToast":
      return { ...state, toasts: state.toasts.filter((a) => a.id !== action.id) };
    case "clearAlerts":
      return { ...state, alerts: [], toasts: [], dismissed: remember(state.dismissed, state.alerts) };
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

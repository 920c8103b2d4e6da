// One adapter per payload: each turns a hub event or method result (src/types.ts) into what the page
// keeps (src/state.ts). With types.ts, this is the page's only knowledge of the wire shapes.

import { parseTime } from "./format";
import type {
  Actor,
  AlertStateChanged,
  AlertStates,
  AlertStatus,
  AlertView,
  AnalyticsHistory,
  AnalyticsUpdate,
  GenerationMetricsUpdate,
  PlatformFigures,
  PresenceAnswer,
  RevenueUpdate,
  SilenceView,
  SystemAlert,
  UserCountUpdate,
} from "./types";

// -- figures ----------------------------------------------------------------------------------------

export const ALL_FIGURES: readonly (keyof PlatformFigures)[] = [
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

/** The finite numbers among `keys` of a payload (a publisher may leave any of them out). */
export function pickFigures(source: object, keys: readonly (keyof PlatformFigures)[] = ALL_FIGURES): Partial<PlatformFigures> {
  const record = source as Record<string, unknown>;
  const out: Partial<PlatformFigures> = {};
  for (const key of keys) {
    const value = record[key];
    if (typeof value === "number" && Number.isFinite(value)) out[key] = value;
  }
  return out;
}

export function analyticsFigures(payload: AnalyticsUpdate): Partial<PlatformFigures> {
  const figures = pickFigures(payload);
  if (figures.totalRevenue === undefined && typeof payload.revenue === "number") figures.totalRevenue = payload.revenue;
  return figures;
}

export const userCountFigures = (payload: UserCountUpdate): Partial<PlatformFigures> =>
  pickFigures(payload, ["totalUsers", "activeUsers", "newUsersToday"]);

export const generationFigures = (payload: GenerationMetricsUpdate): Partial<PlatformFigures> =>
  pickFigures(payload, ["websitesGenerated", "imagesGenerated", "failedGenerations", "averageGenerationTime"]);

export function revenueFigures(payload: RevenueUpdate): Partial<PlatformFigures> {
  return typeof payload.dailyRevenue === "number" ? { revenueToday: payload.dailyRevenue } : {};
}

// -- history ----------------------------------------------------------------------------------------

export interface HistoryPointFigures {
  /** ms since the epoch. */
  t: number;
  figures: Partial<PlatformFigures>;
}

export interface HistoryWindow {
  minutes: number;
  startMs: number;
  endMs: number;
  /** Bucket width the server downsampled to (0: every stored snapshot). */
  bucketMs: number;
  complete: boolean;
  points: HistoryPointFigures[];
}

export function historyWindow(answer: AnalyticsHistory): HistoryWindow {
  const endMs = parseTime(answer.timestamp);
  return {
    minutes: answer.minutes,
    startMs: parseTime(answer.from, endMs - answer.minutes * 60_000),
    endMs,
    bucketMs: Math.max(0, answer.bucketSeconds * 1000),
    complete: answer.complete,
    points: answer.points
      .map((point) => ({ t: parseTime(point.timestamp, Number.NaN), figures: pickFigures(point) }))
      .filter((point) => Number.isFinite(point.t)),
  };
}

// -- presence ---------------------------------------------------------------------------------------

export interface PresentUser {
  userId: string;
  name: string;
  connections: number;
  /** ms since the epoch. */
  since: number;
}

export interface PresenceGroupView {
  name: string;
  totalUsers: number;
  totalConnections: number;
  users: PresentUser[];
}

export interface Presence {
  at: number;
  replicas: number;
  totalUsers: number;
  totalConnections: number;
  complete: boolean;
  groups: PresenceGroupView[];
}

export function presenceOf(answer: PresenceAnswer): Presence {
  return {
    at: parseTime(answer.timestamp),
    replicas: answer.replicas,
    totalUsers: answer.totalUsers,
    totalConnections: answer.totalConnections,
    complete: answer.complete,
    groups: Object.entries(answer.groups).map(([name, group]) => ({
      name,
      totalUsers: group.totalUsers,
      totalConnections: group.totalConnections,
      users: group.users.map((user) => ({
        userId: user.userId,
        name: user.userName ?? user.userId,
        connections: user.connections,
        since: parseTime(user.since),
      })),
    })),
  };
}

// -- alerts and their shared state ------------------------------------------------------------------

/** Who acted, as the page names them. */
export interface Act {
  by: string;
  at: number;
}

export interface AlertFacts {
  /** The server's id (null from a publisher that gives none: such an alert can only be dismissed here). */
  alertId: string | null;
  type: AlertView["type"];
  severity: AlertView["severity"];
  message: string;
  at: number;
  data: Record<string, unknown> | null;
  rule: string | null;
  /** Held back by the collector because a silence covered it. */
  suppressed: boolean;
  acknowledged: Act | null;
}

export interface Silence {
  target: string;
  until: number;
  silenced: Act;
}

export const actorName = (actor: Actor | null): string => actor?.userName ?? actor?.userId ?? "the collector";

export function alertOfSystemAlert(payload: SystemAlert): AlertFacts {
  return {
    alertId: typeof payload.id === "string" ? payload.id : null,
    type: payload.type,
    severity: payload.severity,
    message: payload.message,
    at: parseTime(payload.timestamp),
    data: payload.data ?? null,
    rule: null,
    suppressed: false,
    acknowledged: null,
  };
}

export function alertOfView(view: AlertView): AlertFacts {
  return {
    alertId: view.id,
    type: view.type,
    severity: view.severity,
    message: view.message,
    at: parseTime(view.timestamp),
    data: view.data ?? null,
    rule: view.rule ?? null,
    suppressed: view.suppressed,
    acknowledged:
      view.acknowledgedBy !== null
        ? { by: actorName(view.acknowledgedBy), at: parseTime(view.acknowledgedAt ?? undefined) }
        : null,
  };
}

export function silenceOf(view: SilenceView): Silence {
  return {
    target: view.target,
    until: parseTime(view.until),
    silenced: { by: actorName(view.silencedBy), at: parseTime(view.silencedAt) },
  };
}

export interface AlertStateSnapshot {
  alerts: AlertFacts[];
  /** Older alerts the server kept but left out of its answer. */
  omitted: number;
  silences: Silence[];
}

export function alertStatesOf(answer: AlertStates): AlertStateSnapshot {
  return {
    alerts: answer.alerts.map(alertOfView),
    omitted: typeof answer.omitted === "number" ? answer.omitted : 0,
    silences: answer.silences.map(silenceOf),
  };
}

/** What an AlertStateChanged does to the page's state. */
export type AlertChange =
  | { kind: "alert"; alert: AlertFacts; isNew: boolean }
  | { kind: "silence"; silence: Silence }
  | { kind: "unsilence"; target: string };

export function alertChangeOf(event: AlertStateChanged): AlertChange | null {
  switch (event.change) {
    case "acknowledged":
    case "suppressed":
      return event.alert ? { kind: "alert", alert: alertOfView(event.alert), isNew: event.change === "suppressed" } : null;
    case "silenced":
      return event.silence ? { kind: "silence", silence: silenceOf(event.silence) } : null;
    case "unsilenced":
      return event.silence ? { kind: "unsilence", target: event.silence.target } : null;
  }
}

/** The live silence (the longest) covering an alert's rule or type at `now`, as the server decides it
 *  (shared/alert_state.py covering_silence). */
export function coveringSilence(alert: AlertFacts, silences: readonly Silence[], now: number): Silence | null {
  let found: Silence | null = null;
  for (const silence of silences) {
    if (silence.until <= now || (silence.target !== alert.rule && silence.target !== alert.type)) continue;
    if (found === null || silence.until > found.until) found = silence;
  }
  return found;
}

/** The status shown, as the server's alert_status decides it, but at the page's `now`, so a silence
 *  ending or starting changes it without a new answer. */
export function alertStatus(alert: AlertFacts, silences: readonly Silence[], now: number): AlertStatus {
  if (alert.acknowledged) return "acknowledged";
  if (alert.suppressed || coveringSilence(alert, silences, now)) return "silenced";
  return "active";
}

/** What a silence button silences for an alert: its rule when it has one, else its type. */
export const silenceTarget = (alert: AlertFacts): string => alert.rule ?? alert.type;

// Payload shapes of the hub's client methods and hub method results (see broker_bridge/catalog.py and
// gateway/hub/admin_hub.py). Fields are optional where a publisher may leave them out. These types are
// the page's only knowledge of the wire; src/adapters.ts turns each payload into the page's state, so a
// changed shape is followed in these two files.

export type Group = "user-activity" | "analytics" | "alerts";
export const GROUPS: readonly Group[] = ["analytics", "alerts", "user-activity"];

export type AlertType = "info" | "warning" | "error" | "success";
export type Severity = "low" | "medium" | "high" | "critical";
export const ALERT_TYPES: readonly AlertType[] = ["info", "warning", "error", "success"];

export interface PlatformFigures {
  totalUsers: number;
  activeUsers: number;
  newUsersToday: number;
  websitesGenerated: number;
  imagesGenerated: number;
  failedGenerations: number;
  totalRevenue: number;
  revenueToday: number;
  averageGenerationTime: number;
}

export type FigureKey = keyof PlatformFigures;

export interface AnalyticsUpdate extends Partial<PlatformFigures> {
  timestamp: string;
  revenue?: number;
}

export interface UserCountUpdate {
  totalUsers: number;
  activeUsers: number;
  newUsersToday: number;
  timestamp: string;
}

export interface GenerationMetricsUpdate {
  websitesGenerated?: number;
  imagesGenerated?: number;
  failedGenerations?: number;
  averageGenerationTime?: number;
  timestamp: string;
}

export interface RevenueUpdate {
  dailyRevenue?: number;
  totalRevenue30d?: number;
  timestamp: string;
}

export interface SystemAlert {
  /** By which the alert is acknowledged (absent from a publisher that does not give one). */
  id?: string;
  type: AlertType;
  message: string;
  severity: Severity;
  timestamp: string;
  data: Record<string, unknown> | null;
}

export interface UserActivityUpdate {
  timestamp: string;
  userId: string;
  action: string;
  details: Record<string, unknown> | null;
}

export type AdminNotification =
  | {
      type: "role-assignment";
      userId: string;
      roleName: string;
      action: string;
      message: string;
      timestamp: string;
    }
  | {
      type: "system-event";
      eventType: string;
      description: string;
      data: Record<string, unknown> | null;
      timestamp: string;
    }
  | PresenceNotification
  | PresenceSummaryNotification;

/** A user's first connection in the cluster opened, or their last one closed (debounced by the server). */
export interface PresenceNotification {
  type: "presence";
  userId: string;
  userName: string | null;
  action: "online" | "offline";
  message?: string;
  timestamp: string;
}

/** More presence changes at once than the server notifies one by one (a deploy, a reconnect storm). */
export interface PresenceSummaryNotification {
  type: "presence-summary";
  online: number;
  offline: number;
  message: string;
  timestamp: string;
}

export interface ConnectionEstablished {
  connectionId: string;
  userId: string | null;
  userName: string | null;
  groups: string[];
  message: string;
  timestamp: string;
}

export interface SubscriptionResult {
  group: string;
  subscribed: boolean;
  timestamp: string;
}

export interface ConnectionCount {
  connectionId: string;
  timestamp: string;
  connectionsOnReplica: number;
  totalConnections: number;
  replicas: number;
}

export interface TestMessageResult {
  timestamp: string;
  message: string;
  echo: string | null;
}

// -- GetAnalyticsHistory(minutes) / GET analytics/history?minutes=N ----------------------------------

/** One stored snapshot: its time and every figure (the fields of GetPlatformStats). */
export type HistoryPoint = { timestamp: string } & Partial<PlatformFigures>;

export interface AnalyticsHistory {
  minutes: number;
  /** The window is [from, timestamp]. */
  from: string;
  timestamp: string;
  /** Width of the buckets the points were downsampled to (each bucket's last snapshot); 0: not downsampled. */
  bucketSeconds: number;
  /** False while the answering replica has not read all the stored history yet. */
  complete: boolean;
  points: HistoryPoint[];
}

// -- GetPresence() / GET presence -------------------------------------------------------------------

export interface PresenceMember {
  userId: string;
  userName: string | null;
  /** The user's connections in this group. */
  connections: number;
  /** Their first connection still open (ISO). */
  since: string;
}

export interface PresenceGroup {
  totalUsers: number;
  totalConnections: number;
  users: PresenceMember[];
}

export interface PresenceAnswer {
  timestamp: string;
  replicas: number;
  totalUsers: number;
  totalConnections: number;
  /** False when some users are counted but not listed (a replica over its cap) or KV was unreadable. */
  complete: boolean;
  groups: Record<string, PresenceGroup>;
}

// -- shared alert state: GetAlertStates, AcknowledgeAlert, SilenceAlert, AlertStateChanged ----------

export type AlertStatus = "active" | "acknowledged" | "silenced";

export interface Actor {
  userId: string | null;
  userName: string | null;
}

/** An alert as the shared state keeps it, with the status the server saw. */
export interface AlertView {
  id: string;
  type: AlertType;
  severity: Severity;
  message: string;
  timestamp: string;
  rule: string | null;
  data: Record<string, unknown> | null;
  /** Held back by the collector because a silence covered it. */
  suppressed: boolean;
  acknowledgedBy: Actor | null;
  acknowledgedAt: string | null;
  resolvedAt: string | null;
  status: AlertStatus;
}

/** A rule name or alert type whose collector alerts are held back until `until`. */
export interface SilenceView {
  target: string;
  until: string;
  silencedBy: Actor;
  silencedAt: string;
}

export interface AlertStates {
  /** Newest first; `omitted` older ones did not fit in the answer. */
  alerts: AlertView[];
  omitted: number;
  silences: SilenceView[];
  maxAlerts: number;
  timestamp: string;
}

export interface AlertStateChanged {
  change: "acknowledged" | "silenced" | "unsilenced" | "suppressed";
  /** For acknowledged and suppressed. */
  alert: AlertView | null;
  /** For silenced and unsilenced. */
  silence: SilenceView | null;
  /** Null when the collector acted. */
  by: Actor | null;
  timestamp: string;
}

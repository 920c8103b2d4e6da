// Payload shapes of the hub's client methods and hub method results (see broker_bridge/hub_events.py
// and gateway/admin_hub.py). Fields are optional where a publisher may leave them out.

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
    };

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

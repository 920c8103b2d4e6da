// The SignalR connection: the official client, the seed's reconnect delays through a retry policy
// that records each attempt (so the page can say "attempt 2 of 4, next try in 10 s"), and a logger
// that never prints below warnings (lower levels can carry URLs with the access token).

import {
  HubConnectionBuilder,
  LogLevel,
  type HubConnection,
  type ILogger,
  type IRetryPolicy,
  type RetryContext,
} from "@microsoft/signalr";

export const HUB_PATH = "/hubs/admin";
/** The seed's `withAutomaticReconnect([0, 2000, 10000, 30000])`. */
export const RETRY_DELAYS_MS: readonly number[] = [0, 2000, 10000, 30000];

export interface RetryInfo {
  /** 1-based number of the attempt about to be made. */
  attempt: number;
  maxAttempts: number;
  delayMs: number;
  /** When the attempt starts (ms since the epoch). */
  nextAttemptAt: number;
  reason: string | null;
}

export type ConnectionStatus =
  | { kind: "connecting" }
  | { kind: "connected"; since: number }
  | ({ kind: "reconnecting" } & RetryInfo)
  | { kind: "disconnected"; reason: string | null };

/** Reconnect after each delay in turn, then give up; `giveUp` ends retrying early (a rejected token
 *  will not become valid by waiting). */
export class RecordingRetryPolicy implements IRetryPolicy {
  last: RetryInfo | null = null;

  constructor(
    private readonly delays: readonly number[],
    private readonly onRetry: (info: RetryInfo) => void,
    private readonly giveUp: (reason: Error) => boolean,
  ) {}

  nextRetryDelayInMilliseconds(context: RetryContext): number | null {
    if (context.previousRetryCount > 0 && this.giveUp(context.retryReason)) return null;
    const delay = this.delays[context.previousRetryCount];
    if (delay === undefined) {
      this.last = null;
      return null;
    }
    const previousAttemptFailed = context.previousRetryCount > 0;
    this.last = {
      attempt: context.previousRetryCount + 1,
      maxAttempts: this.delays.length,
      delayMs: delay,
      nextAttemptAt: Date.now() + delay,
      reason: previousAttemptFailed ? describeError(context.retryReason) : "connection lost",
    };
    this.onRetry(this.last);
    return delay;
  }
}

/** What the page should tell the user when the server refused the token, or null. */
export function authFailure(error: unknown): string | null {
  const text = error instanceof Error ? error.message : String(error);
  if (text.includes("Status code '401'")) {
    return "The server rejected the access token (401): it is invalid, expired or signed with another key. Sign in with a new token.";
  }
  if (text.includes("Status code '403'")) {
    return "This token is valid but lacks the Admin role (403). Sign in with an administrator's token.";
  }
  return null;
}

/** A short, token-free description of a connection error. */
export function describeError(error: unknown): string {
  const text = error instanceof Error ? error.message : error == null ? "" : String(error);
  const scrubbed = text.replace(/access_token=[^&\s'"]+/g, "access_token=***");
  if (/Failed to fetch|NetworkError|ERR_CONNECTION_REFUSED|Failed to complete negotiation/i.test(scrubbed)) {
    return "the gateway is not reachable";
  }
  if (/WebSocket closed with status code: 1006/.test(scrubbed)) return "the connection dropped";
  return scrubbed.length > 200 ? `${scrubbed.slice(0, 200)}…` : scrubbed || "unknown error";
}

/** Connection problems are shown in the page; the console only gets warnings, scrubbed. */
const logger: ILogger = {
  log(level: LogLevel, message: string): void {
    if (level < LogLevel.Warning || level === LogLevel.None) return;
    console.warn(`[hub] ${message.replace(/access_token=[^&\s'"]+/g, "access_token=***")}`);
  },
};

export function buildConnection(token: () => string, policy: IRetryPolicy): HubConnection {
  return new HubConnectionBuilder()
    .withUrl(HUB_PATH, { accessTokenFactory: token })
    .withAutomaticReconnect(policy)
    .configureLogging(logger)
    .build();
}

// Drives the gateway with the official @microsoft/signalr client, built exactly as the API document's
// example does, and prints ONE JSON object on stdout describing what happened.
//
//   node hub_client.mjs <scenario> '<json options>'
//
// Scenarios: full | idle | auth | wait-close. Options (all optional except url):
//   url               hub URL (http://127.0.0.1:<port>/hubs/admin)
//   token             access token returned by accessTokenFactory (null: the factory returns null)
//   tokens            [first, later]: `first` until start() resolves, `later` afterwards (token refresh)
//   protocol          "json" (default) | "msgpack"
//   skipNegotiation   true: WebSockets transport with skipNegotiation
//   transport         "WebSockets" | "ServerSentEvents" | "LongPolling": only this HttpTransportType
//   keepAliveMs       .withKeepAliveInterval(ms)
//   serverTimeoutMs   .withServerTimeout(ms)
//   idleMs            idle: how long to stay idle
//   until             wait-close: "reconnected" | "reconnecting" | "close"
//   waitMs            wait-close: how long to wait for `until`
//   timeoutMs         hard limit for the whole script (default 25000)
// Errors never escape: they are reported as strings in the result.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const scenario = process.argv[2];
const options = JSON.parse(process.argv[3] ?? "{}");
const hardLimitMs = options.timeoutMs ?? 25000;

const result = { scenario, logs: [], established: [], errors: [], reconnecting: [], reconnected: [], closed: [] };

function errorText(error) {
  if (error === undefined || error === null) return null;
  return error instanceof Error ? error.message : String(error);
}

function finish(code = 0) {
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}

const hardLimit = setTimeout(() => {
  result.fatal = `script timed out after ${hardLimitMs} ms`;
  finish(0);
}, hardLimitMs);
hardLimit.unref();

function transportType(name) {
  const value = signalR.HttpTransportType[name];
  if (typeof value !== "number") throw new Error(`unknown transport ${name}`);
  return value;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(predicate, ms) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

// Collects warnings and errors of the client instead of printing them (stdout carries the result).
const logger = {
  log(level, message) {
    if (level >= signalR.LogLevel.Warning && result.logs.length < 50) result.logs.push(String(message));
  },
};

function build() {
  let started = false;
  const tokens = options.tokens ?? [options.token ?? null];
  result.tokenRequests = 0;
  const httpOptions = {
    accessTokenFactory: () => {
      result.tokenRequests += 1;
      return started ? tokens[tokens.length - 1] : tokens[0];
    },
  };
  if (options.transport) httpOptions.transport = transportType(options.transport);
  if (options.skipNegotiation) {
    httpOptions.skipNegotiation = true;
    httpOptions.transport = signalR.HttpTransportType.WebSockets;
  }
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(options.url, httpOptions)
    .withAutomaticReconnect([0, 2000, 10000, 30000])
    .configureLogging(logger);
  if (options.protocol === "msgpack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (options.keepAliveMs) builder = builder.withKeepAliveInterval(options.keepAliveMs);
  if (options.serverTimeoutMs) builder = builder.withServerTimeout(options.serverTimeoutMs);
  const connection = builder.build();

  connection.on("ConnectionEstablished", (message) => {
    result.established.push(message);
  });
  // As the API document's "Error Handling" section has dashboards do.
  connection.on("ErrorOccurred", (error) => {
    result.errors.push(error);
  });
  // The pushes a dashboard listens to (joining analytics brings the latest figures at once): counted.
  result.pushes = {};
  for (const name of ["AnalyticsUpdate", "UserCountUpdate", "SystemAlert", "UserActivityUpdate", "AdminNotification"]) {
    connection.on(name, () => {
      result.pushes[name] = (result.pushes[name] ?? 0) + 1;
    });
  }
  connection.onreconnecting((error) => result.reconnecting.push({ error: errorText(error), at: Date.now() }));
  connection.onreconnected((connectionId) => result.reconnected.push({ connectionId: connectionId ?? null }));
  connection.onclose((error) => result.closed.push({ error: errorText(error) }));
  return {
    connection,
    markStarted() {
      started = true;
    },
  };
}

async function call(connection, method, ...args) {
  try {
    return { ok: true, value: (await connection.invoke(method, ...args)) ?? null };
  } catch (error) {
    return { ok: false, error: errorText(error) };
  }
}

async function start(handle) {
  try {
    await handle.connection.start();
  } catch (error) {
    result.startError = errorText(error);
    return false;
  }
  handle.markStarted();
  result.connectionId = handle.connection.connectionId ?? null;
  result.stateAfterStart = handle.connection.state;
  // The transport in use (not exposed by the client; its class name says which).
  result.transport = handle.connection.connection?.transport?.constructor?.name ?? null;
  result.establishedInTime = await waitFor(() => result.established.length > 0, 5000);
  return true;
}

async function stop(handle) {
  try {
    await handle.connection.stop();
    result.stopError = null;
  } catch (error) {
    result.stopError = errorText(error);
  }
  result.stateAfterStop = handle.connection.state;
}

const scenarios = {
  async full() {
    const handle = build();
    if (!(await start(handle))) return;
    const c = handle.connection;
    const calls = {};
    for (const method of [
      "SubscribeToUserActivity",
      "SubscribeToAnalytics",
      "SubscribeToAlerts",
      "SubscribeToAnalytics", // twice is harmless
      "UnsubscribeFromUserActivity",
      "UnsubscribeFromAnalytics",
      "UnsubscribeFromAlerts",
      "UnsubscribeFromAlerts", // when not subscribed: still succeeds
      "GetPlatformStats",
      "GetConnectionCount",
    ]) {
      (calls[method] ??= []).push(await call(c, method));
    }
    calls.SendTestMessage = [await call(c, "SendTestMessage", "Test payload")];
    calls.sendtestmessage = [await call(c, "sendtestmessage", "lower case")];
    calls.unknown = [await call(c, "NoSuchMethod")];
    calls.noArguments = [await call(c, "SendTestMessage")];
    calls.twoArguments = [await call(c, "SendTestMessage", "a", "b")];
    calls.wrongType = [await call(c, "SendTestMessage", 42)];
    calls.afterErrors = [await call(c, "GetConnectionCount")];
    result.calls = calls;
    result.stateBeforeStop = c.state;
    await stop(handle);
    await waitFor(() => result.closed.length > 0, 5000);
  },

  async idle() {
    const handle = build();
    if (!(await start(handle))) return;
    const c = handle.connection;
    const startedAt = Date.now();
    await sleep(options.idleMs ?? 4000);
    result.idledMs = Date.now() - startedAt;
    result.stateAfterIdle = c.state;
    result.afterIdle = await call(c, "SendTestMessage", "after idle");
    await stop(handle);
  },

  async auth() {
    const handle = build();
    if (await start(handle)) {
      result.started = true;
      await stop(handle);
    } else {
      result.started = false;
      result.stateAfterFailure = handle.connection.state;
    }
  },

  async "wait-close"() {
    const handle = build();
    if (!(await start(handle))) return;
    const c = handle.connection;
    const until = options.until ?? "close";
    const done = {
      reconnected: () => result.reconnected.length > 0,
      reconnecting: () => result.reconnecting.length > 0,
      close: () => result.closed.length > 0,
    }[until];
    const startedAt = Date.now();
    result.reached = await waitFor(done, options.waitMs ?? 10000);
    result.waitedMs = Date.now() - startedAt;
    result.stateAfterWait = c.state;
    result.connectionIdAfterWait = c.connectionId ?? null;
    if (c.state === signalR.HubConnectionState.Connected) {
      await waitFor(() => result.established.length > 1 || until !== "reconnected", 5000);
      result.afterWait = await call(c, "GetConnectionCount");
      await stop(handle);
    }
  },
};

const run = scenarios[scenario];
if (run === undefined) {
  result.fatal = `unknown scenario ${scenario}`;
  finish(2);
} else {
  run()
    .catch((error) => {
      result.fatal = errorText(error);
    })
    .finally(() => finish(0));
}

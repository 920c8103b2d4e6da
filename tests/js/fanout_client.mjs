// A long-running official @microsoft/signalr client driven over stdin/stdout with JSON lines.
//
//   node fanout_client.mjs <hub url> <access token> ['<json options>']
//
// Options: {"events": ["ExtraMethod", ...]} registers handlers for more client methods;
//          {"statefulReconnect": true} builds the connection with withStatefulReconnect().
//          {"transport": "WebSockets" | "ServerSentEvents" | "LongPolling"} allows only that HttpTransportType.
//
// stdout, one JSON object per line:
//   {"state": "connected", "connectionId": ..., "transport": ...}   start() resolved (transport: its name)
//   {"state": "startError", "error": "..."}              start() failed (the script then exits)
//   {"state": "reconnecting", "error": ...} / {"state": "reconnected", "connectionId": ...}
//   {"state": "close", "error": ...}
//   {"event": "<client method>", "args": [...all arguments]}
//   {"log": <level>, "message": "..."}                  client warnings and errors
//   {"id": <n>, "result": ...} / {"id": <n>, "error": "..."}   answers to commands
//     (an invoke's answer also has "sentAt": when the invocation was sent)
// Every line has "at": milliseconds on the script's monotonic clock (performance.now()).
// stdin, one JSON object per line:
//   {"id": n, "cmd": "invoke", "method": "...", "args": [...]}
//   {"id": n, "cmd": "state"}   -> {"id": n, "result": "Connected" | ...}
//   {"id": n, "cmd": "stop"}    -> stops the connection, answers, exits
// Closing stdin also stops the connection and exits.

import * as signalR from "@microsoft/signalr";
import { createInterface } from "node:readline";

const [url, token, rawOptions] = process.argv.slice(2);
const options = JSON.parse(rawOptions ?? "{}");

const CLIENT_METHODS = [
  "ConnectionEstablished",
  "AnalyticsUpdate",
  "UserCountUpdate",
  "GenerationMetricsUpdate",
  "RevenueUpdate",
  "SystemAlert",
  "UserActivityUpdate",
  "AdminNotification",
  "ErrorOccurred",
  "ReceiveMessage",
  ...(options.events ?? []),
];

function emit(value) {
  process.stdout.write(JSON.stringify({ ...value, at: performance.now() }) + "\n");
}

function errorText(error) {
  if (error === undefined || error === null) return null;
  return error instanceof Error ? error.message : String(error);
}

const logger = {
  log(level, message) {
    if (level >= signalR.LogLevel.Warning) emit({ log: level, message: String(message) });
  },
};

const httpOptions = { accessTokenFactory: () => token };
if (options.transport) {
  const value = signalR.HttpTransportType[options.transport];
  if (typeof value !== "number") throw new Error(`unknown transport ${options.transport}`);
  httpOptions.transport = value;
}

let builder = new signalR.HubConnectionBuilder()
  .withUrl(url, httpOptions)
  .withAutomaticReconnect([0, 2000, 10000, 30000])
  .configureLogging(logger);
if (options.statefulReconnect) builder = builder.withStatefulReconnect();
const connection = builder.build();

for (const name of CLIENT_METHODS) {
  connection.on(name, (...args) => {
    emit({ event: name, args });
  });
}
connection.onreconnecting((error) => {
  emit({ state: "reconnecting", error: errorText(error) });
});
connection.onreconnected((connectionId) => {
  emit({ state: "reconnected", connectionId: connectionId ?? null });
});
connection.onclose((error) => {
  emit({ state: "close", error: errorText(error) });
});

let exiting = false;

async function shutdown(code) {
  if (exiting) return;
  exiting = true;
  try {
    await connection.stop();
  } catch {
    // stopping a failed connection: nothing left to do
  }
  process.stdout.write("", () => process.exit(code));
}

async function handle(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    emit({ id: null, error: `not JSON: ${line}` });
    return;
  }
  const id = command.id ?? null;
  switch (command.cmd) {
    case "invoke": {
      const sentAt = performance.now();
      try {
        const result = await connection.invoke(command.method, ...(command.args ?? []));
        emit({ id, result: result ?? null, sentAt });
      } catch (error) {
        emit({ id, error: errorText(error), sentAt });
      }
      return;
    }
    case "state":
      emit({ id, result: connection.state });
      return;
    case "stop":
      emit({ id, result: "stopping" });
      await shutdown(0);
      return;
    default:
      emit({ id, error: `unknown command ${command.cmd}` });
  }
}

try {
  await connection.start();
} catch (error) {
  emit({ state: "startError", error: errorText(error) });
  process.exit(1);
}
// The transport in use (the client does not expose it; its class name says which).
const transportName = connection.connection?.transport?.constructor?.name ?? null;
emit({ state: "connected", connectionId: connection.connectionId ?? null, transport: transportName });

const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (line.trim()) handle(line);
});
input.on("close", () => {
  shutdown(0);
});

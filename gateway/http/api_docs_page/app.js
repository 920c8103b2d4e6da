// Renders /asyncapi.json and /openapi.json as tables. No framework, no CDN, no HTML parsing: every text
// goes in through textContent. The token is one from the address (`#token=...`, as `make run` prints it;
// removed from the address bar at once), the dashboard's (sessionStorage of this tab) or one pasted into
// the form; the first and the last are kept in this page's memory only.
const DASHBOARD_TOKEN_KEY = "realtime-admin.token";
const main = document.getElementById("contracts");
const toc = document.getElementById("toc");
const form = document.getElementById("token-form");
let pastedToken = takeTokenFromFragment();

function takeTokenFromFragment() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get("token");
  if (token === null) return null;
  params.delete("token");
  const rest = params.toString();
  window.history.replaceState(window.history.state, "", window.location.pathname + window.location.search + (rest ? `#${rest}` : ""));
  return token.trim() || null;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function storedToken() {
  try {
    return window.sessionStorage.getItem(DASHBOARD_TOKEN_KEY);
  } catch {
    return null;
  }
}

async function fetchDocument(path) {
  const token = pastedToken || storedToken();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { headers, credentials: "omit" });
  if (response.status === 401 || response.status === 403) throw Object.assign(new Error("token"), { status: response.status });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// A JSON pointer "#/a/b" inside one document.
function resolve(root, schema) {
  let current = schema;
  for (let depth = 0; current && current.$ref && depth < 20; depth += 1) {
    current = current.$ref.replace(/^#\//, "").split("/").reduce((node, key) => node?.[key.replace(/~1/g, "/").replace(/~0/g, "~")], root);
  }
  return current || {};
}

function typeOf(root, schema) {
  const s = resolve(root, schema);
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.anyOf) return s.anyOf.map((option) => typeOf(root, option)).join(" or ");
  if (s.type === "array") return Array.isArray(s.items) ? `[${s.items.map((i) => typeOf(root, i)).join(", ")}]` : `array of ${typeOf(root, s.items || {})}`;
  if (Array.isArray(s.type)) return s.type.join(" or ");
  const extra = [s.format, s.pattern && !s.format && `pattern ${s.pattern}`, s.minimum !== undefined && `≥ ${s.minimum}`, s.maximum !== undefined && `≤ ${s.maximum}`, s.maxLength !== undefined && `≤ ${s.maxLength} chars`].filter(Boolean);
  return (s.type || "any") + (extra.length ? ` (${extra.join(", ")})` : "");
}

// Rows of [name, type, required, description] for an object schema, nested objects flattened as a.b.
function fieldRows(root, schema, prefix = "", rows = []) {
  const s = resolve(root, schema);
  if (s.anyOf && s.anyOf.some((option) => resolve(root, option).properties)) {
    s.anyOf.forEach((option) => {
      const variant = resolve(root, option);
      if (variant.properties) {
        rows.push([`${prefix || "one of"}: ${variant.title || ""}`, "object", "", variant.description || ""]);
        fieldRows(root, variant, prefix, rows);
      }
    });
    return rows;
  }
  const required = new Set(s.required || []);
  for (const [name, child] of Object.entries(s.properties || {})) {
    const resolved = resolve(root, child);
    rows.push([prefix + name, typeOf(root, child), required.has(name) ? "yes" : "", resolved.description || ""]);
    if (resolved.properties) fieldRows(root, resolved, `${prefix}${name}.`, rows);
  }
  return rows;
}

function fieldTable(root, schema) {
  const rows = fieldRows(root, schema);
  if (!rows.length) {
    const s = resolve(root, schema);
    return el("p", { class: s["x-contract-declared"] === false ? "undeclared" : "muted" }, s.description || typeOf(root, s));
  }
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "required"), el("th", {}, "description"))),
    el("tbody", {}, ...rows.map((cells) => el("tr", {}, ...cells.map((cell, i) => el("td", i < 2 ? { class: "mono" } : {}, cell))))),
  );
}

function section(id, title, ...children) {
  toc.append(el("a", { href: `#${id}` }, title));
  return el("section", { id }, el("h2", {}, title), ...children);
}

function renderOpenApi(doc) {
  const parts = [];
  for (const [path, operations] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const auth = op.security && op.security.length ? "token with a required role" : "public";
      parts.push(el("h3", { id: op.operationId }, el("span", { class: "method" }, method.toUpperCase()), " ", path));
      parts.push(el("p", { class: op["x-contract-declared"] === false ? "undeclared" : "" }, `${op.summary} — ${auth}.`));
      const query = (op.parameters || []).filter((parameter) => parameter.in === "query");
      if (query.length) {
        const properties = Object.fromEntries(query.map((parameter) => [parameter.name, parameter.schema]));
        const required = query.filter((parameter) => parameter.required).map((parameter) => parameter.name);
        parts.push(el("p", {}, "Query:"), fieldTable(doc, { type: "object", properties, required }));
      }
      const body = op.requestBody?.content?.["application/json"]?.schema;
      if (body) parts.push(el("p", {}, "Body:"), fieldTable(doc, body));
      const ok = op.responses["200"];
      const [type, content] = Object.entries(ok?.content || {})[0] || [];
      if (content) parts.push(el("p", {}, `200 (${type}):`), fieldTable(doc, content.schema));
      const others = Object.entries(op.responses).filter(([code]) => code !== "200");
      if (others.length) parts.push(el("p", { class: "muted" }, others.map(([code, r]) => `${code}: ${r.description}`).join(" · ")));
    }
  }
  return section("rest", `REST API (OpenAPI ${doc.openapi}, ${doc.info.version})`, el("p", {}, doc.info.description), ...parts);
}

function renderAsyncApi(doc) {
  const messageOf = (ref) => resolve(doc, ref);
  const events = [];
  const methods = [];
  for (const [name, op] of Object.entries(doc.operations)) {
    const channel = resolve(doc, op.channel);
    if (channel.address !== doc.servers.gateway.pathname) continue;
    const message = messageOf(op.messages[0]);
    if (op.action === "send") {
      const argument = message.payload.properties.arguments.items[0];
      events.push(el("h3", { id: name }, message.name), el("p", {}, message.summary), fieldTable(doc, argument));
    } else {
      const args = message.payload.properties.arguments.items || [];
      const completion = messageOf(op.reply.messages[0]);
      methods.push(el("h3", { id: name }, message.title), el("p", {}, message.summary));
      if (args.length) methods.push(el("p", {}, "Arguments: " + args.map((a) => `${a.title}: ${typeOf(doc, a)}`).join(", ")));
      methods.push(el("p", {}, "Result:"), fieldTable(doc, completion.payload.properties.result));
    }
  }
  const subjects = [];
  for (const [name, channel] of Object.entries(doc.channels)) {
    if (channel.address === doc.servers.gateway.pathname) continue;
    subjects.push(el("h3", { id: `channel-${name}` }, channel.address), el("p", {}, channel.title || ""));
    for (const [parameter, spec] of Object.entries(channel.parameters || {})) {
      subjects.push(el("p", { class: "muted" }, `{${parameter}}: ${spec.enum ? spec.enum.join(", ") : spec.description || ""}`));
    }
    for (const ref of Object.values(channel.messages || {})) {
      const message = messageOf(ref);
      subjects.push(el("p", {}, `${message.title}: ${message.summary}`));
      const payload = resolve(doc, message.payload);
      const argument = payload.properties?.arguments?.items?.[0];
      subjects.push(fieldTable(doc, argument && payload.properties.target?.const ? argument : payload));
    }
  }
  return [
    section("events", "Hub: client events (server → client)", el("p", {}, doc.info.description), ...events),
    section("methods", "Hub: methods (client → server)", ...methods),
    section("subjects", "NATS subjects (internal services publish)", ...subjects),
  ];
}

async function load() {
  try {
    const [asyncapi, openapi] = await Promise.all([fetchDocument("/asyncapi.json"), fetchDocument("/openapi.json")]);
    form.hidden = true;
    toc.replaceChildren();
    main.replaceChildren(...renderAsyncApi(asyncapi), renderOpenApi(openapi));
  } catch (error) {
    if (error.status) {
      form.hidden = false;
      document.getElementById("token-error").textContent = pastedToken ? `HTTP ${error.status}: that token is not accepted.` : "";
      main.replaceChildren(el("p", {}, "Sign in: paste an access token with the Admin role, or open this page from the dashboard's tab."));
    } else {
      main.replaceChildren(el("p", { class: "undeclared" }, `Could not load the documents: ${error.message}`));
    }
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  pastedToken = document.getElementById("token").value.trim() || null;
  load();
});
load();

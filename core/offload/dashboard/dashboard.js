// The offload dashboard: polls GET /servers (same origin) and renders it with plain DOM.
// Server names, URLs and errors come from config and from edges: they are only ever set as
// textContent or attribute values, never parsed as HTML.
"use strict";

const POLL_MS = 1000;
const TIMEOUT_MS = 3000;
const SHOWN_DECISIONS = 50;

const poolsEl = document.getElementById("pools");
const statusEl = document.getElementById("status");
const sections = new Map(); // pool name -> its rendered parts, kept so scroll positions survive a poll

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function num(value, digits = 1) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function serverState(server) {
  if (!server.available) return "down";
  if (server.circuit === "half_open") return "trial";
  return "up";
}

function headerRow(columns) {
  const row = el("tr");
  for (const [label, numeric] of columns) row.append(el("th", label, numeric ? "num" : ""));
  return row;
}

function table(columns, className) {
  const node = el("table", null, className);
  const head = el("thead");
  head.append(headerRow(columns));
  const body = el("tbody");
  node.append(head, body);
  return [node, body];
}

const SERVER_COLUMNS = [
  ["state"], ["server"], ["url"], ["score ms", true], ["latency ms", true], ["last ms", true],
  ["in flight", true], ["requests", true], ["failures", true], ["circuit"], ["excluded because / last error"],
];
const DECISION_COLUMNS = [
  ["time"], ["server"], ["why"], ["outcome"], ["status", true], ["attempts", true], ["ms", true],
];

function newSection(name) {
  const section = el("section", null, "pool");
  section.dataset.pool = name;
  const head = el("div", null, "pool-head");
  const title = el("h2", name);
  const policy = el("span", "", "badge");
  const windowBox = el("div", null, "window");
  const meter = el("meter");
  meter.min = 0;
  const windowText = el("span");
  windowBox.append(el("span", "local window"), meter, windowText);
  const counters = el("span", "", "counters");
  head.append(title, policy, windowBox, counters);
  const [servers, serversBody] = table(SERVER_COLUMNS, "servers");
  const decisions = el("div", null, "decisions");
  const [decisionTable, decisionsBody] = table(DECISION_COLUMNS, "decision-table");
  decisions.append(el("h3", "recent decisions (newest first)"), decisionTable);
  section.append(head, servers, decisions);
  return { section, policy, windowBox, meter, windowText, counters, serversBody, decisionsBody };
}

function serverRow(server) {
  const row = el("tr");
  const state = serverState(server);
  row.dataset.server = server.name;
  row.dataset.state = state;
  const nameCell = el("td", server.name);
  if (server.local) nameCell.append(el("span", "(device)", "local-tag"));
  row.append(
    el("td", state, "state"),
    nameCell,
    el("td", server.url),
    el("td", num(server.score_ms, 2), "num"),
    el("td", num(server.latency_ewma_ms, 2), "num"),
    el("td", num(server.last_latency_ms, 2), "num"),
    el("td", server.inflight, "num"),
    el("td", server.requests, "num"),
    el("td", server.failures, "num"),
    el("td", server.circuit),
    el("td", server.excluded_because || (server.available ? "" : "unavailable") || server.last_error || "", "why"),
  );
  return row;
}

function decisionRow(decision) {
  const row = el("tr", null, decision.outcome === "failed" ? "failed" : "");
  const at = new Date(decision.at * 1000);
  const time = at.toLocaleTimeString([], { hour12: false }) + "." + String(at.getMilliseconds()).padStart(3, "0");
  const server = el("td", decision.server);
  if (decision.local) server.append(el("span", "(device)", "local-tag"));
  row.append(
    el("td", time),
    server,
    el("td", decision.why, "why"),
    el("td", decision.outcome),
    el("td", decision.status_code, "num"),
    el("td", decision.attempts, "num"),
    el("td", num(decision.time_ms, 1), "num"),
  );
  return row;
}

function renderPool(parts, pool) {
  parts.policy.textContent = "policy " + pool.policy;
  const limit = pool.expected_throughput;
  parts.windowBox.hidden = !pool.consider_throughput;
  parts.meter.max = Math.max(limit, 1);
  parts.meter.low = limit * 0.8;
  parts.meter.high = limit;
  parts.meter.optimum = 0;
  parts.meter.value = Math.min(pool.throughput, parts.meter.max);
  const over = pool.throughput > limit;
  parts.windowText.textContent = `${pool.throughput} / ${limit} in ${pool.window_s} s` + (over ? " · over the limit: edges take the rest" : "");
  parts.windowText.classList.toggle("over", over);
  const counters = Object.entries(pool.counters || {}).filter(([, value]) => value > 0);
  const texts = counters.map(([key, value]) => `${key.replaceAll("_", " ")}: ${value}`);
  if (pool.cache) {
    // How many answers the read cache gave, and how many identical requests in flight shared one.
    texts.push(`cache: ${pool.cache.hit} hits, ${pool.cache.coalesced} coalesced, ${pool.cache.miss} misses`);
  }
  parts.counters.textContent = texts.join(" · ");
  parts.serversBody.replaceChildren(...pool.servers.map(serverRow));
  const decisions = (pool.recent_decisions || []).slice(0, SHOWN_DECISIONS);
  parts.decisionsBody.replaceChildren(...decisions.map(decisionRow));
}

function render(data) {
  const names = Object.keys(data.pools);
  for (const [name, parts] of sections) {
    if (!(name in data.pools)) {
      parts.section.remove();
      sections.delete(name);
    }
  }
  for (const name of names) {
    let parts = sections.get(name);
    if (!parts) {
      parts = newSection(name);
      sections.set(name, parts);
    }
    renderPool(parts, data.pools[name]);
    poolsEl.append(parts.section); // appending an existing node moves it: pools stay in the gateway's order
  }
  poolsEl.classList.remove("stale");
  const state = data.state || {};
  const degraded = state.degraded_reason ? ` · shared state degraded: ${state.degraded_reason}` : "";
  statusEl.textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })} · state: ${state.backend}${degraded}`;
  statusEl.classList.toggle("error", Boolean(state.degraded_reason));
}

function showError(message) {
  poolsEl.classList.add("stale");
  statusEl.textContent = message;
  statusEl.classList.add("error");
}

async function poll() {
  try {
    const response = await fetch("/servers", {
      cache: "no-store",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    if (!response.ok) {
      showError(`/servers answered ${response.status}; retrying`);
    } else {
      render(await response.json());
    }
  } catch (error) {
    showError(`gateway unreachable (${error.name}); retrying`);
  } finally {
    setTimeout(poll, POLL_MS); // after the answer, never overlapping a slow one
  }
}

poll();

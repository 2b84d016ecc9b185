// The refstream dashboard: plain browser JavaScript, no build step. Talks only to the public
// API: /v1/auth (login, refresh), /v1/analytics (tiles, chart, top agents), /v1/agents and
// /v1/programs (filters), /v1/live (Server-Sent Events via a one-time ticket), /v1/exceptions/counts
// (the open exceptions, for owners and managers; hidden for the other roles), /v1/conversions
// (recent orders, and why an order was credited or not when one is clicked).
"use strict";

const $ = (sel) => document.querySelector(sel);
const PERIODS = { "24h": [24 * 3600e3, "hour"], "7d": [7 * 86400e3, "day"], "30d": [30 * 86400e3, "day"] };
const KPIS = ["clicks", "conversions", "conversion_rate", "revenue", "commission", "epc"];

const session = {
  get access() { return sessionStorage.getItem("rs.access"); },
  get refresh() { return sessionStorage.getItem("rs.refresh"); },
  save(tokens) {
    sessionStorage.setItem("rs.access", tokens.access_token);
    sessionStorage.setItem("rs.refresh", tokens.refresh_token);
  },
  clear() { sessionStorage.removeItem("rs.access"); sessionStorage.removeItem("rs.refresh"); },
};

let currency = "USD";
let live = null;          // the EventSource
let reconnectTimer = null;
const seen = new Set();   // conversion ids already in the feed (delivery is at-least-once)
const liveTotals = { count: 0, revenue: {} };

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}, retried = false) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (session.access) headers.Authorization = `Bearer ${session.access}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && !retried && session.refresh) {
    if (await refreshTokens()) return api(path, options, true);
    logout();
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

async function refreshTokens() {
  const response = await fetch("/v1/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: session.refresh }),
  });
  if (!response.ok) return false;
  session.save(await response.json());
  return true;
}

// --- money: decimal strings from the API; sums in exact integer arithmetic ------------------

function decAdd(a, b) {
  const [ai, af = ""] = a.split("."), [bi, bf = ""] = b.split(".");
  const scale = Math.max(af.length, bf.length);
  const sum = BigInt(ai + af.padEnd(scale, "0")) + BigInt(bi + bf.padEnd(scale, "0"));
  const digits = (sum < 0n ? -sum : sum).toString().padStart(scale + 1, "0");
  const text = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return sum < 0n ? `-${text}` : text;
}

function formatMoney(value, code = currency) {
  if (value === null || value === undefined) return "–";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: code }).format(Number(value));
  } catch (_) {
    return `${value} ${code}`;
  }
}

// --- filters -------------------------------------------------------------------------------

function filterQuery(extra = {}) {
  const [span] = PERIODS[$("#period").value];
  const params = new URLSearchParams({ from: new Date(Date.now() - span).toISOString(), ...extra });
  if ($("#agent").value) params.set("agent_id", $("#agent").value);
  if ($("#program").value) params.set("program_id", $("#program").value);
  return params.toString();
}

async function loadOptions(path, select) {
  try {
    const page = await api(`${path}?limit=200`);
    for (const item of page.items) select.append(new Option(item.name, item.id));
  } catch (err) {
    select.disabled = true;
    select.title = `Could not load: ${err.message}`;
  }
}

// --- analytics: tiles, chart, top agents -----------------------------------------------------

function setTile(kpi, text) {
  const tile = document.querySelector(`.tile[data-kpi="${kpi}"]`);
  const value = tile.querySelector(".value");
  if (value.textContent !== text) {
    value.textContent = text;
    tile.classList.add("flash");
    setTimeout(() => tile.classList.remove("flash"), 700);
  }
}

function renderSummary(s) {
  currency = s.currency || currency;
  setTile("clicks", String(s.clicks));
  setTile("conversions", String(s.conversions));
  setTile("conversion_rate", s.conversion_rate === null ? "–" : `${(Number(s.conversion_rate) * 100).toFixed(1)} %`);
  setTile("revenue", formatMoney(s.revenue));
  setTile("commission", formatMoney(s.commission));
  setTile("epc", s.epc === null ? "–" : formatMoney(s.epc));
  $("#tz").textContent = s.timezone ? `Times in ${s.timezone}, amounts in ${s.currency}` : "";
}

function renderTopAgents(top) {
  const body = $("#top-agents tbody");
  body.replaceChildren(...top.items.map((item) => {
    const row = document.createElement("tr");
    for (const [text, cls] of [[item.label || item.key, ""], [String(item.conversions), "num"],
                               [formatMoney(item.revenue), "num"], [formatMoney(item.commission), "num"]]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.append(cell);
    }
    return row;
  }));
  if (!top.items.length) body.innerHTML = '<tr><td colspan="4" class="muted">No agent activity in this period</td></tr>';
}

function analyticsUnavailable(err) {
  const banner = $("#analytics-error");
  banner.hidden = false;
  banner.textContent = err.status === 404
    ? "The analytics API (/v1/analytics) is not available on this server: tiles, chart and top agents are empty. The live feed below still works."
    : `Analytics could not be loaded (${err.status || "network"}: ${err.message}). Retrying on the next update.`;
  for (const kpi of KPIS) setTile(kpi, "–");
}

async function refreshAnalytics() {
  const [, bucket] = PERIODS[$("#period").value];
  $("#bucket").textContent = `per ${bucket}`;
  let failure = null;
  const fail = (err) => { failure = failure || err; };
  // Each part is drawn as soon as it arrives: the tiles do not wait for the chart.
  refreshRecentOrders();
  await Promise.all([
    api(`/v1/analytics/summary?${filterQuery()}`).then(renderSummary, fail),
    api(`/v1/analytics/timeseries?${filterQuery({ bucket })}`)
      .then((series) => window.drawChart($("#chart"), series, (v) => formatMoney(v)), fail),
    api(`/v1/analytics/top-agents?${filterQuery({ metric: "revenue", limit: "10" })}`)
      .then(renderTopAgents, fail),
  ]);
  if (failure) analyticsUnavailable(failure);
  else $("#analytics-error").hidden = true;
  refreshExceptions();
}

async function refreshExceptions() {
  const pill = $("#exceptions");
  try {
    const counts = await api("/v1/exceptions/counts");
    pill.textContent = `${counts.open} open exception${counts.open === 1 ? "" : "s"}`;
    pill.hidden = false;
  } catch (_) {
    pill.hidden = true; // 403 for operators, observers and agents: the inbox is management's
  }
}

// --- recent orders and their explanations ---------------------------------------------------

const RULES = { coupon: "coupon", last_click: "last click", first_click: "first click",
                customer_binding: "customer binding", unattributed: "not credited" };
const KINDS = { click: "Click", coupon: "Coupon", binding: "Customer binding" };

function agentName(id) {
  if (!id) return "";
  const option = [...$("#agent").options].find((o) => o.value === id);
  return option ? option.textContent : id;
}

function cell(text, cls = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function renderRecentOrders(page) {
  const body = $("#recent-orders tbody");
  body.replaceChildren(...page.items.map((d) => {
    const row = document.createElement("tr");
    row.dataset.orderId = d.order_id;
    row.dataset.order = d.order_name || d.order_id;
    row.tabIndex = 0;
    row.append(
      cell(new Date(d.occurred_at).toLocaleString([], { hour12: false })),
      cell(d.order_name || d.order_id),
      cell(d.agent_id ? agentName(d.agent_id) : "–"),
      cell(RULES[d.rule] || d.rule, d.status === "unattributed" ? "unattributed" : "rule"),
      cell(formatMoney(d.revenue, d.currency), "num"));
    return row;
  }));
  if (!page.items.length) body.innerHTML = '<tr><td colspan="5" class="muted">No decided orders in this period</td></tr>';
}

async function refreshRecentOrders() {
  const params = new URLSearchParams(filterQuery({ limit: "10" }));
  try {
    renderRecentOrders(await api(`/v1/conversions?${params}`));
  } catch (err) {
    $("#recent-orders tbody").innerHTML = "";
    const row = document.createElement("tr");
    const td = cell(`Orders could not be loaded (${err.status || "network"}: ${err.message})`, "muted");
    td.colSpan = 5;
    row.append(td);
    $("#recent-orders tbody").append(row);
  }
}

// The stored words name agents by id: show the names this page knows instead.
function withNames(text) {
  return text.replace(/agent (\S+?)(?=[\s,)]|$)/g, (all, id) => {
    const name = agentName(id);
    return name && name !== id ? `agent ${name}` : all;
  });
}

function referralText(r) {
  if (r.kind === "click") return `click ${r.ref}${r.link_code ? ` via link ${r.link_code}` : ""}`;
  if (r.kind === "coupon") return `coupon ${r.ref}`;
  return `customer binding (customer ${r.ref})`;
}

function renderExplanation(d) {
  const dialog = $("#explain");
  dialog.dataset.order = d.order_name || d.order_id;
  dialog.dataset.status = d.status;
  $("#explain-order").textContent = `order ${d.order_name || d.order_id}`;
  const status = $("#explain-status");
  status.className = `explain-status ${d.status}`;
  status.textContent = d.status === "attributed"
    ? `Credited to ${agentName(d.agent_id)} by ${RULES[d.rule] || d.rule}`
    : "Not credited to any agent";
  $("#explain-winner").textContent = d.winner ? `Winning referral: ${referralText(d.winner)}` : "";
  $("#explain-text").textContent = d.explained
    ? withNames(d.explanation)
    : "Decided before explanations were stored: only the rule and the winner are known.";
  const body = $("#explain-rejected tbody");
  body.replaceChildren(...d.rejected.map((r) => {
    const row = document.createElement("tr");
    row.dataset.code = r.code;
    const what = r.redacted ? `${KINDS[r.kind] || r.kind} of another agent` : `${KINDS[r.kind] || r.kind} ${r.ref}`;
    const why = cell(withNames(r.reason));
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = ` (${r.code})`;
    why.append(code);
    row.append(cell(what), cell(r.redacted ? "–" : (r.agent_id ? agentName(r.agent_id) : "no agent")), why);
    return row;
  }));
  if (!d.rejected.length) {
    body.innerHTML = `<tr><td colspan="3" class="muted">${d.explained ? "None: no other referral was considered." : "Not recorded."}</td></tr>`;
  }
}

// `orderId` when known (the recent orders, live events of this version); else the order's name
// as the live feed shows it, looked up through the list's `order` filter.
async function explainOrder(orderId, orderName) {
  const dialog = $("#explain");
  $("#explain-error").textContent = "";
  try {
    let decision;
    if (orderId) {
      decision = await api(`/v1/conversions/${encodeURIComponent(orderId)}`);
    } else {
      const page = await api(`/v1/conversions?${new URLSearchParams({ order: orderName, limit: "1" })}`);
      decision = page.items[0];
      if (!decision) throw new ApiError(404, "not found");
    }
    renderExplanation(decision);
  } catch (err) {
    delete dialog.dataset.order;
    $("#explain-order").textContent = `order ${orderName || orderId}`;
    for (const id of ["#explain-status", "#explain-winner", "#explain-text"]) $(id).textContent = "";
    $("#explain-rejected tbody").replaceChildren();
    $("#explain-error").textContent = err.status === 404
      ? "This order is not in your reach, or has not been decided yet."
      : `The explanation could not be loaded (${err.status || "network"}: ${err.message}).`;
  }
  if (!dialog.open) dialog.showModal();
}

function onOrderClick(event) {
  const target = event.target.closest("[data-order]");
  if (target && (event.type === "click" || event.key === "Enter")) {
    explainOrder(target.dataset.orderId, target.dataset.order);
  }
}

// One refresh at a time; events arriving meanwhile cause exactly one more afterwards, so a
// burst of events costs two refreshes and the first starts at once.
let refreshing = null;
let refreshAgain = false;
function requestRefresh() {
  if (refreshing) { refreshAgain = true; return; }
  refreshing = refreshAnalytics().finally(() => {
    refreshing = null;
    if (refreshAgain) { refreshAgain = false; requestRefresh(); }
  });
}

// --- live feed -----------------------------------------------------------------------------

function matchesFilters(c) {
  const agent = $("#agent").value, program = $("#program").value;
  return (!agent || c.agent_id === agent) && (!program || c.program_id === program);
}

function addToFeed(c) {
  if (seen.has(c.id) || !matchesFilters(c)) return;
  seen.add(c.id);
  liveTotals.count += 1;
  liveTotals.revenue[c.currency] = decAdd(liveTotals.revenue[c.currency] || "0", c.revenue);
  const sums = Object.entries(liveTotals.revenue).map(([code, v]) => formatMoney(v, code)).join(" + ");
  $("#live-totals").textContent = `${liveTotals.count} conversion(s), ${sums} since this page opened`;

  const item = document.createElement("li");
  item.dataset.id = c.id;
  item.dataset.order = c.order;
  if (c.order_id) item.dataset.orderId = c.order_id;
  item.tabIndex = 0;
  const when = document.createElement("span");
  when.className = "when";
  when.textContent = new Date(c.occurred_at).toLocaleTimeString([], { hour12: false });
  const what = document.createElement("span");
  what.textContent = `Order ${c.order} · ${c.agent_name || (c.agent_id ? c.agent_id : "unattributed")} `;
  const rule = document.createElement("span");
  rule.className = "rule";
  rule.textContent = c.rule.replace("_", " ");
  what.append(rule);
  const amount = document.createElement("span");
  amount.className = "amount";
  amount.textContent = formatMoney(c.revenue, c.currency);
  item.append(when, what, amount);
  $("#feed").prepend(item);
  while ($("#feed").children.length > 50) $("#feed").lastElementChild.remove();
}

function setLiveStatus(text, on) {
  const pill = $("#live-status");
  pill.textContent = text;
  pill.classList.toggle("on", on);
}

function reconnectLater(ms = 3000) {
  if (live) { live.close(); live = null; }
  setLiveStatus("reconnecting", false);
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(connectLive, ms);
}

async function connectLive() {
  if (!session.access) return;
  let ticket;
  try {
    ticket = (await api("/v1/live/tickets", { method: "POST" })).ticket;
  } catch (_) {
    reconnectLater();
    return;
  }
  // EventSource cannot send an Authorization header: a one-time ticket goes in the URL instead.
  live = new EventSource(`/v1/live?ticket=${encodeURIComponent(ticket)}`);
  live.addEventListener("ready", () => { setLiveStatus("live", true); requestRefresh(); });
  live.addEventListener("conversion", (e) => { addToFeed(JSON.parse(e.data)); requestRefresh(); });
  live.addEventListener("commission", () => requestRefresh());
  live.addEventListener("resync", () => requestRefresh());
  live.addEventListener("end", () => reconnectLater(1000));
  // The ticket is spent: the browser's own reconnect would be refused, so get a new one.
  live.onerror = () => reconnectLater();
}

// --- session -------------------------------------------------------------------------------

async function start() {
  $("#login").hidden = true;
  $("#dashboard").hidden = false;
  $("#logout").hidden = false;
  try {
    const me = await api("/v1/companies/me");
    $("#who").textContent = me.name || me.slug || "";
  } catch (_) { /* shown without the company name */ }
  await Promise.all([loadOptions("/v1/agents", $("#agent")), loadOptions("/v1/programs", $("#program"))]);
  requestRefresh();
  connectLive();
}

function logout() {
  session.clear();
  if (live) live.close();
  location.reload();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("#login-error").textContent = "";
  const response = await fetch("/v1/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ company: $("#company").value.trim(), email: $("#email").value.trim(),
                           password: $("#password").value }),
  });
  if (!response.ok) {
    $("#login-error").textContent = response.status === 429 ? "Too many attempts, wait a minute." : "Wrong company, email or password.";
    return;
  }
  session.save(await response.json());
  start();
});
$("#logout").addEventListener("click", logout);
for (const list of [$("#feed"), $("#recent-orders tbody")]) {
  list.addEventListener("click", onOrderClick);
  list.addEventListener("keydown", onOrderClick);
}
$("#filters").addEventListener("change", () => requestRefresh());
if (session.access) start();

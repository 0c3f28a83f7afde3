// The valuerec dashboard: plain DOM code over the REST API, with a read key kept in
// localStorage. Values the browser tests compare with the API sit in data-value attributes,
// so the tests check what the page was given rather than how it was formatted.
"use strict";

const KEY = "valuerec.apiKey";
const PAGE = 1000; // the API's largest page: fewest round trips for a target list
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

const num = (x, digits = 2) =>
  x === null || x === undefined ? "–" : Number(x).toLocaleString("en", {
    minimumFractionDigits: digits, maximumFractionDigits: digits });
const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`);

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const key = localStorage.getItem(KEY);
  if (!key) { askKey(); throw new ApiError(401, "no API key"); }
  const res = await fetch(path, { headers: { "X-API-Key": key } });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401) {
    localStorage.removeItem(KEY); // a revoked or mistyped key: ask again rather than loop
    askKey(body.message || "invalid API key");
  }
  if (!res.ok) throw new ApiError(res.status, body.message || `HTTP ${res.status}`);
  return body;
}

function showError(id, err) {
  const node = $(id);
  node.textContent = err ? err.message : "";
  node.hidden = !err;
}

// -- key -------------------------------------------------------------------------------------
function askKey(message) {
  $("#key-panel").hidden = false;
  showError("#key-error", message ? new Error(message) : null);
  $("#key-input").focus();
}

$("#key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY, $("#key-input").value.trim());
  $("#key-input").value = "";
  $("#key-panel").hidden = true;
  show(current); // reload the open view with the new key
});
$("#change-key").addEventListener("click", () => askKey());

// -- views -----------------------------------------------------------------------------------
let current = "customer";
const loaders = { customer: () => {}, segments: loadSegments, models: loadModels };

function show(view) {
  current = view;
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.view === view);
  }
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${view}`;
  if (localStorage.getItem(KEY)) loaders[view]();
}
for (const b of document.querySelectorAll("#tabs button")) {
  b.addEventListener("click", () => show(b.dataset.view));
}

// -- customer --------------------------------------------------------------------------------
$("#user-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  lookUp($("#user-id").value.trim());
});

let lookUps = 0; // the newest look-up's number: an older one's late answers are dropped

async function lookUp(user) {
  if (!user) return;
  const mine = ++lookUps;
  showError("#user-error", null);
  if (user === "." || user === "..") {
    // the browser drops these path segments: /users/./value would fetch /users/value, another
    // user's record (the API refuses them as ids for the same reason)
    $("#customer").hidden = true;
    showError("#user-error", new Error(
      `no user can have the id '${user}': '.' and '..' cannot be addressed in a URL`));
    return;
  }
  const id = encodeURIComponent(user);
  const [value, recs, purchases] = await Promise.allSettled([
    api(`/users/${id}/value`),
    api(`/users/${id}/recommendations?k=10`),
    api(`/users/${id}/purchases?limit=5`),
  ]);
  if (mine !== lookUps) return; // the user asked for someone else meanwhile
  if ([value, recs, purchases].every((r) => r.status === "rejected")) {
    // nothing to show (a bad key, the server down): no card, one error
    $("#customer").hidden = true;
    showError("#user-error", recs.reason);
    return;
  }
  // each part shows its own answer or why there is none: with no models trained yet the
  // purchases still load while value and recommendations say what is missing
  renderValue(value);
  renderPurchases(purchases);
  renderRecs(recs);
  $("#customer").hidden = false;
  $("#customer").dataset.user = user; // tells tests the rendering for this user is done
}

function renderValue(result) {
  const fields = $("#value-fields");
  fields.replaceChildren();
  $("#value-model").textContent = "";
  const missing = $("#value-missing");
  missing.hidden = result.status === "fulfilled";
  if (result.status === "rejected") {
    missing.textContent = result.reason.message;
    return;
  }
  const v = result.value;
  $("#value-model").textContent = `${v.model} ${v.version}`;
  const rows = [
    ["ltv", `LTV (${v.horizon_days} d)`, num(v.ltv), v.ltv, "big"],
    ["ltv-interval", "80% interval", interval(v.ltv_low, v.ltv_high), `${v.ltv_low},${v.ltv_high}`],
    ["p-alive", "P(alive)", pct(v.p_alive), v.p_alive],
    ["segment", "Segment", v.segment, v.segment],
    ["pred-transactions", "Expected purchase days", num(v.pred_transactions),
      v.pred_transactions],
    ["pred-spend", "Expected spend", num(v.pred_spend), v.pred_spend],
    ["as-of", "As of", v.as_of.slice(0, 10), v.as_of],
  ];
  for (const [field, label, text, raw, cls] of rows) {
    fields.append(el("dt", {}, label),
      el("dd", { "data-field": field, "data-value": raw, class: cls }, text));
  }
}

// Models without a predictive distribution (naive, BTYD, LightGBM) give the point value as
// both ends: "12.02 – 12.02" would read as a certain forecast, so say there is none.
function interval(low, high) {
  if (low === null || low === undefined || high === null || high === undefined || low === high) {
    return "no interval (this model gives none)";
  }
  return `${num(low)} – ${num(high)}`;
}

function renderPurchases(result) {
  const list = $("#purchases");
  list.replaceChildren();
  if (result.status === "rejected") {
    list.append(el("li", { class: "muted" }, result.reason.message));
  } else if (result.value.items.length === 0) {
    list.append(el("li", { class: "muted" }, "No purchases."));
  } else {
    for (const p of result.value.items) {
      list.append(el("li", { class: "purchase", "data-item-id": p.item_id },
        el("span", {}, `${(p.timestamp || "").slice(0, 10)} ${p.title || p.item_id || ""}`),
        el("span", { class: "num" }, p.value === null ? "" : num(p.value))));
    }
  }
}

function renderRecs(result) {
  const list = $("#recs");
  list.replaceChildren();
  const note = $("#recs-note");
  $("#recs-model").textContent = "";
  if (result.status === "rejected") {
    note.hidden = false;
    note.textContent = result.reason.message;
    return;
  }
  const r = result.value;
  $("#recs-model").textContent = `${r.model} ${r.version}`;
  note.hidden = !r.cold_start;
  note.textContent = r.cold_start ? "New or unknown customer: popular items instead." : "";
  for (const item of r.items) {
    list.append(el("li", { class: "rec", "data-item-id": item.item_id, "data-score": item.score },
      el("div", { class: "rec-head" },
        el("span", { class: "rec-title" }, item.title ?? item.item_id),
        el("span", { class: "rec-score" }, num(item.score, 3))),
      el("span", { class: "rec-reason" }, item.reason)));
  }
}

// -- segments --------------------------------------------------------------------------------
async function loadSegments() {
  showError("#segments-error", null);
  let body;
  try { body = await api("/segments"); } catch (err) { showError("#segments-error", err); return; }
  $("#segments-meta").textContent =
    `${body.model} ${body.version}, customers as of ${body.as_of.slice(0, 10)}`;
  const tbody = $("#segments-table tbody");
  tbody.replaceChildren();
  for (const s of body.segments) {
    const button = el("button", { type: "button", class: "link" }, "CSV");
    button.addEventListener("click", () => downloadSegment(s.segment, button));
    tbody.append(el("tr", { "data-segment": s.segment },
      el("td", {}, s.segment),
      el("td", { class: "num", "data-field": "users", "data-value": s.users }, s.users),
      el("td", { class: "num wide" }, pct(s.share_users)),
      el("td", { class: "num wide" }, num(s.predicted_value, 0)),
      el("td", { class: "num", "data-field": "share-value", "data-value": s.share_value },
        pct(s.share_value)),
      // one decimal, as the report: a median of whole days is often x.5
      el("td", { class: "num wide", "data-field": "recency", "data-value": s.median_recency_days },
        num(s.median_recency_days, 1)),
      el("td", { class: "num wide" }, num(s.median_frequency, 1)),
      el("td", {}, button)));
  }
  $("#segments-table").dataset.loaded = "1";
}

const CSV_COLUMNS = ["user_id", "ltv", "p_alive", "pred_spend", "frequency", "days_since_last",
  "total_spend"];

// One CSV field. The download is opened in spreadsheets, and user ids come from whoever
// posts events: a text starting with = + - @ or a tab would run there as a formula, so it
// gets a leading apostrophe (OWASP's "CSV injection" advice). Numbers are left as they are.
function csvCell(value) {
  let s = String(value ?? "");
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

// A segment's whole target list as CSV text, following next_cursor page by page.
async function segmentCsv(segment) {
  const lines = [CSV_COLUMNS.join(",")];
  let cursor = null;
  do {
    const q = new URLSearchParams({ limit: PAGE });
    if (cursor) q.set("cursor", cursor);
    const page = await api(`/segments/${encodeURIComponent(segment)}/users?${q}`);
    for (const row of page.items) lines.push(CSV_COLUMNS.map((c) => csvCell(row[c])).join(","));
    cursor = page.next_cursor;
  } while (cursor);
  return lines.join("\n") + "\n";
}

async function downloadSegment(segment, button) {
  button.disabled = true;
  try {
    const blob = new Blob([await segmentCsv(segment)], { type: "text/csv" });
    const a = el("a", { href: URL.createObjectURL(blob),
      download: `segment-${segment.replaceAll(/\W+/g, "-")}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  } catch (err) {
    showError("#segments-error", err);
  } finally {
    button.disabled = false;
  }
}

// -- models ----------------------------------------------------------------------------------
async function loadModels() {
  showError("#models-error", null);
  let body;
  try { body = await api("/models/current"); } catch (err) { showError("#models-error", err); return; }
  const box = $("#models");
  box.replaceChildren();
  if (body.models.length === 0) {
    box.append(el("p", { class: "muted", id: "models-none" },
      "No models yet: run `valuerec train` to train them."));
  }
  for (const m of body.models) {
    const metrics = el("dl", { class: "metrics" });
    for (const [name, value] of Object.entries(m.metrics || {})) {
      if (value === null || typeof value === "object") continue; // nested detail: not a figure
      metrics.append(el("dt", {}, name),
        el("dd", {}, typeof value === "number" ? num(value, 4) : String(value)));
    }
    if (!metrics.children.length) metrics.append(el("dt", {}, "metrics"), el("dd", {}, "none saved"));
    const serving = m.serving_version && m.serving_version !== m.current_version
      ? ` (serving ${m.serving_version})` : "";
    box.append(el("article", { class: "card model", "data-name": m.name },
      el("h2", {}, m.name, " ", el("small", {}, m.kind)),
      el("p", { "data-field": "current-version", "data-value": m.current_version },
        `current ${m.current_version ?? "none"}${serving} · ${m.versions} version(s)` +
        (m.created_at ? ` · trained ${m.created_at.slice(0, 10)}` : "")),
      // why CURRENT names nothing or is not what answers (a broken version): said here, not
      // only in the server's log; the figures below are the served version's
      m.error ? el("p", { class: "error", "data-field": "model-error" }, m.error) : "",
      metrics));
  }
  box.dataset.loaded = "1";
}

window.dashboard = { csvCell, interval, segmentCsv, lookUp, show };
if (localStorage.getItem(KEY)) show("customer"); else askKey();

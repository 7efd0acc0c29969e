// Shared by every page of planoscope's UI: formatting, the time range presets, small helpers.
"use strict";

const PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
                 "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c"];
const RANGES = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };

const $ = (sel) => document.querySelector(sel);

// Failure classes (which span failed, and why, is the API's: GET /api/v1/traces counts them per
// class, GET /api/v1/traces/{id}/failures names them per span): their badge and what they mean.
const FAILURE_BADGES = { "429": "429", "4xx": "4xx", "5xx": "5xx", before_dispatch: "pre-dispatch", error_status: "ERROR" };
const FAILURE_TITLES = { "429": "HTTP 429 (rate limited)", "4xx": "HTTP 4xx (client error)", "5xx": "HTTP 5xx (server error)",
  before_dispatch: "failed before dispatch (no model)", error_status: "status ERROR, no HTTP status" };

// --- formatting ---------------------------------------------------------------------------
function fmtNumber(v, digits = 2) {
  if (v == null || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + " B";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + " M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + " K";
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(digits);
}
// Compact: 950, 1.2k, 12k, 1.5M (tokens per second and the like).
function fmtCompact(v) {
  const a = Math.abs(v), trim = (x, d) => String(Number(x.toFixed(d)));
  if (a >= 1e9) return trim(v / 1e9, a >= 1e10 ? 1 : 2) + "B";
  if (a >= 1e6) return trim(v / 1e6, a >= 1e7 ? 1 : 2) + "M";
  if (a >= 1e3) return trim(v / 1e3, a >= 1e4 ? 1 : 2) + "k";
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return trim(v, 1);
  return trim(v, 2);
}
// US dollars with the digits a cost needs: $12.34, $0.0123, $0.000045.
function fmtUsd(v) {
  const a = Math.abs(v);
  if (a === 0) return "$0";
  if (a >= 1000) return "$" + v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (a >= 1) return "$" + v.toFixed(2);
  if (a >= 0.1) return "$" + v.toFixed(3);
  if (a >= 0.01) return "$" + v.toFixed(4);
  return "$" + v.toPrecision(2).replace(/\.?0+$/, "");
}
function fmtPercent(v) {  // a ratio 0–1
  const p = v * 100, a = Math.abs(p);
  if (a === 0) return "0%";
  return (a >= 10 ? p.toFixed(1) : a >= 1 ? p.toFixed(2) : p.toPrecision(2)) + "%";
}
// A panel's unit: Grafana's ids (reqps, ms, short, percentunit, currencyUSD) and custom units (suffix: tok/s).
function fmtUnit(v, unit) {
  if (v == null || Number.isNaN(v)) return "–";
  if (unit === "reqps") return fmtNumber(v) + " req/s";
  if (unit === "ms") return Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " s" : fmtNumber(v, 1) + " ms";
  if (unit === "short") return v >= 1e4 ? fmtNumber(v) : String(Math.round(v * 100) / 100);
  if (unit === "percentunit") return fmtPercent(v);
  if (unit === "currencyUSD") return fmtUsd(v);
  if (unit?.startsWith("suffix:")) return fmtCompact(v) + " " + unit.slice(7).trim();
  if (unit === "s") return fmtUnit(v * 1000, "ms");
  if (unit === "bytes") return fmtBytes(v);
  return fmtNumber(v);
}
function fmtBytes(v) {  // Grafana's "bytes(IEC)": 512 B, 1.5 KiB, 230 MiB
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? String(Number(v.toFixed(Math.abs(v) >= 100 ? 0 : 1))) : String(Math.round(v))) + " " + units[i];
}
function fmtTime(unixS, withDate) {
  const d = new Date(unixS * 1000);
  const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return withDate ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + t : t;
}
function fmtDuration(ms) {  // 850 µs, 12.3 ms, 1.25 s, 2m 05s
  if (ms == null || Number.isNaN(ms)) return "–";
  if (ms === 0) return "0";
  if (ms < 1) return Math.round(ms * 1000) + " µs";
  if (ms < 1000) return (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const m = Math.floor(ms / 60000), sec = Math.round((ms % 60000) / 1000);
  return `${m}m ${String(sec).padStart(2, "0")}s`;
}
function fmtCost(usd) {
  if (usd == null) return "–";
  return usd >= 1 ? "$" + usd.toFixed(2) : usd >= 0.01 ? "$" + usd.toFixed(3) : "$" + usd.toFixed(5);
}
function toLocalInput(unixS) {
  const d = new Date(unixS * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
// Text with Plano's 🚩 (a flagged call) drawn as an icon: many Linux browsers have no emoji font.
const FLAG_ICON = `<svg class="flag-icon" viewBox="0 0 12 14" aria-label="🚩" role="img"><path d="M2 1v12" stroke="#c0c4cc" stroke-width="1.4" stroke-linecap="round"/><path d="M2.6 1.6h7.6l-1.9 2.8 1.9 2.8H2.6z" fill="#f2495c"/></svg>`;
function richText(s) {
  return escapeHtml(s).replaceAll("\u{1F6A9}", FLAG_ICON);
}
// A service keeps its colour on every page: Plano's own services have theirs; any other gets a
// stable hash of its name into a palette without reds (red means an error).
const SERVICE_COLORS = { "plano(llm)": "#5794f2", "plano(agent)": "#73bf69", "plano(orchestrator)": "#b877d9",
                         "plano(routing)": "#fade2a", "plano(filter)": "#ff9830" };
const SERVICE_PALETTE = ["#8ab8ff", "#37872d", "#ca95e5", "#f2cc0c", "#ffb357", "#56a64b", "#447ebc", "#c0d8ff", "#96d98d"];
function serviceColor(name) {
  if (SERVICE_COLORS[name]) return SERVICE_COLORS[name];
  let h = 0;
  for (const c of String(name)) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return SERVICE_PALETTE[h % SERVICE_PALETTE.length];
}

// --- the time range: a preset ("1h") or custom [from, to] (unix seconds), kept in the URL ---
// Renders the preset buttons and the custom From/To form into ``container`` and calls
// ``onChange()`` whenever the user picks another range.
class RangePicker {
  constructor(container, onChange, preset = "1h") {
    this.preset = preset; this.from = null; this.to = null; this.onChange = onChange;
    container.innerHTML = `<div class="range" role="group" aria-label="Time range" id="range">${
      Object.keys(RANGES).map((r) => `<button type="button" data-range="${r}">${r}</button>`).join("")
    }<button type="button" data-range="custom">Custom</button></div>
      <form class="custom" id="custom" hidden>
        <label>From <input type="datetime-local" id="custom-from" step="1" required></label>
        <label>To <input type="datetime-local" id="custom-to" step="1" required></label>
        <button type="submit">Apply</button>
      </form>`;
    container.querySelector("#range").addEventListener("click", (e) => {
      const r = e.target.closest("button")?.dataset.range;
      if (!r) return;
      if (r === "custom") {
        const [from, to] = this.bounds();
        this.from = Math.floor(from); this.to = Math.floor(to);
      }
      this.preset = r;
      this.sync(); this.onChange();
    });
    container.querySelector("#custom").addEventListener("submit", (e) => {
      e.preventDefault();
      const from = new Date($("#custom-from").value).getTime() / 1000;
      const to = new Date($("#custom-to").value).getTime() / 1000;
      if (!(to > from)) { showError("The custom range must end after it starts."); return; }
      this.from = from; this.to = to; this.onChange();
    });
  }
  get custom() { return this.preset === "custom"; }
  read(params) {  // from URLSearchParams: range=1h, or from=…&to=…
    const from = Number(params.get("from")), to = Number(params.get("to"));
    if (params.get("range") in RANGES) this.preset = params.get("range");
    if (params.has("from") && params.has("to") && Number.isFinite(from) && Number.isFinite(to) && to > from) {
      this.preset = "custom"; this.from = from; this.to = to;
    }
    this.sync();
  }
  write(params) {
    if (this.custom) { params.set("from", String(this.from)); params.set("to", String(this.to)); }
    else params.set("range", this.preset);
  }
  bounds() {
    if (this.custom) return [this.from, this.to];
    const end = Date.now() / 1000;
    return [end - RANGES[this.preset], end];
  }
  sync() {
    for (const b of document.querySelectorAll("#range button")) {
      b.setAttribute("aria-pressed", String(b.dataset.range === this.preset));
    }
    $("#custom").hidden = !this.custom;
    if (this.custom) { $("#custom-from").value = toLocalInput(this.from); $("#custom-to").value = toLocalInput(this.to); }
  }
}

// --- the top bar's pages: the dashboards (GET /api/v1/dashboards), the traces, the sessions ---
// ``current``: a dashboard id, "traces" or "sessions". The links keep the page's time range.
async function buildNav(current, range) {
  const nav = $("nav.tabs");
  let boards = [];
  try {
    const r = await fetch("api/v1/dashboards");
    if (r.ok) boards = await r.json();
  } catch (e) { /* the static links stay */ }
  if (!boards.length) return boards;
  const keep = new URLSearchParams();
  if (range) range.write(keep);
  const link = (href, text, page) => {
    const a = document.createElement("a");
    a.href = href; a.textContent = text; a.dataset.page = page;
    if (page === current) a.setAttribute("aria-current", "page");
    return a;
  };
  nav.replaceChildren(
    // "Plano - LLM Usage" as "LLM Usage", "Brightstaff (Plano dataplane)" as "Brightstaff"; in full on hover.
    ...boards.map((b) => Object.assign(link(`./?dashboard=${encodeURIComponent(b.id)}&${keep}`,
      b.title.replace(/^Plano - /, "").replace(/\s+\(.*\)$/, ""), b.id), { title: b.title })),
    link("traces" + (keep.toString() ? "?" + keep : ""), "Traces", "traces"),
    link("sessions", "Sessions", "sessions"),
    link("alerts", "Alerts", "alerts"));
  markFiring();
  return boards;
}

// The Alerts tab says how many alerts fire, on every page; ``body``: GET /api/v1/alerts, if the
// page has it already (the dashboards read it at every refresh).
async function markFiring(body) {
  const tab = document.querySelector('nav.tabs a[data-page="alerts"]');
  if (!tab) return;
  try {
    if (!body) {
      const r = await fetch(new URL("api/v1/alerts", tab.href));
      if (!r.ok) return;
      body = await r.json();
    }
    const firing = body.alerts.filter((a) => a.state === "firing").length;
    tab.querySelector(".firing-badge")?.remove();
    if (firing) {
      tab.insertAdjacentHTML("beforeend", ` <span class="firing-badge" title="${firing} alert${firing > 1 ? "s" : ""} firing">${firing}</span>`);
    }
  } catch (e) { /* the tab stays as it is */ }
}

// An alert's labels as chips (its name is said apart).
function labelChips(labels) {
  return Object.entries(labels || {}).filter(([k]) => k !== "alertname").sort()
    .map(([k, v]) => `<span class="chip label-chip"><span class="k">${escapeHtml(k)}</span>=${escapeHtml(v)}</span>`).join("");
}

function showError(msg) {
  const el = $("#error");
  el.textContent = msg || "";
  el.hidden = !msg;
}

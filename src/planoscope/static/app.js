// planoscope's dashboard: the panels of GET /api/v1/panels, filled from GET /api/v1/dashboard.
// No build step: plain modern JavaScript and uPlot. State (range, refresh) lives in the URL.
"use strict";

const PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
                 "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c"];
const FIXED = { blue: "#5794f2", red: "#f2495c" };
const RANGES = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800 };
const REFRESH = { off: 0, "5s": 5, "10s": 10, "30s": 30, "1m": 60 };

const $ = (sel) => document.querySelector(sel);
const state = { range: "1h", from: null, to: null, refresh: "10s", panels: [], views: new Map(),
                timer: null, inflight: null, hidden: new Map() };

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
function fmtUnit(v, unit) {
  if (v == null || Number.isNaN(v)) return "–";
  if (unit === "reqps") return fmtNumber(v) + " req/s";
  if (unit === "ms") return Math.abs(v) >= 1000 ? (v / 1000).toFixed(2) + " s" : fmtNumber(v, 1) + " ms";
  if (unit === "short") return v >= 1e4 ? fmtNumber(v) : String(Math.round(v));
  return fmtNumber(v);
}
function axisUnit(unit) { return unit === "reqps" ? "req/s" : ""; }
function fmtAxis(v, unit) {  // compact tick labels: 2, 2.5, 750 ms, 1.5 s, 12 K
  const trim = (x) => String(Number(x.toFixed(2)));
  if (unit === "ms") return Math.abs(v) >= 1000 ? trim(v / 1000) + " s" : trim(v) + " ms";
  if (Math.abs(v) >= 1e6) return trim(v / 1e6) + "M";
  if (Math.abs(v) >= 1e3) return trim(v / 1e3) + "K";
  return trim(v);
}
function timeTicks(u, splits) {
  const span = u.scales.x.max - u.scales.x.min;
  const pad = (n) => String(n).padStart(2, "0");
  return splits.map((t) => {
    const d = new Date(t * 1000);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (span <= 900) return `${hm}:${pad(d.getSeconds())}`;
    if (span <= 86400) return hm;
    return `${pad(d.getMonth() + 1)}/${pad(d.getDate())} ${hm}`;
  });
}
function fmtTime(unixS, withDate) {
  const d = new Date(unixS * 1000);
  const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  return withDate ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + t : t;
}

// --- URL state ----------------------------------------------------------------------------
function readUrl() {
  const p = new URLSearchParams(location.search);
  const from = Number(p.get("from")), to = Number(p.get("to"));
  if (p.get("range") in RANGES) state.range = p.get("range");
  if (Number.isFinite(from) && Number.isFinite(to) && p.has("from") && p.has("to") && to > from) {
    state.range = "custom"; state.from = from; state.to = to;
  }
  if (p.get("refresh") in REFRESH) state.refresh = p.get("refresh");
}
function writeUrl() {
  const p = new URLSearchParams();
  if (state.range === "custom") { p.set("from", String(state.from)); p.set("to", String(state.to)); }
  else p.set("range", state.range);
  p.set("refresh", state.refresh);
  history.replaceState(null, "", "?" + p.toString());
}
function timeRange() {
  if (state.range === "custom") return [state.from, state.to];
  const end = Date.now() / 1000;
  return [end - RANGES[state.range], end];
}

// --- controls -----------------------------------------------------------------------------
function syncControls() {
  for (const b of document.querySelectorAll("#range button")) {
    b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
  }
  $("#custom").hidden = state.range !== "custom";
  $("#auto-refresh").value = state.refresh;
  if (state.range === "custom") {
    $("#custom-from").value = toLocalInput(state.from);
    $("#custom-to").value = toLocalInput(state.to);
  }
}
function toLocalInput(unixS) {
  const d = new Date(unixS * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function setupControls() {
  $("#range").addEventListener("click", (e) => {
    const r = e.target.closest("button")?.dataset.range;
    if (!r) return;
    if (r === "custom") {
      const [from, to] = timeRange();
      state.range = "custom"; state.from = Math.floor(from); state.to = Math.floor(to);
    } else {
      state.range = r;
    }
    changed();
  });
  $("#custom").addEventListener("submit", (e) => {
    e.preventDefault();
    const from = new Date($("#custom-from").value).getTime() / 1000;
    const to = new Date($("#custom-to").value).getTime() / 1000;
    if (!(to > from)) { showError("The custom range must end after it starts."); return; }
    state.from = from; state.to = to; changed();
  });
  $("#auto-refresh").addEventListener("change", (e) => { state.refresh = e.target.value; changed(false); });
  $("#refresh-now").addEventListener("click", () => refresh());
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(); });
}
function changed(reload = true) {
  writeUrl(); syncControls(); schedule();
  if (reload) refresh();
}
function schedule() {
  clearInterval(state.timer);
  const every = REFRESH[state.refresh];
  if (every && state.range !== "custom") state.timer = setInterval(() => { if (!document.hidden) refresh(); }, every * 1000);
}

// --- panels -------------------------------------------------------------------------------
function buildGrid() {
  const grid = $("#grid");
  grid.innerHTML = "";
  for (const p of state.panels) {
    const [x, y, w, h] = p.grid;
    const el = document.createElement("section");
    el.className = "panel";
    el.dataset.panel = p.id;
    el.style.gridColumn = `${x + 1} / span ${w}`;
    el.style.gridRow = `${y + 1} / span ${h}`;
    el.innerHTML = `<header><h2></h2><span class="info" tabindex="0">i</span><span class="targets"></span></header>
      <div class="body"></div><div class="legend"></div>`;
    el.querySelector("h2").textContent = p.title;
    el.querySelector(".info").title = p.description + "\nReference PromQL: " + p.promql.join("\n");
    grid.appendChild(el);
    state.views.set(p.id, { def: p, el, plot: null, key: "" });
  }
}

function colorFor(def, i, name) {
  if (def.color && FIXED[def.color] && def.id !== "total_requests_per_second") return FIXED[def.color];
  return PALETTE[i % PALETTE.length];
}

function renderPanel(view, data) {
  const body = view.el.querySelector(".body");
  const legend = view.el.querySelector(".legend");
  view.el.dataset.series = data.series.map((s) => s.name).join("|");
  if (data.notice) {
    destroyPlot(view);
    body.innerHTML = `<div class="notice"></div>`;
    body.firstChild.textContent = data.notice;
    legend.innerHTML = "";
    return;
  }
  if (view.def.kind === "stat") return renderStat(view, data, body, legend);
  if (!data.series.length) {
    destroyPlot(view);
    body.innerHTML = `<div class="nodata">No data in this range</div>`;
    legend.innerHTML = "";
    return;
  }
  renderTimeseries(view, data, body, legend);
}

function destroyPlot(view) {
  if (view.plot) { view.plot.destroy(); view.plot = null; view.key = ""; }
  view.resize?.disconnect();
}

function alignData(series) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const ys = series.map((s) => {
    const col = new Array(xs.length).fill(null);
    for (const [t, v] of s.points) col[index.get(t)] = v;
    return col;
  });
  return [xs, ...ys];
}

function renderTimeseries(view, data, body, legend) {
  const def = view.def;
  const aligned = alignData(data.series);
  const key = data.series.map((s) => s.name).join("\u0000");
  const hidden = state.hidden.get(def.id) || new Set();
  view.range = [data.start, data.end];  // the whole range, even where a series has no points
  if (view.plot && view.key === key) {
    view.plot.setData(aligned);
  } else {
    destroyPlot(view);
    body.innerHTML = `<div class="chart"></div>`;
    const chart = body.firstChild;
    const series = [{ value: (u, v) => (v == null ? "" : fmtTime(v, true)) }].concat(
      data.series.map((s, i) => {
        const stroke = colorFor(def, i, s.name);
        return {
          label: s.name, stroke, width: 2, show: !hidden.has(s.name), spanGaps: false,
          fill: def.color ? stroke + "26" : stroke + "14",
          points: def.source === "scrape" ? { size: 5 } : { show: false },  // sparse samples: uPlot shows the points
          value: (u, v) => fmtUnit(v, def.unit),
        };
      }));
    const opts = {
      width: chart.clientWidth || 400, height: chart.clientHeight || 200,
      series, legend: { show: false },
      cursor: { sync: { key: "planoscope" }, focus: { prox: 24 }, points: { size: 6 } },
      scales: { x: { time: true, range: () => view.range }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: "#8e9099", grid: { stroke: "rgba(204,204,220,0.07)" }, ticks: { stroke: "rgba(204,204,220,0.1)" },
          values: timeTicks },
        { stroke: "#8e9099", grid: { stroke: "rgba(204,204,220,0.07)" }, ticks: { show: false }, size: 64,
          label: axisUnit(def.unit), labelSize: 18,
          values: (u, vals) => vals.map((v) => fmtAxis(v, def.unit)) },
      ],
      plugins: [tooltipPlugin(def)],
    };
    view.plot = new uPlot(opts, aligned, chart);
    view.key = key;
    view.resize = new ResizeObserver(() => {
      if (view.plot && chart.clientWidth) view.plot.setSize({ width: chart.clientWidth, height: chart.clientHeight });
    });
    view.resize.observe(chart);
  }
  renderLegend(view, data, legend, aligned);
}

function stats(values) {
  const vs = values.filter((v) => v != null);
  if (!vs.length) return [null, null, null];
  return [vs.reduce((a, b) => a + b, 0) / vs.length, Math.max(...vs), vs[vs.length - 1]];
}

function renderLegend(view, data, legend, aligned) {
  const def = view.def;
  const hidden = state.hidden.get(def.id) || new Set();
  const rows = data.series.map((s, i) => {
    const [mean, max, last] = stats(aligned[i + 1]);
    return `<tr data-i="${i}" class="${hidden.has(s.name) ? "off" : ""}" title="Click to show or hide; Shift-click to show only this">
      <td><span class="swatch" style="background:${colorFor(def, i, s.name)}"></span>${escapeHtml(s.name || "(none)")}</td>
      <td>${fmtUnit(mean, def.unit)}</td><td>${fmtUnit(max, def.unit)}</td><td>${fmtUnit(last, def.unit)}</td></tr>`;
  });
  legend.innerHTML = `<table><thead><tr><th>Name</th><th>Mean</th><th>Max</th><th>Last</th></tr></thead>
    <tbody>${rows.join("")}</tbody></table>`;
  legend.querySelector("tbody").onclick = (e) => {
    const tr = e.target.closest("tr");
    if (!tr || !view.plot) return;
    const i = Number(tr.dataset.i);
    const names = data.series.map((s) => s.name);
    let set = new Set(state.hidden.get(def.id) || []);
    if (e.shiftKey) {
      const onlyThis = names.every((n, j) => (j === i) !== set.has(n));
      set = onlyThis ? new Set() : new Set(names.filter((_, j) => j !== i));
    } else if (set.has(names[i])) set.delete(names[i]);
    else set.add(names[i]);
    state.hidden.set(def.id, set);
    names.forEach((n, j) => view.plot.setSeries(j + 1, { show: !set.has(n) }));
    legend.querySelectorAll("tbody tr").forEach((row, j) => row.classList.toggle("off", set.has(names[j])));
  };
}

function renderStat(view, data, body, legend) {
  destroyPlot(view);
  legend.innerHTML = "";
  if (!data.series.length) { body.innerHTML = `<div class="nodata">No data</div>`; return; }
  const tiles = data.series.map((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const v = s.points.length ? s.points[s.points.length - 1][1] : null;
    return `<div class="stat" style="background:linear-gradient(120deg, ${c}cc, ${c}66)">
      <div class="label">${escapeHtml(s.name || "(none)")}</div><div class="value">${fmtUnit(v, view.def.unit)}</div></div>`;
  });
  body.innerHTML = `<div class="stats">${tiles.join("")}</div>`;
}

function tooltipPlugin(def) {
  const tip = $("#tooltip");
  return {
    hooks: {
      setCursor: (u) => {
        const i = u.cursor.idx;
        if (i == null || u.cursor.left < 0) { tip.hidden = true; return; }
        const rows = [];
        for (let s = 1; s < u.series.length; s++) {
          const v = u.data[s][i];
          if (!u.series[s].show || v == null) continue;
          rows.push([v, u.series[s].label, u.series[s].stroke()]);
        }
        if (!rows.length) { tip.hidden = true; return; }
        rows.sort((a, b) => b[0] - a[0]);
        tip.innerHTML = `<div class="time">${fmtTime(u.data[0][i], true)}</div>` + rows.map(([v, name, color]) =>
          `<div class="row"><span class="swatch" style="background:${color}"></span><span class="name">${escapeHtml(name || "(none)")}</span><b>${fmtUnit(v, def.unit)}</b></div>`).join("");
        const rect = u.over.getBoundingClientRect();
        const x = rect.left + u.cursor.left, y = rect.top + u.cursor.top;
        tip.hidden = false;
        const w = tip.offsetWidth, h = tip.offsetHeight;
        tip.style.left = (x + 16 + w > innerWidth ? x - w - 16 : x + 16) + "px";
        tip.style.top = Math.max(4, Math.min(innerHeight - h - 4, y - h / 2)) + "px";
      },
    },
  };
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// --- data ---------------------------------------------------------------------------------
function showError(msg) {
  const el = $("#error");
  el.textContent = msg || "";
  el.hidden = !msg;
}

async function refresh() {
  const [start, end] = timeRange();
  state.inflight?.abort();
  const ctl = new AbortController();
  state.inflight = ctl;
  $("#refresh-now").classList.add("spinning");
  try {
    const r = await fetch(`api/v1/dashboard?start=${start}&end=${end}`, { signal: ctl.signal });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    for (const p of body.panels) renderPanel(state.views.get(p.id), p);
    await renderTargets(ctl.signal);
    $("#empty").hidden = body.spans_stored > 0;
    document.body.dataset.loaded = String(Date.now());
    document.body.dataset.step = String(body.step);
    $("#grid").setAttribute("aria-busy", "false");
    $("#status").textContent = `Updated ${fmtTime(Date.now() / 1000)} · step ${body.step}s`;
    showError("");
  } catch (e) {
    if (e.name !== "AbortError") showError(`Could not load the dashboard: ${e.message}`);
  } finally {
    if (state.inflight === ctl) { state.inflight = null; $("#refresh-now").classList.remove("spinning"); }
  }
}

// --- scrape targets' health, in the header of the panels drawn from scraped samples ----------
function targetText(t, now) {
  const ago = t.last_scrape == null ? "" : ` · ${fmtAgo(now - t.last_scrape)}`;
  if (t.up === null) return `${t.label} · not scraped yet`;
  return t.up ? `${t.label} up${ago}` : `${t.label} down: ${t.last_error}${ago}`;
}

function fmtAgo(s) {
  if (s < 60) return `${Math.max(0, Math.round(s))} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

async function renderTargets(signal) {
  const r = await fetch("api/v1/targets", { signal });
  if (!r.ok) return;
  const targets = await r.json();
  const now = Date.now() / 1000;
  for (const view of state.views.values()) {
    if (view.def.source !== "scrape") continue;
    const box = view.el.querySelector(".targets");
    box.innerHTML = "";
    for (const t of targets) {
      const pill = document.createElement("span");
      pill.className = `target ${t.up === null ? "pending" : t.up ? "up" : "down"}`;
      pill.dataset.target = t.label;
      pill.textContent = targetText(t, now);
      pill.title = `${t.url}\n` + (t.last_duration_s == null ? "" : `last scrape took ${fmtNumber(t.last_duration_s * 1000)} ms, `)
        + `${t.samples_last_scrape} samples` + (t.last_error ? `\nerror: ${t.last_error}` : "");
      box.appendChild(pill);
    }
  }
}

async function main() {
  readUrl();
  setupControls();
  syncControls();
  writeUrl();
  try {
    const r = await fetch("api/v1/panels");
    state.panels = await r.json();
  } catch (e) {
    showError(`Could not reach planoscope: ${e.message}`);
    return;
  }
  buildGrid();
  await refresh();
  schedule();
}

main();

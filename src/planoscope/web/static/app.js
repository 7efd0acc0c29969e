// planoscope's dashboards: the top bar lists GET /api/v1/dashboards; the chosen one's panels
// (GET /api/v1/panels?dashboard=) are filled from GET /api/v1/dashboard?id=. No build step:
// plain modern JavaScript and uPlot. State (dashboard, range, refresh) lives in the URL.
"use strict";

const FIXED = { blue: "#5794f2", red: "#f2495c" };
const REFRESH = { off: 0, "5s": 5, "10s": 10, "30s": 30, "1m": 60 };
const DEFAULT_DASHBOARD = "requests-overview";
// signals.quality, best to worst, in colours that say so; the flagged share in purple.
const QUALITY_COLORS = { excellent: "#73bf69", good: "#b6e3a8", neutral: "#8e9099", poor: "#ff9830", severe: "#f2495c" };
const MEASURE_COLOR = "#b877d9";
const ESTIMATED_DASH = [6, 4];

const state = { dashboard: DEFAULT_DASHBOARD, dashboards: [], range: null, refresh: "10s", allPanels: [], panels: [],
                views: new Map(), timer: null, inflight: null, hidden: new Map(), alerts: { live: [], intervals: [] } };

// --- formatting ---------------------------------------------------------------------------
function axisUnit(unit) {
  if (unit === "reqps") return "req/s";
  if (unit === "bytes") return "bytes";
  if (unit?.startsWith("suffix:")) return unit.slice(7).trim();
  return "";
}
function fmtAxis(v, unit) {  // compact tick labels: 2, 2.5, 750 ms, 1.5 s, 12K, 25%, $0.5
  const trim = (x) => String(Number(x.toFixed(2)));
  if (unit === "ms") return Math.abs(v) >= 1000 ? trim(v / 1000) + " s" : trim(v) + " ms";
  if (unit === "s") return fmtAxis(v * 1000, "ms");
  if (unit === "bytes") return fmtBytes(v);
  if (unit === "percentunit") return fmtPercent(v).replace(/\.0+%$/, "%");
  if (unit === "currencyUSD") return fmtUsd(v).replace(/\.0+$/, "");
  if (unit?.startsWith("suffix:")) return fmtCompact(v);
  if (Math.abs(v) >= 1e6) return trim(v / 1e6) + "M";
  if (Math.abs(v) >= 1e3) return trim(v / 1e3) + "K";
  if (v !== 0 && Math.abs(v) < 0.01) return String(Number(v.toPrecision(2)));  // 0.004 req/s, not 0
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

// A series drawn against the right-hand axis, in that measure's unit (the flagged share).
function measureOf(def, series) {
  const id = series?.labels?.measure;
  return id ? def.measures.find((m) => m.id === id) : null;
}
function unitOf(def, series) { return measureOf(def, series)?.unit || def.unit; }
function isEstimated(series) {
  return series?.labels?.cost_source === "estimated" || series?.labels?.cost_estimated === "true";
}
// A series' name as shown: an estimated cost says so with its badge, not twice.
function shownName(def, s) {
  return (isEstimated(s) ? s.name.replace(/ \(estimated\)$/, "") : s.name) || noLabel(def);
}

// --- URL state and controls -----------------------------------------------------------------
function readUrl() {
  const p = new URLSearchParams(location.search);
  state.range.read(p);
  if (p.get("refresh") in REFRESH) state.refresh = p.get("refresh");
  if (p.get("dashboard")) state.dashboard = p.get("dashboard");
}
function writeUrl() {
  const p = new URLSearchParams();
  if (state.dashboard !== DEFAULT_DASHBOARD) p.set("dashboard", state.dashboard);
  state.range.write(p);
  p.set("refresh", state.refresh);
  history.replaceState(null, "", "?" + p.toString());
}
function timeRange() { return state.range.bounds(); }
function syncControls() {
  state.range.sync();
  $("#auto-refresh").value = state.refresh;
}
function setupControls() {
  $("#auto-refresh").addEventListener("change", (e) => { state.refresh = e.target.value; changed(false); });
  $("#refresh-now").addEventListener("click", () => refresh());
  document.addEventListener("visibilitychange", () => { if (!document.hidden) schedule(); });
  // A dashboard tab switches in place, keeping the range and refresh (a modified click opens a tab).
  $("nav.tabs").addEventListener("click", (e) => {
    const a = e.target.closest("a[data-page]");
    const board = a && state.dashboards.find((b) => b.id === a.dataset.page);
    if (!board || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    if (board.id !== state.dashboard) showDashboard(board.id);
  });
}
function changed(reload = true) {
  writeUrl(); syncControls(); schedule(); syncNav();
  if (reload) refresh();
}
function schedule() {
  clearInterval(state.timer);
  const every = REFRESH[state.refresh];
  if (every && !state.range.custom) state.timer = setInterval(() => { if (!document.hidden) refresh(); }, every * 1000);
}
function syncNav() {  // the tabs' links carry the range; the current dashboard is marked
  const keep = new URLSearchParams();
  state.range.write(keep);
  for (const a of document.querySelectorAll("nav.tabs a[data-page]")) {
    const board = state.dashboards.find((b) => b.id === a.dataset.page);
    if (board) a.href = `./?dashboard=${encodeURIComponent(board.id)}&${keep}`;
    else if (a.dataset.page === "traces") a.href = "traces?" + keep;
    if (a.dataset.page === state.dashboard) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function showDashboard(id) {
  const board = state.dashboards.find((b) => b.id === id) || state.dashboards[0];
  state.dashboard = board.id;
  const byId = new Map(state.allPanels.map((p) => [p.id, p]));
  state.panels = board.panels.map((pid) => byId.get(pid)).filter(Boolean);
  $("#dashboard-title").textContent = board.title;
  document.title = `${board.title} · planoscope`;
  document.body.dataset.dashboard = board.id;
  for (const view of state.views.values()) destroyPlot(view);
  state.views.clear();
  buildGrid();
  changed();
}

// --- panels -------------------------------------------------------------------------------
function buildGrid() {
  const grid = $("#grid");
  grid.innerHTML = "";
  grid.setAttribute("aria-busy", "true");
  for (const p of state.panels) {
    const [x, y, w, h] = p.grid;
    if (p.kind === "row") {  // a Grafana row: a heading across the grid, no data
      const row = document.createElement("h2");
      row.className = "row-heading";
      row.dataset.panel = p.id;
      row.style.gridColumn = "1 / -1";
      row.style.gridRow = `${y + 1} / span 1`;
      row.textContent = p.title;
      grid.appendChild(row);
      continue;
    }
    const el = document.createElement("section");
    el.className = "panel";
    el.dataset.panel = p.id;
    el.style.gridColumn = `${x + 1} / span ${w}`;
    el.style.gridRow = `${y + 1} / span ${h}`;
    el.innerHTML = `<header><h2></h2><span class="info" tabindex="0">i</span><a class="alert-mark" href="alerts" hidden></a><span class="targets"></span></header>
      <div class="body"></div><div class="truncated" hidden></div><div class="legend"></div>`;
    el.querySelector("h2").innerHTML = richText(p.title);
    el.querySelector(".info").title = (p.description ? p.description + "\n" : "")
      + (p.promql.length ? (p.source === "promql" ? "PromQL: " : "PromQL (Grafana export): ") + p.promql.join("\n") : "");
    grid.appendChild(el);
    const view = { def: p, el, plot: null, key: "", alerts: [], intervals: [] };
    state.views.set(p.id, view);
    setupAlertMark(view);
  }
}

// Colours by position, as Grafana's palette; an estimated cost shares its model's colour
// (dashed), a quality has its own, a measure on the right-hand axis too.
function colors(def, series) {
  const byModel = new Map();
  let next = 0;
  return series.map((s) => {
    if (def.color && FIXED[def.color] && def.id !== "total_requests_per_second") return FIXED[def.color];
    if (QUALITY_COLORS[s.labels?.quality]) return QUALITY_COLORS[s.labels.quality];
    if (measureOf(def, s)) return MEASURE_COLOR;
    if (s.labels?.cost_source) {
      const model = s.labels.llm_model ?? "\u0000other";
      if (!byModel.has(model)) byModel.set(model, PALETTE[next++ % PALETTE.length]);
      return byModel.get(model);
    }
    return PALETTE[next++ % PALETTE.length];
  });
}

// A panel with more groups than it draws (max_series_per_panel) says so under the chart.
const NOUNS = { llm_model: "models", agent_id: "agents", series: "series", route: "routes", model_pair: "model pairs",
                quality: "qualities", session_id: "sessions" };
function renderTruncated(view, data) {
  const note = view.el.querySelector(".truncated");
  const t = data.truncated;
  note.hidden = !t;
  if (!t) return;
  const noun = NOUNS[t.label] || `${t.label} values`;
  const rest = { together: "the rest together as other", none: "the rest not shown" }[t.other] || "the rest summed as other";
  note.textContent = `top ${t.shown.toLocaleString("en-US")} of ${t.total.toLocaleString("en-US")} ${noun}; ${rest}`;
}

function renderPanel(view, data) {
  const body = view.el.querySelector(".body");
  const legend = view.el.querySelector(".legend");
  view.el.dataset.series = data.series.map((s) => s.name).join("|");
  renderTruncated(view, data);
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

// A series without its label's value: Plano's LLM calls without a model failed before dispatch.
function noLabel(def) {
  return def.drilldown?.labels?.llm_model ? "(no model)" : "(none)";
}

// --- drill-down: a point, a legend row or a stat tile opens the matching traces -----------------
// failed: only the series' calls that failed (the panel's drilldown.failed filters), if it has any.
function drillUrl(def, series, start, end, failed = false) {
  const dd = def.drilldown;
  if (!dd || series?.labels?.other === "true") return null;  // "other" stands for many values: no one search
  if (failed && !dd.failed) return null;
  const p = new URLSearchParams({ from: String(start), to: String(end) });
  for (const [k, v] of Object.entries({ ...dd.filters, ...(failed ? dd.failed : {}) })) p.set(k, v);
  if (series) {
    for (const [label, filter] of Object.entries(dd.labels || {})) {
      const value = series.labels?.[label];
      if (value) p.set(filter, value);
      else if (label in (series.labels || {})) for (const [k, v] of Object.entries(dd.unset?.[label] || {})) p.set(k, v);
    }
    for (const [k, v] of Object.entries(dd.series?.[series.name] || {})) p.set(k, v);
  }
  if (dd.sort) { p.set("sort", dd.sort); p.set("order", "desc"); }
  return "traces?" + p.toString();
}

function drillPlugin(view) {
  return {
    hooks: {
      ready: (u) => {
        let down = null;
        u.over.addEventListener("mousedown", (e) => { down = [e.clientX, e.clientY]; });
        u.over.addEventListener("click", (e) => {
          const i = u.cursor.idx;
          if (i == null || !view.data) return;
          if (down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 4) return;  // a drag, not a click
          // The series nearest the pointer, among those shown with a value here.
          let best = null, bestDist = Infinity;
          for (let s = 1; s < u.series.length; s++) {
            const v = u.data[s][i];
            if (!u.series[s].show || v == null) continue;
            const d = Math.abs(u.valToPos(v, u.series[s].scale) - u.cursor.top);
            if (d < bestDist) { best = s; bestDist = d; }
          }
          if (best == null) return;
          const t = u.data[0][i], step = Number(document.body.dataset.step) || 60;
          const url = drillUrl(view.def, view.data.series[best - 1], t - step, t);
          if (url) location.href = url;
        });
      },
    },
  };
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

const AXIS = { stroke: "#8e9099", grid: { stroke: "rgba(204,204,220,0.07)" } };

function renderTimeseries(view, data, body, legend) {
  const def = view.def;
  const aligned = alignData(data.series);
  const key = data.series.map((s) => s.name).join("\u0000");
  view.data = data;
  view.colors = colors(def, data.series);
  const hidden = state.hidden.get(def.id) || new Set();
  view.range = [data.start, data.end];  // the whole range, even where a series has no points
  if (view.plot && view.key === key) {
    view.plot.setData(aligned);
  } else {
    destroyPlot(view);
    body.innerHTML = `<div class="chart"></div>`;
    const chart = body.firstChild;
    const right = data.series.map((s) => measureOf(def, s)).find(Boolean);
    const series = [{ value: (u, v) => (v == null ? "" : fmtTime(v, true)) }].concat(
      data.series.map((s, i) => {
        const stroke = view.colors[i], m = measureOf(def, s);
        return {
          label: s.name, stroke, width: m || data.series.length > 8 ? 1.5 : 2, show: !hidden.has(s.name), spanGaps: false,
          scale: m ? "y2" : "y",
          dash: isEstimated(s) || m ? ESTIMATED_DASH : undefined,
          fill: m || isEstimated(s) ? undefined : def.color ? stroke + "26" : stroke + "14",
          points: def.source === "scrape" ? { size: 5 } : { show: false },  // sparse samples: uPlot shows the points
          value: (u, v) => fmtUnit(v, unitOf(def, s)),
        };
      }));
    const axes = [
      // Labels with seconds (ranges up to 15 minutes) are wider: keep them from touching.
      { ...AXIS, ticks: { stroke: "rgba(204,204,220,0.1)" }, values: timeTicks,
        space: (u, i, min, max) => (max - min <= 900 ? 80 : 60) },
      { ...AXIS, ticks: { show: false }, size: 64, label: axisUnit(def.unit), labelSize: 18,
        values: (u, vals) => vals.map((v) => fmtAxis(v, def.unit)) },
    ];
    const scales = { x: { time: true, range: () => view.range }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } };
    if (right) {
      axes.push({ ...AXIS, side: 1, grid: { show: false }, ticks: { show: false }, size: 56, scale: "y2",
        label: right.title.replace("\u{1F6A9}", "").trim(), labelSize: 18, values: (u, vals) => vals.map((v) => fmtAxis(v, right.unit)) });
      scales.y2 = { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] };
    }
    const opts = {
      width: chart.clientWidth || 400, height: chart.clientHeight || 200,
      series, legend: { show: false }, axes, scales,
      cursor: { sync: { key: "planoscope" }, focus: { prox: 24 }, points: { size: 6 } },
      plugins: [annotationsPlugin(view), tooltipPlugin(view), drillPlugin(view)],
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

const ESTIMATED_TITLE = "Estimated by planoscope from its price table: the sender sent tokens and no cost";
function estimatedBadge(series) {
  return isEstimated(series) ? ` <span class="est" title="${ESTIMATED_TITLE}">estimated</span>` : "";
}

function renderLegend(view, data, legend, aligned) {
  const def = view.def;
  const hidden = state.hidden.get(def.id) || new Set();
  const rows = data.series.map((s, i) => {
    const [mean, max, last] = stats(aligned[i + 1]);
    const unit = unitOf(def, s);
    const href = drillUrl(def, s, data.start, data.end);
    const failedHref = drillUrl(def, s, data.start, data.end, true);
    const swatch = isEstimated(s) || measureOf(def, s) ? "swatch dashed" : "swatch";
    const alerting = seriesAlerts(view, s);
    const classes = [hidden.has(s.name) && "off", alerting.length && "alerting",
                     alerting.some((a) => a.state === "firing") && "firing"].filter(Boolean).join(" ");
    const bell = alerting.length ? ` <span class="series-alert" title="${escapeHtml(
      alerting.map((a) => `${a.rule} ${a.state}`).join("\n"))}">${BELL}</span>` : "";
    return `<tr data-i="${i}" class="${classes}" title="Click to show or hide; Shift-click to show only this">
      <td><span class="${swatch}" style="--c:${view.colors[i]}"></span>${richText(shownName(def, s))}${estimatedBadge(s)}${bell}</td>
      <td class="drill">${href ? `<a href="${href}" title="Traces of ${escapeHtml(s.name)} in this range">traces ↗</a>` : ""}${failedHref
        ? ` <a class="failed" href="${failedHref}" title="Failed calls of ${escapeHtml(s.name)} in this range (HTTP ≥ 400, before dispatch, status ERROR)">failed ↗</a>` : ""}</td>
      <td>${fmtUnit(mean, unit)}</td><td>${fmtUnit(max, unit)}</td><td>${fmtUnit(last, unit)}</td></tr>`;
  });
  legend.innerHTML = `<table><thead><tr><th>Name</th><th></th><th>Mean</th><th>Max</th><th>Last</th></tr></thead>
    <tbody>${rows.join("")}</tbody></table>`;
  legend.querySelector("tbody").onclick = (e) => {
    const tr = e.target.closest("tr");
    if (!tr || !view.plot || e.target.closest("a")) return;
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

function tooltipPlugin(view) {
  const tip = $("#tooltip");
  const def = view.def;
  return {
    hooks: {
      setCursor: (u) => {
        const i = u.cursor.idx;
        if (i == null || u.cursor.left < 0) { tip.hidden = true; return; }
        const rows = [];
        for (let s = 1; s < u.series.length; s++) {
          const v = u.data[s][i];
          if (!u.series[s].show || v == null) continue;
          rows.push([v, view.data.series[s - 1], view.colors[s - 1]]);
        }
        if (!rows.length) { tip.hidden = true; return; }
        rows.sort((a, b) => Number(Boolean(measureOf(def, a[1]))) - Number(Boolean(measureOf(def, b[1]))) || b[0] - a[0]);
        tip.innerHTML = `<div class="time">${fmtTime(u.data[0][i], true)}</div>` + rows.map(([v, s, color]) =>
          `<div class="row"><span class="swatch${isEstimated(s) || measureOf(def, s) ? " dashed" : ""}" style="--c:${color}"></span><span class="name">${richText(shownName(def, s))}${estimatedBadge(s)}</span><b>${fmtUnit(v, unitOf(def, s))}</b></div>`).join("");
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


// --- data ---------------------------------------------------------------------------------

async function refresh() {
  const [start, end] = timeRange();
  state.inflight?.abort();
  const ctl = new AbortController();
  state.inflight = ctl;
  const board = state.dashboard;
  $("#refresh-now").classList.add("spinning");
  try {
    const [r, alerts] = await Promise.all([
      fetch(`api/v1/dashboard?id=${encodeURIComponent(board)}&start=${start}&end=${end}`, { signal: ctl.signal }),
      fetchAlerts(start, end, ctl.signal)]);
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    if (board !== state.dashboard) return;  // switched while loading
    state.alerts = alerts;
    for (const view of state.views.values()) { alertsFor(view, alerts); renderAlertMark(view); }
    for (const p of body.panels) if (state.views.has(p.id)) renderPanel(state.views.get(p.id), p);
    if (alerts.body) markFiring(alerts.body);
    await renderTargets(ctl.signal);
    $("#empty").hidden = body.spans_stored > 0;
    document.body.dataset.loaded = String(Date.now());
    document.body.dataset.step = String(body.step);
    document.body.dataset.range = `${start},${end}`;  // what was asked: a test asks the API the same
    $("#grid").setAttribute("aria-busy", "false");
    $("#status").textContent = `Updated ${fmtTime(Date.now() / 1000)} · step ${body.step}s`;
    if (alerts.error) $("#status").textContent += " · alerts not shown";
    $("#status").title = alerts.error ? `Alerts not shown: ${alerts.error}` : "";
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
  if (![...state.views.values()].some((v) => v.def.source === "scrape")) return;
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
  state.range = new RangePicker($("#range-picker"), () => changed());
  readUrl();
  setupControls();
  syncControls();
  try {
    const [boards, panels] = await Promise.all([buildNav(state.dashboard, state.range),
                                                fetch("api/v1/panels").then((r) => r.json())]);
    state.dashboards = boards;
    state.allPanels = panels;
  } catch (e) {
    showError(`Could not reach planoscope: ${e.message}`);
    return;
  }
  if (!state.dashboards.length) { showError("Could not list the dashboards (GET /api/v1/dashboards)"); return; }
  showDashboard(state.dashboard);
}

main();

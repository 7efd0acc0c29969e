// planoscope's dashboard: the panels of GET /api/v1/panels, filled from GET /api/v1/dashboard.
// No build step: plain modern JavaScript and uPlot. State (range, refresh) lives in the URL.
"use strict";

const FIXED = { blue: "#5794f2", red: "#f2495c" };
const REFRESH = { off: 0, "5s": 5, "10s": 10, "30s": 30, "1m": 60 };

const state = { range: null, refresh: "10s", panels: [], views: new Map(),
                timer: null, inflight: null, hidden: new Map() };

// --- formatting ---------------------------------------------------------------------------
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

// --- URL state and controls -----------------------------------------------------------------
function readUrl() {
  const p = new URLSearchParams(location.search);
  state.range.read(p);
  if (p.get("refresh") in REFRESH) state.refresh = p.get("refresh");
}
function writeUrl() {
  const p = new URLSearchParams();
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
}
function changed(reload = true) {
  writeUrl(); syncControls(); schedule();
  if (reload) refresh();
}
function schedule() {
  clearInterval(state.timer);
  const every = REFRESH[state.refresh];
  if (every && !state.range.custom) state.timer = setInterval(() => { if (!document.hidden) refresh(); }, every * 1000);
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
      <div class="body"></div><div class="truncated" hidden></div><div class="legend"></div>`;
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

// A panel with more groups than it draws (max_series_per_panel) says so under the chart.
const NOUNS = { llm_model: "models", agent_id: "agents", series: "series" };
function renderTruncated(view, data) {
  const note = view.el.querySelector(".truncated");
  const t = data.truncated;
  note.hidden = !t;
  if (!t) return;
  const noun = NOUNS[t.label] || `${t.label} values`;
  const rest = view.def.unit === "ms" ? "the rest together as other" : "the rest summed as other";
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
  return def.drilldown?.label === "llm_model" ? "(no model)" : "(none)";
}

// --- drill-down: a point, a legend row or a stat tile opens the matching traces -----------------
// failed: only the series' calls that failed (the panel's drilldown.failed filters), if it has any.
function drillUrl(def, series, start, end, failed = false) {
  const dd = def.drilldown;
  if (!dd || series?.labels?.other === "true") return null;  // "other" stands for many values: no one search
  if (failed && !dd.failed) return null;
  const p = new URLSearchParams({ from: String(start), to: String(end) });
  for (const [k, v] of Object.entries({ ...dd.filters, ...(failed ? dd.failed : {}) })) p.set(k, v);
  if (dd.by) {
    const value = series?.labels?.[dd.label];
    if (value) p.set(dd.by, value);
    else if (series) for (const [k, v] of Object.entries(dd.unset || {})) p.set(k, v);
  }
  if (dd.series && series) for (const [k, v] of Object.entries(dd.series[series.name] || {})) p.set(k, v);
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
            const d = Math.abs(u.valToPos(v, "y") - u.cursor.top);
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

function renderTimeseries(view, data, body, legend) {
  const def = view.def;
  const aligned = alignData(data.series);
  const key = data.series.map((s) => s.name).join("\u0000");
  view.data = data;
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
      plugins: [tooltipPlugin(def), drillPlugin(view)],
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
    const href = drillUrl(def, s, data.start, data.end);
    const failedHref = drillUrl(def, s, data.start, data.end, true);
    return `<tr data-i="${i}" class="${hidden.has(s.name) ? "off" : ""}" title="Click to show or hide; Shift-click to show only this">
      <td><span class="swatch" style="background:${colorFor(def, i, s.name)}"></span>${escapeHtml(s.name || noLabel(def))}</td>
      <td class="drill">${href ? `<a href="${href}" title="Traces of ${escapeHtml(s.name)} in this range">traces ↗</a>` : ""}${failedHref
        ? ` <a class="failed" href="${failedHref}" title="Failed calls of ${escapeHtml(s.name)} in this range (HTTP ≥ 400, before dispatch, status ERROR)">failed ↗</a>` : ""}</td>
      <td>${fmtUnit(mean, def.unit)}</td><td>${fmtUnit(max, def.unit)}</td><td>${fmtUnit(last, def.unit)}</td></tr>`;
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

function renderStat(view, data, body, legend) {
  destroyPlot(view);
  legend.innerHTML = "";
  if (!data.series.length) { body.innerHTML = `<div class="nodata">No data</div>`; return; }
  const tiles = data.series.map((s, i) => {
    const c = PALETTE[i % PALETTE.length];
    const v = s.points.length ? s.points[s.points.length - 1][1] : null;
    const href = drillUrl(view.def, s, data.start, data.end);
    return `<a class="stat" ${href ? `href="${href}" title="Traces of ${escapeHtml(s.name)} in this range"` : ""} style="background:linear-gradient(120deg, ${c}cc, ${c}66)">
      <div class="label">${escapeHtml(s.name || noLabel(view.def))}</div><div class="value">${fmtUnit(v, view.def.unit)}</div></a>`;
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
          `<div class="row"><span class="swatch" style="background:${color}"></span><span class="name">${escapeHtml(name || noLabel(def))}</span><b>${fmtUnit(v, def.unit)}</b></div>`).join("");
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
  state.range = new RangePicker($("#range-picker"), () => changed());
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

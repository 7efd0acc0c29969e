// Alerts on the dashboards. GET /api/v1/alerts (the live alerts, each with the panels it
// concerns) marks the header of those panels; GET /api/v1/alerts/annotations?start=&end= (every
// alert's pending and firing intervals over the range) is drawn on their charts as Grafana draws
// annotations: a translucent region across the plot, a marker under it with a tooltip. Both are
// read once per refresh, for every panel (fetchAlerts).
"use strict";

const ALERT_FILL = { firing: "rgba(242, 73, 92, 0.11)", pending: "rgba(255, 152, 48, 0.07)" };
const ALERT_EDGE = { firing: "rgba(242, 73, 92, 0.6)", pending: "rgba(255, 152, 48, 0.55)" };
// An alert's label under the name a panel's series carry it: the GenAI metrics' model and
// provider are the span panels' llm_model and llm_provider.
const LABEL_ALIASES = { gen_ai_request_model: "llm_model", gen_ai_provider_name: "llm_provider" };
const BELL = `<svg viewBox="0 0 16 16" aria-hidden="true"><path d="M8 1.5a4.2 4.2 0 0 0-4.2 4.2v2.7L2.4 11.2h11.2L12.2 8.4V5.7A4.2 4.2 0 0 0 8 1.5zM6.2 12.6a1.9 1.9 0 0 0 3.6 0z" fill="currentColor"/></svg>`;

// The live alerts and the range's intervals, both at once; a failure leaves the dashboard
// without alerts and says why (``error``), an abort is the caller's.
async function fetchAlerts(start, end, signal) {
  const get = async (url) => {
    try {
      const r = await fetch(url, { signal });
      const body = await r.json();
      return r.ok ? { body } : { error: body.detail || r.statusText };
    } catch (e) {
      if (e.name === "AbortError") throw e;
      return { error: e.message };
    }
  };
  const [live, ranged] = await Promise.all([get("api/v1/alerts"), get(`api/v1/alerts/annotations?start=${start}&end=${end}`)]);
  return {
    body: live.body,
    live: (live.body?.alerts || []).filter((a) => a.state === "firing" || a.state === "pending"),
    intervals: ranged.body?.annotations || [],
    error: ranged.error || live.error || "",
  };
}

// What of them concerns a panel: kept on its view for its header, chart and legend.
function alertsFor(view, alerts) {
  const id = view.def.id;
  view.alerts = alerts.live.filter((a) => a.panels.includes(id));
  view.intervals = alerts.intervals.filter((a) => a.panels.includes(id));
}

// The alerts whose labels a series has (under its own or its alias name) with the same values.
function seriesAlerts(view, series) {
  const labels = series?.labels || {};
  return (view.alerts || []).filter((a) => {
    let shared = 0;
    for (const [k, v] of Object.entries(a.labels)) {
      const key = k in labels ? k : LABEL_ALIASES[k] in labels ? LABEL_ALIASES[k] : null;
      if (key === null || k === "alertname") continue;
      if (labels[key] !== v) return false;
      shared++;
    }
    return shared > 0;
  });
}

// --- the panel's mark: how many alerts fire (or, if none, are pending), on hover which ---------
function renderAlertMark(view) {
  const mark = view.el.querySelector(".alert-mark");
  const alerts = view.alerts || [];
  const firing = alerts.filter((a) => a.state === "firing");
  const shown = firing.length ? firing : alerts;
  const st = firing.length ? "firing" : "pending";
  view.el.classList.toggle("alerting", firing.length > 0);
  mark.hidden = !shown.length;
  if (!shown.length) return;
  mark.className = `alert-mark ${st}`;
  mark.dataset.count = String(shown.length);
  mark.innerHTML = `${BELL}<span>${shown.length}</span>`;
  const names = [...new Set(shown.map((a) => a.rule))].join(", ");
  mark.setAttribute("aria-label", `${shown.length} alert${shown.length > 1 ? "s" : ""} ${st}: ${names}. Open the Alerts page`);
}

function setupAlertMark(view) {
  const mark = view.el.querySelector(".alert-mark");
  const show = () => {
    const r = mark.getBoundingClientRect();
    showAlertTip(r.left, r.bottom, markTip(view), true);
  };
  mark.addEventListener("mouseenter", show);
  mark.addEventListener("focus", show);
  mark.addEventListener("mouseleave", hideAlertTip);
  mark.addEventListener("blur", hideAlertTip);
}

function markTip(view) {
  const alerts = [...(view.alerts || [])].sort((a, b) => (a.state === b.state ? 0 : a.state === "firing" ? -1 : 1));
  const firing = alerts.filter((a) => a.state === "firing").length, pending = alerts.length - firing;
  const said = [firing && `${firing} firing`, pending && `${pending} pending`].filter(Boolean).join(", ");
  return `<div class="ann-tip-title">${alerts.length === 1 ? "An alert" : `${alerts.length} alerts`} on this panel: ${said}</div>`
    + alerts.map((a) => {
      const since = Date.parse(a.state === "firing" ? a.firedAt : a.activeAt) / 1000;
      return `<div class="ann-tip-alert">${tipHead(a.rule, a.state)}
        <div class="ann-tip-time">since ${fmtTime(since, true)} · ${fmtDuration(Date.now() - since * 1000)}</div>
        ${chipsOf(a.labels)}${a.annotations?.summary ? `<div class="ann-tip-text">${escapeHtml(a.annotations.summary)}</div>` : ""}</div>`;
    }).join("")
    + `<div class="ann-tip-foot">Click for the Alerts page</div>`;
}

function tipHead(rule, st) {
  return `<div class="ann-tip-head"><span class="alert-state ${st}">${st}</span><b>${escapeHtml(rule)}</b></div>`;
}
function chipsOf(labels) {
  const chips = labelChips(labels);
  return chips ? `<div class="ann-tip-labels">${chips}</div>` : "";
}

// A tooltip of its own: the charts' series tooltip hides and shows on its own schedule.
function alertTip() {
  let tip = $("#alert-tooltip");
  if (!tip) {
    tip = document.createElement("div");
    tip.id = "alert-tooltip";
    tip.className = "tooltip alert-tooltip";
    tip.hidden = true;
    document.body.appendChild(tip);
  }
  return tip;
}
// Below (x, y), kept on screen; ``alignLeft``: its left edge at x, else centred on x.
function showAlertTip(x, y, html, alignLeft = false) {
  const tip = alertTip();
  tip.innerHTML = html;
  tip.hidden = false;
  const w = tip.offsetWidth, h = tip.offsetHeight;
  const left = alignLeft ? x : x - w / 2;
  tip.style.left = Math.max(4, Math.min(innerWidth - w - 4, left)) + "px";
  tip.style.top = (y + 8 + h > innerHeight - 4 ? Math.max(4, y - h - 24) : y + 8) + "px";
}
function hideAlertTip() { alertTip().hidden = true; }

// --- the charts' annotations: a uPlot plugin ---------------------------------------------------
function annotationsPlugin(view) {
  return {
    hooks: {
      drawClear: (u) => drawRegions(u, view.intervals || []),  // under the grid and the series
      draw: (u) => placeMarkers(u, view),
      destroy: () => hideAlertTip(),
    },
  };
}

// An interval's part within the x scale, in the plot's CSS pixels (null: none of it).
function regionOf(u, a) {
  const { min, max } = u.scales.x;
  const s = Math.max(a.start, min), e = Math.min(a.end ?? max, max);
  if (e < s) return null;
  return { x0: u.valToPos(s, "x"), x1: u.valToPos(e, "x"), opensBefore: a.start < min, goesOn: a.end == null || a.end > max };
}

function drawRegions(u, intervals) {
  if (!intervals.length) return;
  const ctx = u.ctx, { left, top, width, height } = u.bbox, px = devicePixelRatio || 1;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  for (const a of intervals) {
    const r = regionOf(u, a);
    if (!r) continue;
    const x0 = left + r.x0 * px, x1 = left + r.x1 * px;
    ctx.fillStyle = ALERT_FILL[a.state] || ALERT_FILL.firing;
    ctx.fillRect(x0, top, Math.max(x1 - x0, px), height);
    ctx.strokeStyle = ALERT_EDGE[a.state] || ALERT_EDGE.firing;
    ctx.lineWidth = px;
    ctx.setLineDash([3 * px, 3 * px]);
    ctx.beginPath();
    if (!r.opensBefore) { ctx.moveTo(Math.round(x0) + px / 2, top); ctx.lineTo(Math.round(x0) + px / 2, top + height); }
    if (!r.goesOn) { ctx.moveTo(Math.round(x1) - px / 2, top); ctx.lineTo(Math.round(x1) - px / 2, top + height); }
    ctx.stroke();
  }
  ctx.restore();
}

// The markers under the plot, the narrowest on top; hovering the strip they are on lists every
// interval at that point (they overlap: an alert pending then firing, several at once).
function placeMarkers(u, view) {
  const wrap = u.root.querySelector(".u-wrap");
  let layer = wrap.querySelector(".ann-layer");
  if (!layer) {
    layer = document.createElement("div");
    layer.className = "ann-layer";
    wrap.appendChild(layer);
  }
  layer.replaceChildren();
  const left = u.over.offsetLeft, bottom = u.over.offsetTop + u.over.offsetHeight, width = u.over.offsetWidth;
  const shown = [];
  for (const a of view.intervals || []) {
    const r = regionOf(u, a);
    if (!r) continue;
    const w = Math.max(7, r.x1 - r.x0);
    shown.push({ a, x0: Math.max(0, Math.min(r.x0, width - w)), w });
  }
  shown.sort((p, q) => q.w - p.w || (p.a.state === "firing") - (q.a.state === "firing"));
  for (const { a, x0, w } of shown) {
    const m = document.createElement("div");
    m.className = `ann-mark ${a.state}`;
    m.dataset.rule = a.rule;
    m.dataset.state = a.state;
    Object.assign(m.style, { left: `${left + x0}px`, width: `${w}px`, top: `${bottom}px` });
    layer.appendChild(m);
  }
  view.el.dataset.annotations = String(shown.length);
  if (!shown.length) return;
  const strip = document.createElement("div");
  strip.className = "ann-strip";
  Object.assign(strip.style, { left: `${left}px`, width: `${width}px`, top: `${bottom}px` });
  const hover = (e) => {
    const x = e.clientX - strip.getBoundingClientRect().left;
    const here = shown.filter((m) => x >= m.x0 - 3 && x <= m.x0 + m.w + 3).map((m) => m.a)
      .sort((p, q) => p.start - q.start || (q.state === "firing") - (p.state === "firing") || p.rule.localeCompare(q.rule));
    if (!here.length) { hideAlertTip(); return; }
    showAlertTip(e.clientX, strip.getBoundingClientRect().bottom, here.map(annotationTip).join(""));
  };
  strip.addEventListener("mousemove", hover);
  strip.addEventListener("mouseenter", hover);
  strip.addEventListener("mouseleave", hideAlertTip);
  layer.appendChild(strip);
}

function annotationTip(a) {
  const end = a.end == null ? "now" : fmtTime(a.end, true);
  const took = ((a.end ?? Date.now() / 1000) - a.start) * 1000;
  return `<div class="ann-tip-alert">${tipHead(a.rule, a.state)}
    <div class="ann-tip-time">${fmtTime(a.start, true)} → ${end} · ${fmtDuration(took)}</div>${chipsOf(a.labels)}</div>`;
}

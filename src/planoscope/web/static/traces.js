// planoscope's trace search: the form's filters are GET /api/v1/traces' parameters, and the page's
// URL holds them (with the time range), so a search, or a drill-down from a dashboard panel, is a link.
"use strict";

const FILTERS = ["service", "name", "model", "agent", "min_duration", "max_duration"];
// Filters the form has no field for, set by the LLM Usage dashboard's drill-downs: kept in the
// URL and shown as chips above the results, each removable.
const EXTRA = { llm: "LLM calls", provider: "provider", route: "route", session: "session", quality: "quality",
                requested_model: "requested", resolved_model: "resolved", cost: "cost", flagged: "flagged 🚩" };
const state = { range: null, offset: 0, inflight: null, result: null, showInFlight: false, extra: {} };


// --- URL <-> form ---------------------------------------------------------------------------
function formToParams() {
  const p = new URLSearchParams();
  state.range.write(p);
  for (const f of FILTERS) {
    const v = $(`#search [name="${f}"]`).value.trim();
    if (v) p.set(f, v);
  }
  for (const [k, v] of Object.entries(state.extra)) p.set(k, v);
  for (const a of $("#f-attr").value.trim().split(/\s+/).filter(Boolean)) p.append("attr", a);
  // The failure picker: "any" is errors=true, a class (or several, comma-separated, from a URL) failure=.
  const failure = $("#f-failure").value;
  if (failure === "any") p.set("errors", "true");
  else for (const f of failure.split(",").filter(Boolean)) p.append("failure", f);
  if (state.showInFlight) p.set("in_flight", "true");
  const [sort, order] = $("#f-sort").value.split(":");
  if (sort !== "start" || order !== "desc") { p.set("sort", sort); p.set("order", order); }
  if ($("#f-limit").value !== "20") p.set("limit", $("#f-limit").value);
  if (state.offset) p.set("offset", String(state.offset));
  return p;
}

function ensureOption(select, value) {
  if (value && ![...select.options].some((o) => o.value === value)) select.add(new Option(value, value));
}

function paramsToForm(p) {
  state.range.read(p);
  for (const f of FILTERS) {
    const el = $(`#search [name="${f}"]`);
    if (el.tagName === "SELECT") ensureOption(el, p.get(f) || "");
    el.value = p.get(f) || "";
  }
  state.extra = Object.fromEntries(Object.keys(EXTRA).filter((k) => p.has(k)).map((k) => [k, p.get(k)]));
  renderExtra();
  $("#f-attr").value = p.getAll("attr").join(" ");
  const failure = p.getAll("failure").join(",") || (p.get("errors") === "true" ? "any" : "");
  ensureOption($("#f-failure"), failure);
  $("#f-failure").value = failure;
  state.showInFlight = p.get("in_flight") === "true";
  $("#f-sort").value = `${p.get("sort") || "start"}:${p.get("order") || "desc"}`;
  ensureOption($("#f-limit"), p.get("limit") || "20");
  $("#f-limit").value = p.get("limit") || "20";
  state.offset = Math.max(0, Number(p.get("offset")) || 0);
}

function renderExtra() {
  const box = $("#extra-filters");
  box.hidden = !Object.keys(state.extra).length;
  box.innerHTML = Object.entries(state.extra).map(([k, v]) => {
    const text = v === "true" ? EXTRA[k] : `${EXTRA[k]} = ${v}`;
    return `<span class="filter-chip" data-filter="${escapeHtml(k)}">${escapeHtml(text)}<button type="button"
      title="Remove this filter" aria-label="Remove the filter ${escapeHtml(text)}">×</button></span>`;
  }).join("");
}

// --- the pickers' values: GET /api/v1/traces/facets over the range ---------------------------
async function loadFacets() {
  const [start, end] = state.range.bounds();
  const r = await fetch(`api/v1/traces/facets?start=${start}&end=${end}`);
  if (!r.ok) return;
  const facets = await r.json();
  const all = { service: "All services", name: "All span names", model: "All models", agent: "All agents" };
  for (const [f, label] of Object.entries(all)) {
    const el = $(`#search [name="${f}"]`);
    const keep = el.value;
    el.innerHTML = "";
    el.add(new Option(label, ""));
    for (const v of facets[f] || []) el.add(new Option(`${v.value}  (${v.spans.toLocaleString("en-US")})`, v.value));
    ensureOption(el, keep);
    el.value = keep;
  }
}

// --- searching ------------------------------------------------------------------------------
async function search(push = false) {
  const p = formToParams();
  history[push ? "pushState" : "replaceState"](null, "", "?" + p.toString());
  const [start, end] = state.range.bounds();
  const q = new URLSearchParams(p);
  q.delete("range"); q.delete("from"); q.delete("to");
  q.set("start", String(start)); q.set("end", String(end));
  state.inflight?.abort();
  const ctl = new AbortController();
  state.inflight = ctl;
  $("#results").setAttribute("aria-busy", "true");
  const t0 = performance.now();
  try {
    const r = await fetch(`api/v1/traces?${q}`, { signal: ctl.signal });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    state.result = { ...body, start, end };
    render();
    $("#status").textContent = `${fmtNumber(performance.now() - t0, 0)} ms`;
    showError("");
  } catch (e) {
    if (e.name !== "AbortError") showError(`Search failed: ${e.message}`);
  } finally {
    if (state.inflight === ctl) state.inflight = null;
    $("#results").setAttribute("aria-busy", "false");
    document.body.dataset.loaded = String(Date.now());
  }
}

function render() {
  const { traces, total, limit, offset, in_flight: inFlight } = state.result;
  $("#count").textContent = total === 0 ? "No traces match"
    : `${total.toLocaleString("en-US")} trace${total === 1 ? "" : "s"} · showing ${offset + 1}–${offset + traces.length}`;
  // Traces whose root has not arrived yet are left out unless asked for: the newest traces are
  // otherwise a wall of fragments (Plano exports children first).
  const toggle = $("#in-flight");
  toggle.hidden = !inFlight;
  toggle.textContent = state.showInFlight ? `hide ${inFlight.toLocaleString("en-US")} in flight`
    : `${inFlight.toLocaleString("en-US")} trace${inFlight === 1 ? "" : "s"} in flight — show`;
  toggle.setAttribute("aria-pressed", String(state.showInFlight));
  $("#prev").disabled = offset === 0;
  $("#next").disabled = offset + traces.length >= total;
  const sort = $("#f-sort").value;
  $("#prev").textContent = sort.startsWith("start") ? "‹ Newer" : "‹ Previous";
  $("#next").textContent = sort.startsWith("start") ? "Older ›" : "Next ›";
  renderScatter(traces);
  renderList(traces);
}

function traceHref(t) { return `trace?id=${t.trace_id}`; }

// What took the request: for an agent trace the listener (its orchestrator span), the root's
// service and name beside it (the root is always Envoy's POST /v1/chat/completions there).
function entry(t) {
  const color = serviceColor(t.root_service);
  if (t.listener) {
    return `<span class="svc" style="--c:${serviceColor("plano(orchestrator)")}">${escapeHtml(t.listener)}</span>
      <span class="root-name entry-root" title="The root span">${escapeHtml(t.root_service)} ${richText(t.root_name)}</span>`;
  }
  return `<span class="svc" style="--c:${color}">${escapeHtml(t.root_service)}</span>
    <span class="root-name">${richText(t.root_name)}</span>`;
}

function failureBadges(t) {
  return Object.entries(t.failures || {}).filter(([, n]) => n).map(([c, n]) =>
    `<span class="badge error" data-failure="${escapeHtml(c)}" title="${n} failed span${n > 1 ? "s" : ""}: ${escapeHtml(FAILURE_TITLES[c] || c)}">${escapeHtml(FAILURE_BADGES[c] || c)}${n > 1 ? ` ×${n}` : ""}</span>`).join("");
}

function renderList(traces) {
  const list = $("#list");
  if (!traces.length) {
    list.innerHTML = `<div class="no-results">No trace in this range matches these filters.
      Widen the time range or remove a filter.</div>`;
    return;
  }
  const longest = Math.max(...traces.map((t) => t.duration_ms), 1e-9);
  list.innerHTML = traces.map((t) => {
    const color = serviceColor(t.root_service);
    const models = t.models.map((m) => `<span class="chip" title="model">${escapeHtml(m)}</span>`).join("");
    const agents = (t.agents || []).map((a) => `<span class="chip agent" title="agent">${escapeHtml(a)}</span>`).join("");
    const badges = failureBadges(t)
      + (t.in_flight ? `<span class="badge warn in-flight" title="The root span has not arrived yet; the newest span came in the last seconds">in flight</span>`
        : t.has_root ? "" : `<span class="badge warn" title="The root span has not arrived">no root</span>`);
    const usage = [t.tokens != null ? `${fmtNumber(t.tokens, 0)} tokens` : "", t.cost_usd != null ? fmtCost(t.cost_usd) : ""]
      .filter(Boolean).join(" · ");
    return `<a class="trace-row${t.error_count ? " has-error" : ""}" href="${traceHref(t)}" data-trace-id="${t.trace_id}">
      <div class="line1">${entry(t)}${badges}
        <span class="dur">${fmtDuration(t.duration_ms)}</span></div>
      <div class="bar"><span style="width:${Math.max(0.5, (100 * t.duration_ms) / longest)}%;background:${color}"></span></div>
      <div class="line2"><span>${t.span_count} span${t.span_count > 1 ? "s" : ""}</span>
        <span class="services">${t.services.map((s) => `<i style="background:${serviceColor(s)}" title="${escapeHtml(s)}"></i>`).join("")}</span>
        ${agents}${models}<span class="usage">${usage}</span>
        <span class="when" title="${new Date(t.start * 1000).toISOString()}">${fmtTime(t.start, true)}</span>
        <code class="tid">${t.trace_id.slice(0, 12)}…</code></div>
    </a>`;
  }).join("");
}

// The scatter of the page's traces: start time across, duration up, errors in red; a dot opens its trace.
function renderScatter(traces) {
  const svg = $("#scatter");
  const w = svg.clientWidth || 800, h = svg.clientHeight || 150;
  const pad = { l: 56, r: 12, t: 10, b: 22 };
  // Across: the page's traces (padded), not the whole range, where a page of recent traces is a sliver.
  const starts = traces.map((t) => t.start);
  let start = Math.min(...starts), end = Math.max(...starts);
  if (!traces.length) [start, end] = [state.result.start, state.result.end];
  const padS = Math.max((end - start) * 0.04, 0.5);
  start -= padS; end += padS;
  const maxMs = Math.max(...traces.map((t) => t.duration_ms), 1);
  const x = (s) => pad.l + ((s - start) / (end - start)) * (w - pad.l - pad.r);
  const y = (ms) => h - pad.b - (ms / maxMs) * (h - pad.t - pad.b);
  const ticks = [0, 0.5, 1].map((f) => `<line x1="${pad.l}" x2="${w - pad.r}" y1="${y(maxMs * f)}" y2="${y(maxMs * f)}" class="grid"/>
    <text x="${pad.l - 6}" y="${y(maxMs * f) + 4}" text-anchor="end">${fmtDuration(maxMs * f)}</text>`).join("");
  const xt = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const s = start + f * (end - start);
    return `<text x="${x(s)}" y="${h - 6}" text-anchor="${f === 0 ? "start" : f === 1 ? "end" : "middle"}">${fmtTime(s, end - start > 86400)}</text>`;
  }).join("");
  const dots = traces.map((t, i) => `<circle class="dot${t.error_count ? " error" : ""}" data-i="${i}" cx="${x(t.start).toFixed(1)}"
    cy="${y(t.duration_ms).toFixed(1)}" r="${Math.min(9, 3 + Math.sqrt(t.span_count))}"
    style="--c:${t.error_count ? "#f2495c" : serviceColor(t.root_service)}"/>`).join("");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.innerHTML = ticks + xt + dots;
}

function setupScatter() {
  const svg = $("#scatter"), tip = $("#tooltip");
  svg.addEventListener("mousemove", (e) => {
    const dot = e.target.closest("circle");
    if (!dot) { tip.hidden = true; return; }
    const t = state.result.traces[Number(dot.dataset.i)];
    tip.innerHTML = `<div class="time">${fmtTime(t.start, true)}</div>
      <div class="row"><b>${escapeHtml(t.listener || t.root_service)}</b>&nbsp;${escapeHtml(t.listener ? (t.agents || []).join(", ") : t.root_name)}</div>
      <div class="row">${fmtDuration(t.duration_ms)} · ${t.span_count} spans${t.error_count ? ` · ${t.error_count} failed` : ""}</div>`;
    tip.hidden = false;
    tip.style.left = Math.min(innerWidth - tip.offsetWidth - 8, e.clientX + 14) + "px";
    tip.style.top = e.clientY + 14 + "px";
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
  svg.addEventListener("click", (e) => {
    const dot = e.target.closest("circle");
    if (dot) location.href = traceHref(state.result.traces[Number(dot.dataset.i)]);
  });
  new ResizeObserver(() => state.result && renderScatter(state.result.traces)).observe(svg);
}

// --- wiring ---------------------------------------------------------------------------------
function openTraceId() {
  const id = $("#f-trace-id").value.trim().toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(id)) { showError(`"${id}" is not a trace id: 32 hex digits.`); return; }
  location.href = `trace?id=${id}`;
}

async function main() {
  state.range = new RangePicker($("#range-picker"), async () => { state.offset = 0; await loadFacets(); search(true); });
  paramsToForm(new URLSearchParams(location.search));
  $("#search").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; search(true); });
  $("#f-open").addEventListener("click", openTraceId);
  $("#f-trace-id").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); openTraceId(); } });
  $("#extra-filters").addEventListener("click", (e) => {
    const chip = e.target.closest("button") && e.target.closest(".filter-chip");
    if (!chip) return;
    delete state.extra[chip.dataset.filter];
    renderExtra();
    state.offset = 0;
    search(true);
  });
  $("#in-flight").addEventListener("click", () => { state.showInFlight = !state.showInFlight; state.offset = 0; search(true); });
  for (const el of document.querySelectorAll("#search select")) {
    el.addEventListener("change", () => { state.offset = 0; search(true); });
  }
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.result.limit); search(true); });
  $("#next").addEventListener("click", () => { state.offset += state.result.limit; search(true); });
  addEventListener("popstate", () => { paramsToForm(new URLSearchParams(location.search)); search(); });
  setupScatter();
  buildNav("traces", state.range);
  await loadFacets();
  await search();
}

main();

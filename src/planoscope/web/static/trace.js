// planoscope's trace view: GET /api/v1/traces/{id} (OTLP/JSON) drawn as a waterfall of the span
// tree, with the critical path marked and a detail pane for the selected span (?span= in the URL).
"use strict";

const state = { spans: [], byId: new Map(), roots: [], start: 0, end: 0, collapsed: new Set(), selected: null,
                critical: new Set() };

// Which spans failed, and why, comes from the server (GET /api/v1/traces/{id}/failures: the one
// definition the search and the counts use), not from the span status: brightstaff never sets one.
const failureBadge = (f) =>
  `<span class="fail-badge" data-failure="${escapeHtml(f.class)}" title="${escapeHtml(f.reason)}">${escapeHtml(FAILURE_BADGES[f.class] || f.class)}</span>`;

// Attribute values keep their OTLP types. attrMap gives the values to compute with: strings,
// numbers (an int beyond 2^53 as a BigInt), booleans, arrays, objects, null for an empty value.
// The first of a repeated key wins, as planoscope reads attributes (Plano sends llm.model twice:
// the configured provider/model, then the model the upstream reported); the tables show both.
const attrMap = (kvs) => {
  const m = {};
  for (const a of kvs || []) if (!(a.key in m)) m[a.key] = anyValue(a.value);
  return m;
};
function anyValue(v) {
  if (!v) return null;
  if ("stringValue" in v) return v.stringValue;
  if ("intValue" in v) { const n = Number(v.intValue); return Number.isSafeInteger(n) ? n : BigInt(v.intValue); }
  if ("doubleValue" in v) return Number(v.doubleValue);  // "NaN", "Infinity", "-Infinity" as OTLP/JSON writes them
  if ("boolValue" in v) return v.boolValue;
  if ("bytesValue" in v) return v.bytesValue;
  if ("arrayValue" in v) return (v.arrayValue.values || []).map(anyValue);
  if ("kvlistValue" in v) return attrMap(v.kvlistValue.values);
  return null;
}
// A value as shown: numbers and booleans as themselves (no quotes, in their own colour, the type
// in the tooltip), bytes as base64, arrays and maps spelled out, a map as a nested table.
function valueHtml(v, inner = false) {
  if (!v || !Object.keys(v).length) return `<span class="v-empty" title="empty value">(empty)</span>`;
  if ("stringValue" in v) {
    return inner ? `<span class="v-str" title="string">${escapeHtml(JSON.stringify(v.stringValue))}</span>` : escapeHtml(v.stringValue);
  }
  if ("intValue" in v) return `<span class="v-num" title="int">${escapeHtml(String(v.intValue))}</span>`;
  if ("doubleValue" in v) {
    const d = Number(v.doubleValue);
    return `<span class="v-num" title="double">${Object.is(d, -0) ? "-0" : String(d)}</span>`;
  }
  if ("boolValue" in v) return `<span class="v-bool" title="bool">${v.boolValue}</span>`;
  if ("bytesValue" in v) return `<span class="v-bytes" title="bytes, base64">${escapeHtml(v.bytesValue)}</span>`;
  if ("arrayValue" in v) {
    const items = (v.arrayValue.values || []).map((x) => valueHtml(x, true));
    return `<span class="v-array" title="array">[${items.join(", ")}]</span>`;
  }
  if ("kvlistValue" in v) {
    const kvs = v.kvlistValue.values || [];
    return kvs.length ? kvTable(kvs, "nested") : `<span class="v-array" title="map">{}</span>`;
  }
  return `<span class="v-empty">${escapeHtml(JSON.stringify(v))}</span>`;
}
// Every attribute as sent, by key (a repeated key keeps its values in the order sent).
function kvTable(kvs, cls = "") {
  const sorted = [...kvs].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return `<table class="kv ${cls}"><tbody>${sorted.map((a) =>
    `<tr><th>${escapeHtml(a.key)}</th><td>${valueHtml(a.value)}</td></tr>`).join("")}</tbody></table>`;
}
const KINDS = ["Unspecified", "Internal", "Server", "Client", "Producer", "Consumer"];
const STATUS = ["Unset", "Ok", "Error"];

// --- the model: OTLP/JSON → spans with children, depth, critical path --------------------------
function load(doc) {
  const spans = [];
  for (const rs of doc.resourceSpans) {
    const resource = attrMap(rs.resource?.attributes);
    for (const ss of rs.scopeSpans) {
      for (const s of ss.spans) {
        spans.push({
          id: s.spanId, parent: s.parentSpanId || "", name: s.name, service: resource["service.name"] || "unknown",
          start: Number(BigInt(s.startTimeUnixNano) / 1000n) / 1e3, end: Number(BigInt(s.endTimeUnixNano) / 1000n) / 1e3,
          kind: KINDS[s.kind] || "Unspecified", status: STATUS[s.status?.code || 0], message: s.status?.message || "",
          attrs: attrMap(s.attributes), resource, scope: ss.scope || {}, traceState: s.traceState || "",
          kvs: s.attributes || [], resourceKvs: rs.resource?.attributes || [],
          events: (s.events || []).map((e) => ({ t: Number(BigInt(e.timeUnixNano) / 1000n) / 1e3, name: e.name, attrs: attrMap(e.attributes), kvs: e.attributes || [] })),
          links: s.links || [], children: [],
        });
      }
    }
  }
  // start/end in ms since the epoch
  const byId = new Map(spans.map((s) => [s.id, s]));
  const roots = [];
  for (const s of spans) {
    const p = s.parent && byId.get(s.parent);
    if (p) p.children.push(s);
    else { s.orphan = Boolean(s.parent); roots.push(s); }
  }
  const byStart = (a, b) => a.start - b.start || a.end - b.end;
  for (const s of spans) s.children.sort(byStart);
  roots.sort((a, b) => (a.orphan - b.orphan) || byStart(a, b));
  Object.assign(state, { spans, byId, roots, start: Math.min(...spans.map((s) => s.start)),
                         end: Math.max(...spans.map((s) => s.end)) });
  // The critical path: from each root, follow the child that finishes last (what the parent waited on).
  state.critical = new Set();
  for (const r of roots) {
    for (let s = r; s; s = s.children.reduce((a, c) => (!a || c.end > a.end ? c : a), null)) state.critical.add(s.id);
  }
}

function visibleRows() {
  const out = [];
  const walk = (s, depth) => {
    out.push([s, depth]);
    if (!state.collapsed.has(s.id)) for (const c of s.children) walk(c, depth + 1);
  };
  for (const r of state.roots) walk(r, 0);
  return out;
}

// --- drawing --------------------------------------------------------------------------------
function pct(ms) { return (100 * (ms - state.start)) / Math.max(state.end - state.start, 1e-6); }

function renderHead() {
  const root = state.roots[0];
  const failed = state.spans.filter((s) => s.failure);
  $("#title").textContent = `${root.service}: ${root.name}`;
  document.title = `${root.name} · Trace · planoscope`;
  const models = [...new Set(state.spans.map((s) => s.attrs["llm.model"] || s.attrs["gen_ai.request.model"]).filter(Boolean))];
  const tokens = state.spans.reduce((a, s) => a + (Number(s.attrs["llm.usage.total_tokens"]) || 0), 0);
  const cost = state.spans.reduce((a, s) => a + (Number(s.attrs["llm.usage.total_cost_usd"]) || 0), 0);
  const items = [
    ["Trace", `<code>${escapeHtml(state.traceId)}</code>`],
    ["Started", fmtTime(state.start / 1000, true)],
    ["Duration", fmtDuration(state.end - state.start)],
    ["Spans", String(state.spans.length)],
    ["Failed", failed.length ? failedSummary(failed) : "0"],
  ];
  if (models.length) items.push(["Models", models.map((m) => `<span class="chip">${escapeHtml(m)}</span>`).join("")]);
  if (tokens) items.push(["Tokens", fmtNumber(tokens, 0)]);
  if (cost) items.push(["Cost", fmtCost(cost)]);
  if (state.roots.some((r) => r.orphan)) items.push(["", `<span class="badge warn">parent spans missing</span>`]);
  $("#meta").innerHTML = items.map(([k, v]) => `<div><span class="k">${k}</span><span class="v">${v}</span></div>`).join("");
  const counts = {};
  for (const s of state.spans) counts[s.service] = (counts[s.service] || 0) + 1;
  $("#services").innerHTML = Object.entries(counts).map(([svc, n]) =>
    `<span class="svc-chip"><i style="background:${serviceColor(svc)}"></i>${escapeHtml(svc)} <b>${n}</b></span>`).join("");
  const span = state.end - state.start;
  $("#axis").innerHTML = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    `<span style="left:${f * 100}%" class="${f === 1 ? "last" : ""}">${fmtDuration(span * f)}</span>`).join("");
}

// "3" then a badge per class with its count when there are several: 2 × 429, 1 × 5xx.
function failedSummary(failed) {
  const byClass = new Map();
  for (const s of failed) byClass.set(s.failure.class, [...(byClass.get(s.failure.class) || []), s]);
  return `<span class="badge error" id="failed-count">${failed.length}</span>` + [...byClass.values()].map((ss) =>
    `${ss.length > 1 ? `<span class="times">${ss.length} ×</span>` : ""}${failureBadge(ss[0].failure)}`).join("");
}

function renderRows() {
  const rows = visibleRows();
  $("#rows").innerHTML = rows.map(([s, depth]) => {
    const left = pct(s.start), width = Math.max(pct(s.end) - left, 0.15);
    const color = serviceColor(s.service);
    const toggle = s.children.length
      ? `<button type="button" class="toggle" aria-expanded="${!state.collapsed.has(s.id)}" aria-label="Collapse or expand">${state.collapsed.has(s.id) ? "▸" : "▾"}</button>`
      : `<span class="toggle-space"></span>`;
    const hidden = state.collapsed.has(s.id) ? `<span class="hidden-count">+${countDescendants(s)}</span>` : "";
    const labelRight = left + width > 80;
    const events = s.events.map((e) => `<i class="ev" style="left:${pct(e.t)}%" title="${escapeHtml(e.name)}"></i>`).join("");
    return `<div class="wf-row${s.id === state.selected ? " selected" : ""}${s.failure ? " error" : ""}${state.critical.has(s.id) ? " critical" : ""}"
        data-span-id="${s.id}"${s.failure ? ` data-failure="${escapeHtml(s.failure.class)}"` : ""} role="button" tabindex="0">
      <div class="wf-name" style="padding-left:${8 + depth * 16}px">${toggle}
        <i class="svc-bar" style="background:${color}"></i>
        <span class="svc-name">${escapeHtml(s.service)}</span>
        <span class="span-name">${richText(s.name)}</span>${s.failure ? failureBadge(s.failure) : ""}${s.orphan ? `<span class="badge warn" title="Parent ${s.parent} has not arrived">parent missing</span>` : ""}${hidden}
      </div>
      <div class="wf-track">
        <div class="wf-bar" style="left:${left}%;width:${width}%;background:${color}">${events}</div>
        <span class="wf-dur${labelRight ? " inside" : ""}" style="${labelRight ? `right:${100 - left}%` : `left:${left + width}%`}">${fmtDuration(s.end - s.start)}</span>
      </div>
    </div>`;
  }).join("");
}

function countDescendants(s) { return s.children.reduce((n, c) => n + 1 + countDescendants(c), 0); }

function table(title, kvs, cls = "") {
  if (!kvs || !kvs.length) return "";
  return `${title ? `<h3>${title}</h3>` : ""}${kvTable(kvs, cls)}`;
}

function llmSummary(a) {
  const model = a["llm.model"] || a["gen_ai.request.model"];
  if (!model) return "";
  const tiles = [
    ["Model", model], ["Provider", a["llm.provider"] || a["gen_ai.system"] || "–"],
    ["Streaming", a["llm.is_streaming"] ?? "–"],
    ["Time to first token", a["llm.time_to_first_token"] != null ? fmtDuration(Number(a["llm.time_to_first_token"])) : "–"],
    ["Prompt tokens", a["llm.usage.prompt_tokens"] ?? a["gen_ai.usage.input_tokens"] ?? "–"],
    ["Completion tokens", a["llm.usage.completion_tokens"] ?? a["gen_ai.usage.output_tokens"] ?? "–"],
    ["Total tokens", a["llm.usage.total_tokens"] ?? "–"],
    ["Cost", a["llm.usage.total_cost_usd"] != null ? fmtCost(Number(a["llm.usage.total_cost_usd"])) : "–"],
  ];
  return `<div class="llm-card" id="llm-summary"><h3>LLM call</h3><div class="tiles">${tiles.map(([k, v]) =>
    `<div><span class="k">${k}</span><span class="v">${escapeHtml(v)}</span></div>`).join("")}</div></div>`;
}

function renderDetail() {
  const el = $("#detail");
  const s = state.byId.get(state.selected);
  if (!s) { el.hidden = true; return; }
  el.hidden = false;
  const status = s.failure
    ? `<div class="status-box error" id="failure">${failureBadge(s.failure)} <b>Failed:</b> ${escapeHtml(s.failure.reason)}</div>`
    : s.message ? `<div class="status-box">${escapeHtml(s.status)}: ${escapeHtml(s.message)}</div>` : "";
  const facts = {
    "Service": s.service, "Duration": fmtDuration(s.end - s.start), "Starts at": "+" + fmtDuration(s.start - state.start),
    "Span id": s.id, "Parent id": s.parent || "(root)", "Kind": s.kind, "Status": s.status,
    "Scope": [s.scope.name, s.scope.version].filter(Boolean).join(" ") || "–",
  };
  if (s.traceState) facts["Trace state"] = s.traceState;
  const events = s.events.length ? `<h3>Events</h3>${s.events.map((e) => `<div class="event"><span class="t">+${fmtDuration(e.t - s.start)}</span>
      <b>${escapeHtml(e.name)}</b>${table("", e.kvs)}</div>`).join("")}` : "";
  const links = s.links.length ? `<h3>Links</h3>${s.links.map((l) => `<div class="link"><a href="trace?id=${escapeHtml(l.traceId)}&span=${escapeHtml(l.spanId)}"><code>${escapeHtml(l.traceId)}</code> / <code>${escapeHtml(l.spanId)}</code></a>${table("", l.attributes)}</div>`).join("")}` : "";
  el.innerHTML = `<header><i class="svc-bar" style="background:${serviceColor(s.service)}"></i><h2>${richText(s.name)}</h2>
      <button type="button" class="icon close" id="close-detail" aria-label="Close">×</button></header>
    ${status}${llmSummary(s.attrs)}
    <table class="kv facts"><tbody>${Object.entries(facts).map(([k, v]) => `<tr><th>${k}</th><td>${escapeHtml(v)}</td></tr>`).join("")}</tbody></table>
    ${table("Span attributes", s.kvs, "span-attrs")}${table("Resource attributes", s.resourceKvs, "resource-attrs")}${table("Scope attributes", s.scope.attributes, "scope-attrs")}${events}${links}`;
  $("#close-detail").onclick = () => select(null);
}

function select(id) {
  state.selected = id;
  const p = new URLSearchParams(location.search);
  if (id) p.set("span", id); else p.delete("span");
  history.replaceState(null, "", "?" + p.toString());
  renderRows();
  renderDetail();
}

function setup() {
  $("#rows").addEventListener("click", (e) => {
    const row = e.target.closest(".wf-row");
    if (!row) return;
    const id = row.dataset.spanId;
    if (e.target.closest(".toggle")) {
      if (state.collapsed.has(id)) state.collapsed.delete(id); else state.collapsed.add(id);
      renderRows();
      return;
    }
    select(state.selected === id ? null : id);
  });
  $("#rows").addEventListener("keydown", (e) => {
    const row = e.target.closest(".wf-row");
    if (row && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); select(row.dataset.spanId); }
  });
  $("#expand-all").onclick = () => { state.collapsed.clear(); renderRows(); };
  $("#collapse-all").onclick = () => {
    state.collapsed = new Set(state.spans.filter((s) => s.children.length && !state.roots.includes(s)).map((s) => s.id));
    renderRows();
  };
  if (document.referrer.includes("/traces")) $("#back").href = document.referrer;
}

async function main() {
  const p = new URLSearchParams(location.search);
  const id = (p.get("id") || "").trim().toLowerCase();
  state.traceId = id;
  setup();
  buildNav("traces");
  try {
    const [r, rf] = await Promise.all([fetch(`api/v1/traces/${encodeURIComponent(id)}`),
                                       fetch(`api/v1/traces/${encodeURIComponent(id)}/failures`)]);
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    load(body);
    const failures = rf.ok ? await rf.json() : {};  // spans that arrived in between are not in it: not marked
    for (const s of state.spans) s.failure = failures[s.id] || null;
    $("#download").href = `api/v1/traces/${id}`;
    $("#download").setAttribute("download", `trace-${id}.json`);
    $("#head").hidden = false;
    $("#body").hidden = false;
    renderHead();
    state.selected = state.byId.has(p.get("span")) ? p.get("span") : null;
    renderRows();
    renderDetail();
  } catch (e) {
    showError(id ? `Could not load trace ${id}: ${e.message}` : "No trace id: open a trace from the search page.");
  } finally {
    document.body.dataset.loaded = String(Date.now());
  }
}

main();

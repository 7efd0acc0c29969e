// planoscope's session page: GET /api/v1/sessions/{id}, the conversation turn by turn. A turn is
// one request (one trace): its LLM calls (an agent's request makes several), each linked to its
// span in the trace view. The page is /sessions/{id}, the id URL-encoded in its last segment.
"use strict";

const state = { session: null, turns: [] };

function sessionId() {
  const path = location.pathname;
  return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
}

// Consecutive calls of one trace are one turn.
function turnsOf(calls) {
  const turns = [];
  for (const c of calls) {
    const last = turns[turns.length - 1];
    if (last && last.trace_id === c.trace_id) last.calls.push(c);
    else turns.push({ trace_id: c.trace_id, start: c.start, calls: [c] });
  }
  for (const t of turns) {
    t.end = Math.max(...t.calls.map((c) => c.start + c.duration_ms / 1000));
    t.preview = t.calls.map((c) => c.user_message_preview).find(Boolean) || null;
    t.failed = t.calls.some((c) => c.failure_class);
  }
  return turns;
}

function sum(calls, key) {
  const known = calls.map((c) => c[key]).filter((v) => v != null);
  return known.length ? known.reduce((a, b) => a + b, 0) : null;
}

function renderHead() {
  const { session_id: id, user_id: user, calls } = state.session;
  const first = calls[0].start, last = Math.max(...calls.map((c) => c.start + c.duration_ms / 1000));
  const failed = calls.filter((c) => c.failure_class).length;
  const models = [...new Set(calls.map((c) => c.model).filter(Boolean))];
  const routes = [...new Set(calls.map((c) => c.route).filter(Boolean))];
  const cost = sum(calls, "cost_usd"), estimated = calls.some((c) => c.cost_estimated);
  const tile = (k, v, id) => `<div${id ? ` id="${id}"` : ""}><span class="k">${k}</span><span class="v">${v}</span></div>`;
  $("#title").textContent = id;
  $("#title").title = id;
  document.title = `Session ${id} · planoscope`;
  $("#meta").innerHTML = [
    tile("User", user ? `<a href="../sessions?${new URLSearchParams({ user, range: "7d" })}" title="This user's sessions">${escapeHtml(user)}</a>` : `<span class="muted">unknown</span>`, "m-user"),
    tile("Turns", `${fmtInt(state.turns.length)} <span class="muted">· ${fmtInt(calls.length)} LLM call${calls.length === 1 ? "" : "s"}</span>`, "m-turns"),
    tile("Started", `<span title="${new Date(first * 1000).toISOString()}">${fmtTime(first, true)}</span>`),
    tile("Duration", fmtDuration((last - first) * 1000)),
    tile("Tokens in / out", tokensText(sum(calls, "input_tokens"), sum(calls, "output_tokens"), sum(calls, "cached_input_tokens")), "m-tokens"),
    tile("Cost", costHtml(cost, estimated), "m-cost"),
    tile("Failed", failed ? `<span class="badge error">${failed}</span>` : "0", "m-failed"),
  ].join("");
  $("#tags").innerHTML = [
    tile("Models", models.map((m) => `<span class="chip">${escapeHtml(m)}</span>`).join("") || "–", "m-models"),
    tile("Routes", routes.map((r) => `<span class="chip route">${escapeHtml(r)}</span>`).join("") || "–", "m-routes"),
  ].join("");
  $("#head").hidden = false;
}

// The calls over time: a bar per call at its start, as high as its tokens; failed ones red.
function renderTimeline() {
  const calls = state.session.calls;
  const svg = $("#timeline");
  const w = svg.clientWidth || 1000, h = svg.clientHeight || 86;
  const pad = { l: 56, r: 14, t: 8, b: 20 };
  const start = calls[0].start, end = Math.max(...calls.map((c) => c.start + c.duration_ms / 1000));
  const span = Math.max(end - start, 1);
  const x = (s) => pad.l + ((s - start) / span) * (w - pad.l - pad.r);
  const tokens = (c) => (c.input_tokens || 0) + (c.output_tokens || 0);
  const top = Math.max(...calls.map(tokens), 1);
  const y = (n) => h - pad.b - (n / top) * (h - pad.t - pad.b);
  const grid = [0, 1].map((f) => `<line class="grid" x1="${pad.l}" x2="${w - pad.r}" y1="${y(top * f)}" y2="${y(top * f)}"/>
    <text x="${pad.l - 6}" y="${y(top * f) + 4}" text-anchor="end">${f ? fmtNumber(top, 0) : "0"}</text>`).join("");
  const ticks = [0, 0.5, 1].map((f) => `<text x="${x(start + f * span)}" y="${h - 5}"
    text-anchor="${f === 0 ? "start" : f === 1 ? "end" : "middle"}">${fmtTime(start + f * span, span > 86400)}</text>`).join("");
  const turnOf = new Map(state.turns.flatMap((t, i) => t.calls.map((c) => [c.span_id, i])));
  // A failed call (usually no tokens) gets a faint band the height of the chart, so it can be seen.
  const bars = calls.map((c, i) => {
    const x0 = x(c.start), x1 = Math.max(x0 + 3, x(c.start + c.duration_ms / 1000));
    const y0 = tokens(c) ? y(tokens(c)) : h - pad.b - 4;
    const attrs = `data-i="${i}" data-turn="${turnOf.get(c.span_id)}" x="${x0.toFixed(1)}" width="${(x1 - x0).toFixed(1)}"`;
    const band = c.failure_class ? `<rect class="call band" ${attrs} y="${pad.t}" height="${h - pad.b - pad.t}"/>` : "";
    return `${band}<rect class="call${c.failure_class ? " failed" : ""}" ${attrs} y="${y0.toFixed(1)}" height="${(h - pad.b - y0).toFixed(1)}" rx="1"/>`;
  }).join("");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.innerHTML = grid + ticks + `<text class="axis-title" x="${pad.l}" y="${pad.t + 2}" dx="6">tokens per call</text>` + bars;
  $("#timeline-box").hidden = false;
}

function statusHtml(c) {
  if (c.failure_class) {
    const badge = FAILURE_BADGES[c.failure_class] || c.failure_class;
    return `<span class="badge error" data-failure="${escapeHtml(c.failure_class)}" title="${escapeHtml(FAILURE_TITLES[c.failure_class] || c.failure_class)}">${escapeHtml(badge)}</span>`;
  }
  return c.status_code != null ? `<span class="ok" title="HTTP status">${c.status_code}</span>` : `<span class="muted">–</span>`;
}

function callHtml(c) {
  const route = c.route ? `<span class="chip route" title="plano.route.name">${escapeHtml(c.route)}</span>` : "";
  // Plano's 🚩, drawn: a font without emoji shows a box.
  const flag = c.flagged ? `<svg class="flag" viewBox="0 0 12 14" role="img" aria-label="flagged"><title>Plano flagged this turn's signals as concerning (🚩)</title>
    <path d="M2 1v12" stroke="currentColor" stroke-width="1.4"/><path d="M2.7 1.5h7.6l-2 2.75 2 2.75H2.7z" fill="#f2495c"/></svg>` : "";
  const metric = (k, v, cls = "") => `<span class="m ${cls}"><em>${k}</em>${v}</span>`;
  return `<div class="call-row" data-span-id="${escapeHtml(c.span_id)}">
    <span class="model">${modelHtml(c)}${route}</span>
    ${metric("tokens", tokensText(c.input_tokens, c.output_tokens, c.cached_input_tokens), "tokens")}
    ${metric("cost", costHtml(c.cost_usd, c.cost_estimated), "cost-m")}
    ${metric("TTFT", c.ttft_ms == null ? "–" : fmtDuration(c.ttft_ms), "ttft")}
    ${metric("took", fmtDuration(c.duration_ms), "took")}
    <span class="m code">${statusHtml(c)}</span>
    <span class="m quality-m">${qualityChip(c.signals_quality)}${flag}</span>
    <a class="trace-link" href="../trace?${new URLSearchParams({ id: c.trace_id, span: c.span_id })}" title="Open this call in its trace">Trace ›</a>
  </div>`;
}

function renderTurns() {
  let prev = null;
  // A sender that sends no preview at all (not Plano) gets no empty bubble on every turn.
  const previews = state.turns.some((t) => t.preview);
  $("#turns").innerHTML = state.turns.map((t, i) => {
    const gap = prev == null ? "" : t.start > prev
      ? `<span class="gap" title="since the previous turn ended">+${fmtDuration((t.start - prev) * 1000)}</span>`
      : `<span class="gap" title="it started before the previous turn ended">concurrent</span>`;
    prev = t.end;
    const preview = t.preview
      ? `<div class="bubble" title="llm.user_message_preview: the user message's first 50 characters">${escapeHtml(t.preview)}</div>`
      : previews ? `<div class="bubble no-preview">no user message preview</div>` : "";
    return `<article class="turn${t.failed ? " failed" : ""}" id="turn-${i + 1}" data-trace-id="${t.trace_id}">
      <div class="rail"><span class="turn-no">Turn ${i + 1}</span>
        <time title="${new Date(t.start * 1000).toISOString()}">${fmtTime(t.start, i === 0)}</time>${gap}</div>
      <div class="turn-body">${preview}${t.calls.map(callHtml).join("")}</div>
    </article>`;
  }).join("");
}

function setupTimeline() {
  const svg = $("#timeline"), tip = $("#tooltip");
  svg.addEventListener("mousemove", (e) => {
    const bar = e.target.closest("rect.call");
    if (!bar) { tip.hidden = true; return; }
    const c = state.session.calls[Number(bar.dataset.i)];
    tip.innerHTML = `<div class="time">Turn ${Number(bar.dataset.turn) + 1} · ${fmtTime(c.start, true)}</div>
      <div class="row"><b>${escapeHtml(c.model || "no model")}</b></div>
      <div class="row">${tokensText(c.input_tokens, c.output_tokens, c.cached_input_tokens)} tokens · ${fmtDuration(c.duration_ms)}</div>
      <div class="row">${c.cost_usd == null ? "no cost" : fmtCost(c.cost_usd) + (c.cost_estimated ? " est." : "")}${c.failure_class ? ` · ${escapeHtml(FAILURE_TITLES[c.failure_class] || c.failure_class)}` : ""}</div>`;
    tip.hidden = false;
    tip.style.left = Math.min(innerWidth - tip.offsetWidth - 8, e.clientX + 14) + "px";
    tip.style.top = e.clientY + 14 + "px";
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
  svg.addEventListener("click", (e) => {
    const bar = e.target.closest("rect.call");
    if (!bar) return;
    const turn = $(`#turn-${Number(bar.dataset.turn) + 1}`);
    turn.scrollIntoView({ behavior: "smooth", block: "center" });
    turn.classList.remove("flash"); void turn.offsetWidth; turn.classList.add("flash");
  });
  new ResizeObserver(() => state.session && renderTimeline()).observe(svg);
}

async function main() {
  const id = sessionId();
  $("#title").textContent = id || "Session";
  if (document.referrer.includes("/sessions?") || document.referrer.endsWith("/sessions")) $("#back").href = document.referrer;
  setupTimeline();
  const t0 = performance.now();
  try {
    if (!id) throw new Error("no session id in the address");
    const r = await fetch(`../api/v1/sessions/${encodeURIComponent(id)}`);
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    state.session = body;
    state.turns = turnsOf(body.calls);
    renderHead();
    renderTimeline();
    renderTurns();
    $("#status").textContent = `${fmtNumber(performance.now() - t0, 0)} ms`;
  } catch (e) {
    showError(`Could not load session ${id}: ${e.message}`);
  } finally {
    document.body.dataset.loaded = String(Date.now());
  }
}

main();

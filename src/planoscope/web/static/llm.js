// LLM calls as the sessions pages show them: cost (sent, or estimated from the price table and
// marked "est.": never mixed silently), tokens, signals quality, models.
"use strict";

function fmtInt(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }

// A cost, "est." beside it when the price table estimated (some of) it.
function costHtml(usd, estimated) {
  if (usd == null) return `<span class="muted" title="No cost: none was sent and the price table does not know the model">–</span>`;
  const title = estimated ? "Estimated from the price table (Plano sent no cost for some of it)" : "Sent by Plano";
  return `<span class="cost" title="${title}">${usd === 0 ? "$0" : fmtCost(usd)}</span>${estimated ? ` <span class="est" title="${title}">est.</span>` : ""}`;
}

function tokensText(input, output, cached) {
  if (input == null && output == null) return "–";
  return `${fmtInt(input)} / ${fmtInt(output)}` + (cached ? ` (${fmtInt(cached)} cached)` : "");
}
// The same, short (29.6 K / 2.8 K), the exact counts in its tooltip.
function tokensShort(input, output, cached) {
  if (input == null && output == null) return `<span class="muted">–</span>`;
  const short = (n) => (n == null ? "–" : n >= 1e4 ? fmtNumber(n) : fmtInt(n));
  return `<span title="${tokensText(input, output, cached)} tokens in / out">${short(input)} / ${short(output)}`
    + (cached ? ` <span class="cached">${short(cached)} cached</span>` : "") + "</span>";
}

// signals.quality, worst last: its chip's colour.
const QUALITY = { excellent: "q-excellent", good: "q-good", neutral: "q-neutral", poor: "q-poor", severe: "q-severe" };
function qualityChip(q) {
  if (!q) return "";
  return `<span class="chip quality ${QUALITY[q] || ""}" title="signals.quality: Plano's assessment of the turn">${escapeHtml(q)}</span>`;
}

// The model that answered; "requested → resolved" when an alias or the router changed it.
// Without the provider prefix: the session's head names them in full, and so do the tooltips.
function modelHtml(c) {
  if (!c.model) return `<span class="muted" title="The call failed before a model was chosen">no model</span>`;
  if (c.requested_model && c.resolved_model && c.requested_model !== c.resolved_model) {
    return `<span class="requested" title="requested: ${escapeHtml(c.requested_model)}">${escapeHtml(shortModel(c.requested_model))}</span>`
      + `<span class="arrow" title="changed by an alias or the router">→</span>`
      + `<b title="resolved: ${escapeHtml(c.resolved_model)}">${escapeHtml(shortModel(c.resolved_model))}</b>`;
  }
  return `<b title="${escapeHtml(c.model)}">${escapeHtml(shortModel(c.model))}</b>`;
}

// A model without its provider prefix (openai/gpt-4o: gpt-4o), where room is short; routes pass.
function shortModel(name) { return String(name).replace(/^[a-z0-9_.-]+\//i, ""); }

function sessionHref(id, base = "") { return `${base}sessions/${encodeURIComponent(id)}`; }

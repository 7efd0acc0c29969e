// planoscope's alerts: GET /api/v1/alerts (the rules with their state, the firing and pending
// alerts, the last state changes), refreshed every 10 s. Rule files: --rules (docs/alerting.md).
"use strict";

const REFRESH_S = 10;
const STATE_TITLES = { firing: "Firing: its condition has held for its whole `for`", pending: "Pending: its condition holds, its `for` has not yet passed",
                       inactive: "Inactive: its condition does not hold", resolved: "Resolved" };

function since(iso) {
  const t = Date.parse(iso) / 1000;
  return Number.isFinite(t) && t > 0 ? t : null;
}
function fmtAge(unixS) {  // 45s, 12m, 3h 05m, 2d 4h
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixS));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
function stateBadge(state) {
  return `<span class="alert-state ${escapeHtml(state)}" title="${escapeHtml(STATE_TITLES[state] || state)}">${escapeHtml(state)}</span>`;
}
function fmtValue(v) {
  const x = typeof v === "string" ? Number(v) : v;
  if (x == null || Number.isNaN(x)) return "–";
  return Math.abs(x) < 1 && x !== 0 ? String(Number(x.toPrecision(3))) : fmtNumber(x);
}
function fmtFor(s) {
  if (!s) return "–";
  return s >= 3600 ? `${s / 3600}h` : s >= 60 ? `${s / 60}m` : `${s}s`;
}

function render(body) {
  const active = body.alerts.filter((a) => a.state === "firing" || a.state === "pending")
    .sort((a, b) => (a.state !== b.state ? (a.state === "firing" ? -1 : 1) : (since(a.activeAt) || 0) - (since(b.activeAt) || 0)));
  const firing = active.filter((a) => a.state === "firing").length;
  const alerting = body.rules.filter((r) => r.type === "alerting");
  const broken = body.rules.filter((r) => r.health === "err").length;
  $("#summary").innerHTML = [
    `<span class="alert-count firing${firing ? "" : " zero"}"><b>${firing}</b> firing</span>`,
    `<span class="alert-count pending${active.length - firing ? "" : " zero"}"><b>${active.length - firing}</b> pending</span>`,
    `<span class="alert-count"><b>${alerting.length}</b> alerting rules, <b>${body.rules.length - alerting.length}</b> recording</span>`,
    broken ? `<span class="alert-count error"><b>${broken}</b> failing to evaluate</span>` : "",
  ].join("");

  $("#active-rows").innerHTML = active.map((a) => {
    const t = since(a.activeAt);
    return `<tr class="${escapeHtml(a.state)}" data-alert="${escapeHtml(a.labels.alertname || a.rule)}">
      <td>${stateBadge(a.state)}</td><td class="name">${escapeHtml(a.labels.alertname || a.rule)}</td>
      <td class="chips">${labelChips(a.labels)}</td><td class="num">${fmtValue(a.value)}</td>
      <td title="${escapeHtml(a.activeAt)}">${t ? `${fmtTime(t, true)} <span class="muted">(${fmtAge(t)})</span>` : "–"}</td>
      <td class="summary">${escapeHtml(a.annotations?.summary || a.annotations?.description || "")}${a.annotations?.runbook
        ? ` <span class="runbook" title="${escapeHtml(a.annotations.runbook)}">runbook</span>` : ""}</td></tr>`;
  }).join("");
  $("#active-none").hidden = active.length > 0;

  let group = null;
  $("#rule-rows").innerHTML = body.rules.map((r) => {
    const head = r.group !== group ? `<tr class="group-row"><td colspan="6">${escapeHtml(r.group)} <span class="muted">${escapeHtml(r.file || "")}</span></td></tr>` : "";
    group = r.group;
    const last = since(r.lastEvaluation);
    const state = r.type === "alerting" ? stateBadge(r.state) : `<span class="alert-state recording" title="A recording rule: stores its query's result as a series">record</span>`;
    return `${head}<tr data-rule="${escapeHtml(r.name)}"><td>${state}</td><td class="name">${escapeHtml(r.name)}</td>
      <td class="query"><code title="${escapeHtml(r.query)}">${escapeHtml(r.query)}</code></td>
      <td class="num">${r.type === "alerting" ? fmtFor(r.duration) : ""}</td>
      <td>${last ? `${fmtAge(last)} ago <span class="muted">in ${fmtDuration(r.evaluationTime * 1000)}</span>` : "not yet"}</td>
      <td class="health ${escapeHtml(r.health)}" title="${escapeHtml(r.lastError || "")}">${r.health === "err" ? `error: ${escapeHtml(r.lastError || "")}` : escapeHtml(r.health)}</td></tr>`;
  }).join("");
  $("#rules-none").hidden = body.rules.length > 0;

  $("#change-rows").innerHTML = body.transitions.map((c) => {
    const t = since(c.time);
    return `<tr><td title="${escapeHtml(c.time)}">${t ? fmtTime(t, true) : "–"}</td><td class="name">${escapeHtml(c.labels?.alertname || c.rule)}</td>
      <td class="chips">${labelChips(c.labels)}</td><td>${stateBadge(c.from)} → ${stateBadge(c.to)}</td><td class="num">${fmtValue(c.value)}</td></tr>`;
  }).join("");
  $("#changes-none").hidden = body.transitions.length > 0;
}

async function load() {
  $("#results").setAttribute("aria-busy", "true");
  try {
    const r = await fetch("api/v1/alerts");
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    render(body);
    $("#status").textContent = `Updated ${fmtTime(Date.now() / 1000)}`;
    showError("");
  } catch (e) {
    showError(`Could not load the alerts: ${e.message}`);
  } finally {
    $("#results").setAttribute("aria-busy", "false");
    document.body.dataset.loaded = String(Date.now());
  }
}

buildNav("alerts", null);
load();
setInterval(() => { if (!document.hidden) load(); }, REFRESH_S * 1000);

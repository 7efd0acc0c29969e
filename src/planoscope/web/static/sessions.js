// planoscope's sessions list: GET /api/v1/sessions over the range; the filters, the sort and the
// page are in the URL (with the range), so a list is a link.
"use strict";

const state = { range: null, offset: 0, inflight: null, result: null };

function formToParams() {
  const p = new URLSearchParams();
  state.range.write(p);
  const user = $("#f-user").value.trim();
  if (user) p.set("user", user);
  if ($("#f-sort").value !== "cost") p.set("sort", $("#f-sort").value);
  if ($("#f-limit").value !== "50") p.set("limit", $("#f-limit").value);
  if (state.offset) p.set("offset", String(state.offset));
  return p;
}

function ensureOption(select, value) {
  if (value && ![...select.options].some((o) => o.value === value)) select.add(new Option(value, value));
}

function paramsToForm(p) {
  state.range.read(p);
  $("#f-user").value = p.get("user") || "";
  ensureOption($("#f-sort"), p.get("sort"));
  $("#f-sort").value = p.get("sort") || "cost";
  ensureOption($("#f-limit"), p.get("limit"));
  $("#f-limit").value = p.get("limit") || "50";
  state.offset = Math.max(0, Number(p.get("offset")) || 0);
}

async function load(push = false) {
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
    const r = await fetch(`api/v1/sessions?${q}`, { signal: ctl.signal });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || r.statusText);
    state.result = body;
    document.body.dataset.range = `${start},${end}`;  // what was asked: a test asks the API the same
    render();
    $("#status").textContent = `${fmtNumber(performance.now() - t0, 0)} ms`;
    showError("");
  } catch (e) {
    if (e.name !== "AbortError") showError(`Could not list sessions: ${e.message}`);
  } finally {
    if (state.inflight === ctl) state.inflight = null;
    $("#results").setAttribute("aria-busy", "false");
    document.body.dataset.loaded = String(Date.now());
  }
}

function render() {
  const { sessions, total, limit, offset } = state.result;
  const count = total === 0 ? "No sessions"
    : sessions.length === 0 ? `${fmtInt(total)} session${total === 1 ? "" : "s"} · none on this page`
    : `${fmtInt(total)} session${total === 1 ? "" : "s"} · showing ${offset + 1}–${offset + sessions.length}`;
  $("#count").textContent = $("#count-foot").textContent = count;
  for (const b of document.querySelectorAll(".pager .prev")) b.disabled = offset === 0;
  for (const b of document.querySelectorAll(".pager .next")) b.disabled = offset + sessions.length >= total;
  $("#foot").hidden = total === 0;
  const sort = $("#f-sort").value;
  for (const th of document.querySelectorAll("th.sortable")) {
    th.setAttribute("aria-sort", th.dataset.sort === sort ? "descending" : "none");
  }
  $("#none").hidden = total !== 0;
  $("#table").hidden = total === 0;
  // The cost bar is relative to the page's costliest session.
  const top = Math.max(...sessions.map((s) => s.cost_usd || 0), 1e-12);
  $("#rows").innerHTML = sessions.map((s) => {
    const models = chips(s.models, "", "models", 2);
    const routes = chips(s.routes, "route", "routes (plano.route.name)", 1);
    const user = s.user_id
      ? `<a class="user" href="?${userParams(s.user_id)}" title="Only this user's sessions">${escapeHtml(s.user_id)}</a>`
      : `<span class="muted">–</span>`;
    const failed = s.failures
      ? `<span class="badge error" title="${s.failures} of ${s.llm_calls} LLM calls failed">${fmtInt(s.failures)}</span>`
      : `<span class="muted">0</span>`;
    const bar = `<span class="gauge" aria-hidden="true"><i style="width:${s.cost_usd ? Math.max(2, (100 * s.cost_usd) / top) : 0}%"></i></span>`;
    return `<tr data-session-id="${escapeHtml(s.session_id)}"${s.failures ? ' class="has-error"' : ""}>
      <td class="id"><a href="${sessionHref(s.session_id)}" title="${escapeHtml(s.session_id)}">${escapeHtml(s.session_id)}</a></td>
      <td>${user}</td>
      <td class="num" title="${new Date(s.last_seen * 1000).toISOString()}">${fmtTime(s.last_seen, true)}</td>
      <td class="num">${fmtDuration((s.last_seen - s.first_seen) * 1000)}</td>
      <td class="num">${fmtInt(s.llm_calls)}</td>
      <td class="chips">${models}</td>
      <td class="chips">${routes}</td>
      <td class="num">${tokensShort(s.input_tokens, s.output_tokens, s.cached_input_tokens)}</td>
      <td class="num cost-cell">${bar}${costHtml(s.cost_usd, s.cost_estimated)}</td>
      <td class="num">${failed}</td>
    </tr>`;
  }).join("");
  const users = new Set(sessions.map((s) => s.user_id).filter(Boolean));
  $("#f-users").innerHTML = [...users].sort().map((u) => `<option value="${escapeHtml(u)}">`).join("");
}

// At most n chips, then "+n" with every value in its tooltip: a row stays one line high.
function chips(values, cls, what, n) {
  if (!values.length) return `<span class="muted">–</span>`;
  const chip = (v) => `<span class="chip ${cls}" title="${escapeHtml(v)}">${escapeHtml(shortModel(v))}</span>`;
  const more = values.length > n
    ? `<span class="chip more" title="${escapeHtml(`${values.length} ${what}: ${values.join(", ")}`)}">+${values.length - n}</span>` : "";
  return values.slice(0, n).map(chip).join("") + more;
}

function userParams(user) {
  const p = new URLSearchParams(location.search);
  p.set("user", user);
  p.delete("offset");
  return p.toString();
}

function main() {
  state.range = new RangePicker($("#range-picker"), () => { state.offset = 0; load(true); }, "24h");
  paramsToForm(new URLSearchParams(location.search));
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; load(true); });
  $("#f-user").addEventListener("change", () => { state.offset = 0; load(true); });
  for (const el of document.querySelectorAll("#filters select")) {
    el.addEventListener("change", () => { state.offset = 0; load(true); });
  }
  for (const th of document.querySelectorAll("th.sortable")) {
    th.addEventListener("click", () => { $("#f-sort").value = th.dataset.sort; state.offset = 0; load(true); });
  }
  for (const b of document.querySelectorAll(".pager .prev")) {
    b.addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.result.limit); load(true); scrollTo(0, 0); });
  }
  for (const b of document.querySelectorAll(".pager .next")) {
    b.addEventListener("click", () => { state.offset += state.result.limit; load(true); scrollTo(0, 0); });
  }
  // A row opens its session, wherever it is clicked (its links still work as links).
  $("#rows").addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-session-id]");
    if (row && !e.target.closest("a") && !getSelection().toString()) location.href = sessionHref(row.dataset.sessionId);
  });
  addEventListener("popstate", () => { paramsToForm(new URLSearchParams(location.search)); load(); });
  load();
}

main();

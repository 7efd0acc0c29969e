// planoscope's stat panels: one value per series at the range's end, drawn as Grafana's stat
// tiles, as bars (long names: sessions, model pairs, costs with their total) or as a table (a
// series and its measures per row: routes). Uses app.js' helpers (drillUrl, colors, fmtUnit, …).
"use strict";

function lastValue(s) { return s.points.length ? s.points[s.points.length - 1][1] : null; }

// Grafana's named colours, as its dark theme draws them.
const NAMED_COLORS = { green: "#73bf69", yellow: "#fade2a", orange: "#ff9830", red: "#f2495c", blue: "#5794f2",
                       purple: "#b877d9", "dark-red": "#c4162a", "dark-green": "#37872d", "dark-yellow": "#e0b400" };
// A value's colour by a panel's absolute thresholds ([from, colour] steps, the first from null).
function thresholdColor(steps, v) {
  if (!steps?.length || v == null) return null;
  let color = null;
  for (const [from, c] of steps) if (from == null || v >= from) color = NAMED_COLORS[c] || c;
  return color;
}

function renderStat(view, data, body, legend) {
  destroyPlot(view);
  legend.innerHTML = "";
  if (!data.series.length) { body.innerHTML = `<div class="nodata">No data in this range</div>`; return; }
  const display = view.def.display || "tiles";
  if (display === "table") return renderStatTable(view, data, body);
  if (display === "bars") return renderBars(view, data, body);
  const palette = colors(view.def, data.series);
  const tiles = data.series.map((s, i) => {
    const c = thresholdColor(view.def.thresholds, lastValue(s)) || palette[i];
    const href = drillUrl(view.def, s, data.start, data.end);
    const est = isEstimated(s);
    return `<a class="stat${est ? " estimated" : ""}" ${href ? `href="${href}" title="Traces of ${escapeHtml(s.name)} in this range"` : ""} style="--c:${c}">
      <div class="label">${escapeHtml(est ? s.name.replace(/ \(estimated\)$/, "") : s.name || noLabel(view.def))}${est
        ? ` <span class="est" title="${ESTIMATED_TITLE}">estimated</span>` : ""}</div><div class="value">${fmtUnit(lastValue(s), view.def.unit)}</div></a>`;
  });
  body.innerHTML = `<div class="stats">${tiles.join("")}</div>`;
}

function renderBars(view, data, body) {
  const def = view.def;
  const series = [...data.series].sort((a, b) => (a.labels.other === "true") - (b.labels.other === "true")
    || (lastValue(b) || 0) - (lastValue(a) || 0));
  const max = Math.max(...series.map((s) => lastValue(s) || 0)) || 1;
  const palette = colors(def, series);
  const rows = series.map((s, i) => {
    const v = lastValue(s);
    const href = drillUrl(def, s, data.start, data.end);
    const { requested_model: requested, resolved_model: resolved } = s.labels;
    const name = requested && requested === resolved
      ? `${escapeHtml(requested)} <span class="same" title="Sent to the model requested">as requested</span>`
      : richText(shownName(def, s));
    return `<a class="bar-row${isEstimated(s) ? " estimated" : ""}" ${href ? `href="${href}"` : ""} title="${escapeHtml(s.name)}: ${fmtUnit(v, def.unit)}${href ? " · traces in this range" : ""}">
      <span class="bar-name">${name}${estimatedBadge(s)}</span>
      <span class="bar-track"><span class="bar-fill" style="width:${(100 * (v || 0)) / max}%;--c:${palette[i]}"></span></span>
      <span class="bar-value">${fmtUnit(v, def.unit)}</span></a>`;
  });
  // The costs by model add up: their total heads the list, sent and estimated apart.
  let total = "";
  if (data.series.some((s) => s.labels.cost_source)) {
    const sum = (src) => data.series.filter((s) => s.labels.cost_source === src).reduce((a, s) => a + (lastValue(s) || 0), 0);
    const est = data.series.some((s) => s.labels.cost_source === "estimated");
    total = `<div class="bars-total"><span class="k">Total</span><b>${fmtUsd(sum("sent") + sum("estimated"))}</b>${est
      ? `<span class="sub">${fmtUsd(sum("sent"))} sent · ${fmtUsd(sum("estimated"))} <span class="est" title="${ESTIMATED_TITLE}">estimated</span></span>` : ""}</div>`;
  }
  body.innerHTML = `<div class="bars">${total}${rows.join("")}</div>`;
}

function renderStatTable(view, data, body) {
  const def = view.def;
  const rows = new Map();  // by name: the main series and its measures
  for (const s of data.series) {
    const row = rows.get(s.name) || { series: null, values: {} };
    if (s.labels.measure) row.values[s.labels.measure] = lastValue(s);
    else row.series = s;
    rows.set(s.name, row);
  }
  const label = Object.keys(def.drilldown?.labels || { name: 1 })[0];
  const head = `<tr><th>${escapeHtml(label[0].toUpperCase() + label.slice(1))}</th><th>Calls</th>${def.measures
    .map((m) => `<th>${escapeHtml(m.title)}</th>`).join("")}<th></th></tr>`;
  const trs = [...rows.values()].filter((r) => r.series).map(({ series: s, values }) => {
    const href = drillUrl(def, s, data.start, data.end);
    const failedHref = drillUrl(def, s, data.start, data.end, true);
    const cells = def.measures.map((m) => {
      const v = values[m.id];
      const bar = m.unit === "percentunit" && v != null
        ? `<span class="cell-bar${m.id.startsWith("failure") ? " bad" : ""}" style="width:${Math.min(100, v * 100)}%"></span>` : "";
      return `<td data-measure="${escapeHtml(m.id)}">${bar}<span>${fmtUnit(v, m.unit)}</span></td>`;
    }).join("");
    return `<tr><td class="name">${href ? `<a href="${href}">${escapeHtml(s.name)}</a>` : escapeHtml(s.name)}</td>
      <td data-measure="calls">${fmtUnit(lastValue(s), def.unit)}</td>${cells}
      <td class="drill">${failedHref ? `<a class="failed" href="${failedHref}" title="Failed calls of ${escapeHtml(s.name)} in this range">failed ↗</a>` : ""}</td></tr>`;
  });
  body.innerHTML = `<div class="stat-table"><table><thead>${head}</thead><tbody>${trs.join("")}</tbody></table></div>`;
}

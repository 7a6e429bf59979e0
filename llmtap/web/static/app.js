// llmtap dashboard: a small single-page app over the read-only JSON API (/api/...).
// Every value from the API reaches the page through textContent, never as HTML.
// A chart sets data-points (points drawn) on its element once rendered; the browser test reads it.
"use strict";

const PAGES = ["overview", "cost", "drift", "risk", "alerts", "traces"];
const COLORS = ["#2f6fde", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#e67700",
  "#5c940d", "#868e96"];
const state = {
  range: localStorage.getItem("llmtap.range") || "1h",
  from: null,
  to: null,
  service: "",
  tenant: "",
  model: "",
  refresh: Number(localStorage.getItem("llmtap.refresh") || "-1"),
  groupBy: "service",
  alertState: "",
  alertSeverity: "",
  search: { q: "", trace_id: "", status: "", min_duration_ms: "" },
};
let config = { refresh_interval_seconds: 10, range_presets: ["1h"], group_by: ["service"] };
let timer = null;
let generation = 0;
let shownRange = null; // [from_ms, to_ms] of the latest answer: the charts' x axis
const charts = [];

// -- DOM helpers ---------------------------------------------------------------------------------

function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const $ = (id) => document.getElementById(id);

function formatNumber(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Math.abs(value) >= 1e6) return (value / 1e6).toFixed(digits) + "M";
  if (Math.abs(value) >= 1e4) return (value / 1e3).toFixed(1) + "k";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}
const formatCost = (value) => (value === null || value === undefined ? "–" :
  "$" + Number(value).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 6 }));
const formatPercent = (value) => (value === null || value === undefined ? "–" :
  (value * 100).toFixed(2) + "%");
const formatMs = (value) => (value === null || value === undefined ? "–" :
  value >= 1000 ? (value / 1000).toFixed(2) + " s" : value.toFixed(0) + " ms");
const formatTime = (ms) => new Date(ms).toLocaleString();

// -- API -----------------------------------------------------------------------------------------

function rangeParameters() {
  const parameters = new URLSearchParams();
  if (state.range === "custom" && state.from && state.to) {
    parameters.set("from", String(state.from));
    parameters.set("to", String(state.to));
  } else {
    parameters.set("range", state.range === "custom" ? "1h" : state.range);
  }
  for (const name of ["service", "tenant", "model"]) {
    if (state[name]) parameters.set(name, state[name]);
  }
  return parameters;
}

async function api(path, extra) {
  const parameters = rangeParameters();
  for (const [name, value] of Object.entries(extra || {})) {
    if (value !== "" && value !== null && value !== undefined) parameters.set(name, String(value));
  }
  const headers = {};
  const token = sessionStorage.getItem("llmtap.token");
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path + "?" + parameters.toString(), { headers });
  if (response.status === 401) {
    askForToken();
    throw new Error("the dashboard needs its access token");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  if (body.from_ms !== undefined) shownRange = [body.from_ms / 1000, body.to_ms / 1000];
  return body;
}

function askForToken() {
  const dialog = $("token-dialog");
  if (!dialog.open) dialog.showModal();
}

// -- charts --------------------------------------------------------------------------------------

function destroyCharts() {
  while (charts.length) charts.pop().destroy();
}

// A time-series chart. data: {x: [ms...], series: [{label, values}]}; options: {bars, points,
// yLabel, markers: [ms...], threshold}. Sets data-points on the chart element.
function timeChart(title, data, options = {}) {
  const box = h("figure", { class: "chart", dataset: { chart: title, points: "0" } },
    h("figcaption", {}, title));
  const x = (data.x || []).map((ms) => ms / 1000);
  const series = (data.series || []).filter((item) => item.values.some((v) => v !== null));
  const points = series.reduce((count, item) => count + item.values.filter((v) => v !== null).length, 0);
  if (!x.length || !points) {
    box.append(h("p", { class: "empty" }, "No data in this range."));
    return box;
  }
  const paths = options.bars ? uPlot.paths.bars({ size: [0.8, 40] }) : undefined;
  const plotSeries = [{}].concat(series.map((item, index) => ({
    label: item.label,
    stroke: COLORS[index % COLORS.length],
    fill: options.bars ? COLORS[index % COLORS.length] + "99" : undefined,
    width: options.points ? 0 : 2,
    paths: options.points ? () => null : paths,
    points: options.points ? { show: true, size: 5, fill: COLORS[index % COLORS.length] } :
      { show: !options.bars && x.length < 60 },
    spanGaps: false,
    value: (u, v) => (v === null ? "–" : formatNumber(v, 6)),
  })));
  const drawMarkers = (u) => {
    const context = u.ctx;
    context.save();
    if (options.threshold !== undefined) {
      const y = u.valToPos(options.threshold, "y", true);
      context.strokeStyle = "#c92a2a";
      context.setLineDash([6, 4]);
      context.beginPath();
      context.moveTo(u.bbox.left, y);
      context.lineTo(u.bbox.left + u.bbox.width, y);
      context.stroke();
    }
    context.setLineDash([2, 3]);
    context.strokeStyle = "#e03131";
    for (const ms of options.markers || []) {
      const position = u.valToPos(ms / 1000, "x", true);
      if (position < u.bbox.left || position > u.bbox.left + u.bbox.width) continue;
      context.beginPath();
      context.moveTo(position, u.bbox.top);
      context.lineTo(position, u.bbox.top + u.bbox.height);
      context.stroke();
    }
    context.restore();
  };
  const plotBox = h("div", { class: "plot" });
  box.append(plotBox);
  requestAnimationFrame(() => {
    const width = Math.max(plotBox.clientWidth, 300);
    const plot = new uPlot({
      width,
      height: options.height || 220,
      series: plotSeries,
      axes: [{}, { label: options.yLabel || "", size: 60, values: (u, ticks) => ticks.map((t) => formatNumber(t, 4)) }],
      scales: {
        x: shownRange ? { time: true, range: () => shownRange } : { time: true },
        y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] },
      },
      hooks: { draw: [drawMarkers] },
      legend: { show: true },
    }, [x].concat(series.map((item) => item.values)), plotBox);
    charts.push(plot);
    box.dataset.points = String(points);
  });
  return box;
}

// A histogram over numeric bins (not time): data {bins: [start...], values: [...]}.
function histogram(title, bins, values, width) {
  const box = h("figure", { class: "chart", dataset: { chart: title, points: "0" } },
    h("figcaption", {}, title));
  const total = values.reduce((sum, v) => sum + (v || 0), 0);
  if (!total) {
    box.append(h("p", { class: "empty" }, "No scored responses in this range."));
    return box;
  }
  const plotBox = h("div", { class: "plot" });
  box.append(plotBox);
  requestAnimationFrame(() => {
    const plot = new uPlot({
      width: Math.max(plotBox.clientWidth, 300),
      height: 220,
      scales: { x: { time: false, range: [0, 1] }, y: { range: (u, min, max) => [0, max * 1.1] } },
      axes: [{ values: (u, ticks) => ticks.map((t) => t.toFixed(2)) }, { size: 50 }],
      series: [{ label: "risk" }, {
        label: "responses", stroke: COLORS[1], fill: COLORS[1] + "99",
        paths: uPlot.paths.bars({ size: [0.95, 100], align: 1 }),
        points: { show: false },
      }],
    }, [bins, values], plotBox);
    charts.push(plot);
    box.dataset.points = String(values.filter((v) => v > 0).length);
  });
  return box;
}

// Horizontal bars for a breakdown (plain elements: labels stay readable).
function barList(title, rows, value, label, format) {
  const max = Math.max(...rows.map((row) => value(row)), 0);
  const box = h("figure", { class: "chart bars", dataset: { chart: title, points: String(rows.length) } },
    h("figcaption", {}, title));
  if (!rows.length) box.append(h("p", { class: "empty" }, "No data in this range."));
  for (const row of rows) {
    const share = max > 0 ? (value(row) / max) * 100 : 0;
    box.append(h("div", { class: "bar-row" },
      h("span", { class: "bar-label", title: label(row) }, label(row) || "(none)"),
      h("span", { class: "bar-track" }, h("span", { class: "bar-fill", style: `width:${share.toFixed(1)}%` })),
      h("span", { class: "bar-value" }, format(value(row)))));
  }
  return box;
}

function kpi(label, value, hint) {
  return h("div", { class: "kpi" }, h("div", { class: "kpi-value" }, value),
    h("div", { class: "kpi-label" }, label), hint ? h("div", { class: "kpi-hint" }, hint) : null);
}

function table(columns, rows, onRow) {
  const body = h("tbody", {}, rows.map((row) => h("tr", {
    class: onRow ? "clickable" : null,
    onclick: onRow ? () => onRow(row) : null,
  }, columns.map(([, cell]) => h("td", {}, cell(row))))));
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([name]) => h("th", {}, name)))), body));
}

function columnsToSeries(columns, names) {
  return {
    x: columns.bucket_ms || [],
    series: names.map(([key, label, scale]) => ({
      label,
      values: (columns[key] || []).map((v) => (v === null ? null : v * (scale || 1))),
    })),
  };
}

function pretty(value) {
  return h("pre", { class: "json" }, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

// -- pages ---------------------------------------------------------------------------------------

async function overviewPage(page) {
  const data = await api("/api/overview");
  const totals = data.totals;
  page.append(h("section", { class: "kpis" },
    kpi("spans / s", formatNumber(totals.spans_per_second, 3), `${formatNumber(totals.spans, 0)} spans`),
    kpi("LLM calls", formatNumber(totals.llm_calls, 0), `${formatNumber(totals.traces, 0)} traces`),
    kpi("error rate", formatPercent(totals.error_rate), `${formatNumber(totals.errors, 0)} errors`),
    kpi("p50 latency", formatMs(totals.p50_ms)),
    kpi("p95 latency", formatMs(totals.p95_ms)),
    kpi("cost", formatCost(totals.cost)),
    kpi("tokens", formatNumber(totals.input_tokens + totals.output_tokens, 1),
      `${formatNumber(totals.input_tokens, 1)} in / ${formatNumber(totals.output_tokens, 1)} out`),
    kpi("unpriced calls", formatNumber(totals.unpriced_calls, 0),
      `${formatNumber(totals.unpriced_tokens, 1)} tokens without a price`)));
  const perMinute = 60 / data.cost_step_seconds;
  const costPerMinute = {
    x: data.cost_by_model.x,
    series: data.cost_by_model.series.map((item) => ({
      label: item.label || "(no model)",
      values: item.values.map((v) => (v === null ? null : v * perMinute)),
    })),
  };
  const series = data.series;
  page.append(h("section", { class: "grid" },
    timeChart("Spans per second", columnsToSeries(series, [["spans_per_second", "spans/s"]])),
    timeChart("Cost per minute by model (USD)", costPerMinute, { bars: false }),
    timeChart("Tokens", columnsToSeries(series, [["input_tokens", "input"], ["output_tokens", "output"]]), { bars: true }),
    timeChart("LLM latency (ms)", columnsToSeries(series, [["p50_ms", "p50"], ["p95_ms", "p95"]])),
    timeChart("Error rate (%)", columnsToSeries(series, [["error_rate", "errors", 100]])),
    timeChart("Unpriced calls", columnsToSeries(series, [["unpriced_calls", "unpriced"]]), { bars: true })));
  page.append(h("h2", {}, "Unpriced spend"),
    data.unpriced.length ? table([
      ["reason", (r) => r.reason || "(none)"], ["model", (r) => r.model || "(none)"],
      ["calls", (r) => formatNumber(r.calls, 0)], ["tokens", (r) => formatNumber(r.tokens, 0)],
    ], data.unpriced) : h("p", { class: "empty" }, "Every LLM call in this range has a price."));
}

async function costPage(page) {
  const data = await api("/api/cost", { group_by: state.groupBy });
  const select = h("select", { id: "group-by", onchange: (event) => { state.groupBy = event.target.value; render(); } },
    config.group_by.map((name) => h("option", { value: name, selected: name === state.groupBy }, name.replace("_", " "))));
  page.append(h("div", { class: "toolbar" }, h("label", {}, "Group by ", select),
    h("span", { class: "total" }, "Total ", formatCost(data.total_cost))));
  page.append(h("section", { class: "grid" },
    timeChart(`Cost over time by ${state.groupBy.replace("_", " ")} (USD per ${data.step_seconds} s)`, data.series, { bars: true }),
    barList(`Cost by ${state.groupBy.replace("_", " ")}`, data.breakdown.slice(0, 15), (row) => row.cost,
      (row) => row.key, formatCost)));
  page.append(table([
    [state.groupBy.replace("_", " "), (r) => r.key || "(none)"],
    ["cost", (r) => formatCost(r.cost)],
    ["requests", (r) => formatNumber(r.requests, 0)],
    ["errors", (r) => formatNumber(r.errors, 0)],
    ["unpriced", (r) => formatNumber(r.unpriced_requests, 0)],
    ["input tokens", (r) => formatNumber(r.input_tokens, 0)],
    ["output tokens", (r) => formatNumber(r.output_tokens, 0)],
    ["cost / request", (r) => formatCost(r.requests ? r.cost / r.requests : null)],
  ], data.breakdown));
}

// An example behind a drift result: text, or an object with the text and where it came from.
function exampleView(example) {
  if (typeof example !== "object" || example === null) return h("li", {}, String(example));
  const text = example.text || example.prompt || example.prompt_text || example.content || "";
  const shift = example.projection !== undefined ? ` (shift ${example.projection})` : "";
  return h("li", {}, text || JSON.stringify(example), shift,
    example.trace_id ? [" ", h("a", { href: `#/traces/${example.trace_id}` }, "trace")] : null);
}

function evidenceView(evidence) {
  if (evidence === null || evidence === undefined) return "–";
  const examples = Array.isArray(evidence.examples) ? evidence.examples : [];
  return h("details", {}, h("summary", {}, examples.length ? `${examples.length} examples` : "evidence"),
    examples.length ? h("ul", { class: "examples" }, examples.map(exampleView)) : null,
    pretty(evidence));
}

async function driftPage(page) {
  const data = await api("/api/drift");
  const markers = data.alerts.map((alert) => alert.fired_at_ms);
  page.append(h("section", { class: "kpis" },
    kpi("drift tests", formatNumber(data.results.length, 0)),
    kpi("drifted", formatNumber(data.drifted, 0)),
    kpi("drift alerts", formatNumber(data.alerts.length, 0))));
  page.append(h("section", { class: "grid one" },
    timeChart("Drift score (statistic / threshold; above 1 = drifted; red marks: alerts)", data.timeline,
      { threshold: 1, markers, points: false, height: 260 })));
  page.append(h("h2", {}, "Drift alerts"), alertsTable(data.alerts));
  page.append(h("h2", {}, "Results"), table([
    ["window end", (r) => formatTime(r.window_end_ms)],
    ["feature", (r) => r.feature], ["detector", (r) => r.detector],
    ["service", (r) => r.service_name], ["model", (r) => r.request_model],
    ["prompt", (r) => r.prompt_template_version],
    ["statistic", (r) => formatNumber(r.statistic, 4)], ["threshold", (r) => formatNumber(r.threshold, 4)],
    ["p-value", (r) => formatNumber(r.p_value, 4)],
    ["drifted", (r) => h("span", { class: r.drifted ? "badge bad" : "badge ok" }, r.drifted ? "drifted" : "ok")],
    ["sizes", (r) => `${r.reference_size} / ${r.current_size}`],
    ["evidence", (r) => evidenceView(r.evidence)],
  ], data.results));
}

function contextView(row) {
  const context = row.context || {};
  const documents = Array.isArray(context.retrieved_documents) ? context.retrieved_documents : [];
  const sentences = row.details && Array.isArray(row.details.sentences) ? row.details.sentences : [];
  return h("article", { class: "card" },
    h("header", {},
      h("span", { class: "badge bad" }, "risk " + row.risk_score.toFixed(3)),
      row.injection_flag ? h("span", { class: "badge bad" }, "injection") : null,
      ` ${row.service_name} · ${row.request_model} · ${row.prompt_template_version || "–"} · ${formatTime(row.timestamp_ms)} `,
      h("a", { href: `#/traces/${row.trace_id}` }, "trace")),
    h("div", { class: "qa" },
      h("div", {}, h("h4", {}, "Question"), h("p", {}, context.prompt_text || "–")),
      h("div", {}, h("h4", {}, "Answer"), h("p", {}, context.completion_text || "–")),
      h("div", {}, h("h4", {}, "Context"), documents.length ? h("ul", {}, documents.map((d) =>
        h("li", {}, d.content || JSON.stringify(d)))) : h("p", {}, "no retrieved documents"))),
    sentences.length ? h("table", { class: "sentences" }, h("tbody", {}, sentences.map((s) =>
      h("tr", {}, h("td", {}, formatNumber(s.support, 3)), h("td", {}, s.text))))) : null,
    h("p", { class: "muted" }, `support min ${formatNumber(row.support_min, 3)}, answer–context similarity ${formatNumber(row.answer_context_similarity, 3)}, model ${row.model_version}`));
}

async function riskPage(page) {
  const data = await api("/api/risk", { limit: 20 });
  page.append(h("section", { class: "kpis" },
    kpi("scored responses", formatNumber(data.scored, 0)),
    kpi("injection flagged", formatNumber(data.injection_flagged, 0))));
  page.append(h("section", { class: "grid" },
    histogram("Risk distribution (responses per risk score)", data.histogram.bin_start, data.histogram.scored),
    timeChart("Risk over time", columnsToSeries(data.series, [["mean_risk", "mean"], ["p95_risk", "p95"]]))));
  page.append(h("h2", {}, "Riskiest responses"),
    data.riskiest.length ? h("div", { class: "cards" }, data.riskiest.map(contextView)) :
      h("p", { class: "empty" }, "No scored responses in this range."));
}

function alertsTable(rows) {
  if (!rows.length) return h("p", { class: "empty" }, "No alerts in this range.");
  return table([
    ["fired", (r) => formatTime(r.fired_at_ms)],
    ["severity", (r) => h("span", { class: `badge ${r.severity}` }, r.severity)],
    ["state", (r) => h("span", { class: r.state === "firing" ? "badge bad" : "badge ok" }, r.state)],
    ["rule", (r) => r.rule_id], ["group", (r) => r.group_key], ["message", (r) => r.message],
    ["value", (r) => `${formatNumber(r.value, 4)} (threshold ${formatNumber(r.threshold, 4)})`],
    ["delivery", (r) => `${r.delivery_status} (${r.delivery_attempts})${r.delivery_error ? ": " + r.delivery_error : ""}`],
    ["resolved", (r) => (r.resolved_at_ms ? formatTime(r.resolved_at_ms) : "–")],
  ], rows);
}

async function alertsPage(page) {
  const data = await api("/api/alerts", { state: state.alertState, severity: state.alertSeverity });
  const select = (id, key, values) => h("select", { id, onchange: (event) => { state[key] = event.target.value; render(); } },
    values.map((value) => h("option", { value, selected: value === state[key] }, value || "all")));
  page.append(h("div", { class: "toolbar" },
    h("label", {}, "State ", select("alert-state", "alertState", ["", "firing", "resolved"])),
    h("label", {}, "Severity ", select("alert-severity", "alertSeverity", ["", "info", "warning", "critical"])),
    h("span", { class: "total" }, `${data.firing} firing`)));
  page.append(h("section", { class: "grid one" },
    timeChart("Alerts fired by severity", columnsToSeries(data.series,
      [["critical", "critical"], ["warning", "warning"], ["info", "info"]]), { bars: true })));
  page.append(alertsTable(data.alerts));
}

async function tracesPage(page, traceId) {
  if (traceId) return traceDetail(page, traceId);
  const form = h("form", { class: "toolbar search", id: "search-form", onsubmit: (event) => {
    event.preventDefault();
    const fields = new FormData(event.target);
    for (const name of Object.keys(state.search)) state.search[name] = String(fields.get(name) || "");
    render();
  } },
  h("input", { name: "q", placeholder: "text in prompt, answer, name or user", value: state.search.q, size: 32 }),
  h("input", { name: "trace_id", placeholder: "trace id", value: state.search.trace_id, size: 34 }),
  h("select", { name: "status" }, ["", "ok", "error", "unset"].map((value) =>
    h("option", { value, selected: value === state.search.status }, value || "any status"))),
  h("input", { name: "min_duration_ms", type: "number", min: 0, placeholder: "min ms", value: state.search.min_duration_ms }),
  h("button", { type: "submit" }, "Search"));
  page.append(form);
  const data = await api("/api/spans", { ...state.search, limit: 200 });
  const spans = data.spans.slice().reverse();
  page.append(h("section", { class: "grid one" }, timeChart("Span duration (ms) of the matches", {
    x: spans.map((s) => s.timestamp_ms),
    series: [
      { label: "ok", values: spans.map((s) => (s.status === "error" ? null : s.duration_ms)) },
      { label: "error", values: spans.map((s) => (s.status === "error" ? s.duration_ms : null)) },
    ],
  }, { points: true })));
  page.append(data.spans.length ? table([
    ["time", (r) => formatTime(r.timestamp_ms)], ["name", (r) => r.name],
    ["type", (r) => r.span_type], ["status", (r) => h("span", { class: r.status === "error" ? "badge bad" : "badge ok" }, r.status)],
    ["service", (r) => r.service_name], ["model", (r) => r.request_model || "–"],
    ["duration", (r) => formatMs(r.duration_ms)],
    ["tokens", (r) => (r.input_tokens === null ? "–" : `${r.input_tokens} / ${r.output_tokens}`)],
    ["cost", (r) => (r.priced ? formatCost(r.cost) : r.span_type === "llm" ? "unpriced" : "–")],
    ["trace", (r) => r.trace_id.slice(0, 12) + "…"],
  ], data.spans, (row) => { location.hash = `#/traces/${row.trace_id}`; }) :
    h("p", { class: "empty" }, "No spans match."));
}

function spanDetail(span) {
  const field = (name, value) => (value === null || value === undefined || value === "" ? null :
    h("div", { class: "field" }, h("dt", {}, name), h("dd", {}, value)));
  return h("div", { class: "span-detail" },
    h("h3", {}, span.name),
    h("dl", {},
      field("span id", span.span_id), field("parent", span.parent_span_id),
      field("service", `${span.service_name} ${span.service_version}`), field("tenant", span.tenant),
      field("status", `${span.status} ${span.status_message}`),
      field("model", span.request_model && `${span.provider} ${span.request_model} → ${span.response_model}`),
      field("duration", formatMs(span.duration_ms)), field("time to first token", span.time_to_first_token_ms && formatMs(span.time_to_first_token_ms)),
      field("tokens", span.input_tokens !== null ? `${span.input_tokens} in / ${span.output_tokens} out` : null),
      field("cost", span.span_type === "llm" ? (span.priced ? `${formatCost(span.cost)}${span.price_version ? ` (prices ${span.price_version})` : ""}` : `unpriced: ${span.unpriced_reason}`) : null),
      field("user", span.user_id), field("session", span.session_id),
      field("prompt template", span.prompt_template_id && `${span.prompt_template_id} ${span.prompt_template_version}`),
      field("error", span.error_type && `${span.error_type}: ${span.error_message}`),
      field("risk", span.score && `${span.score.risk_score.toFixed(3)} (injection ${span.score.injection_score.toFixed(3)})`)),
    span.system_instructions ? h("div", {}, h("h4", {}, "System"), h("p", { class: "text" }, span.system_instructions)) : null,
    span.prompt_text ? h("div", {}, h("h4", {}, "Prompt"), h("p", { class: "text" }, span.prompt_text)) : null,
    span.completion_text ? h("div", {}, h("h4", {}, "Completion"), h("p", { class: "text" }, span.completion_text)) : null,
    span.retrieved_documents ? h("details", {}, h("summary", {}, "Retrieved documents"), pretty(span.retrieved_documents)) : null,
    span.input_messages ? h("details", {}, h("summary", {}, "Input messages"), pretty(span.input_messages)) : null,
    span.output_messages ? h("details", {}, h("summary", {}, "Output messages"), pretty(span.output_messages)) : null,
    span.tool_calls ? h("details", {}, h("summary", {}, "Tool calls"), pretty(span.tool_calls)) : null,
    h("details", {}, h("summary", {}, "Attributes"), pretty(span.attributes)),
    h("details", {}, h("summary", {}, "Resource"), pretty(span.resource_attributes)),
    span.score ? h("details", {}, h("summary", {}, "Risk evidence"), pretty(span.score.details)) : null);
}

async function traceDetail(page, traceId) {
  const headers = {};
  const token = sessionStorage.getItem("llmtap.token");
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(`/api/traces/${encodeURIComponent(traceId)}`, { headers });
  if (response.status === 401) { askForToken(); throw new Error("the dashboard needs its access token"); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error);
  page.append(h("p", {}, h("a", { href: "#/traces" }, "← search"), ` trace ${traceId}`));
  if (!data.spans.length) {
    page.append(h("p", { class: "empty" }, "No spans stored for this trace."));
    return;
  }
  const depth = {};
  const byId = Object.fromEntries(data.spans.map((span) => [span.span_id, span]));
  const level = (span) => {
    if (depth[span.span_id] !== undefined) return depth[span.span_id];
    depth[span.span_id] = 0;
    const parent = byId[span.parent_span_id];
    depth[span.span_id] = parent ? level(parent) + 1 : 0;
    return depth[span.span_id];
  };
  const total = Math.max(data.end_ms - data.start_ms, 1);
  const detail = h("div", { id: "span-detail" }, spanDetail(data.spans.find((s) => s.span_type === "llm") || data.spans[0]));
  const rows = data.spans.map((span) => h("div", {
    class: "waterfall-row", tabindex: 0,
    onclick: () => { detail.replaceChildren(spanDetail(span)); },
  },
  h("span", { class: "waterfall-name", style: `padding-left:${level(span) * 14}px` }, `${span.service_name}: ${span.name}`),
  h("span", { class: "waterfall-track" }, h("span", {
    class: `waterfall-bar ${span.status === "error" ? "error" : span.span_type}`,
    style: `left:${(((span.timestamp_ms - data.start_ms) / total) * 100).toFixed(2)}%;width:${Math.max(((span.end_timestamp_ms - span.timestamp_ms) / total) * 100, 0.5).toFixed(2)}%`,
  })),
  h("span", { class: "waterfall-duration" }, formatMs(span.duration_ms))));
  page.append(h("figure", { class: "chart waterfall", dataset: { chart: "Trace waterfall", points: String(rows.length) } },
    h("figcaption", {}, `Trace waterfall (${data.spans.length} spans, ${formatMs(total)})`), rows), detail);
}

// -- shell: routing, controls, refresh -----------------------------------------------------------

function route() {
  const [, page, argument] = (location.hash || "#/overview").split("/");
  return { page: PAGES.includes(page) ? page : "overview", argument: argument ? decodeURIComponent(argument) : "" };
}

async function render() {
  const current = ++generation;
  const { page, argument } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  const container = h("div", { class: "page", dataset: { page, loaded: "false" } });
  const status = $("status");
  status.textContent = "loading…";
  const handlers = { overview: overviewPage, cost: costPage, drift: driftPage, risk: riskPage, alerts: alertsPage, traces: tracesPage };
  try {
    await handlers[page](container, argument);
    if (current !== generation) return;
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    if (current !== generation) return;
    container.append(h("p", { class: "error" }, String(error.message || error)));
    status.textContent = "error";
  }
  destroyCharts();
  $("page").replaceChildren(container);
  container.dataset.loaded = "true";
}

function scheduleRefresh() {
  if (timer) clearInterval(timer);
  timer = null;
  if (state.refresh > 0) {
    timer = setInterval(() => {
      if (!document.hidden && !document.querySelector("details[open]")) render();
    }, state.refresh * 1000);
  }
}

function toLocalInput(ms) {
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return date.toISOString().slice(0, 16);
}

async function loadFilters() {
  try {
    const values = await api("/api/filters");
    // a tenant token reads one tenant: the API pins it, the selector shows it and stays fixed
    const pinned = values.pinned_tenant || "";
    if (pinned) state.tenant = pinned;
    else if ($("tenant").disabled) state.tenant = "";
    const tenant = $("tenant");
    tenant.disabled = Boolean(pinned);
    tenant.title = pinned ? "this token reads its own tenant only" : "";
    for (const [id, key] of [["service", "services"], ["tenant", "tenants"], ["model", "models"]]) {
      const select = $(id);
      const current = state[id];
      const fixed = id === "tenant" && pinned;
      const choices = fixed ? [pinned] : values[key] || [];
      select.replaceChildren(...(fixed ? [] : [h("option", { value: "" }, "all")]),
        ...choices.map((value) => h("option", { value, selected: value === current }, value)));
    }
  } catch (error) {
    // the filter lists are a convenience; the page shows the error itself
  }
}

async function start() {
  config = await (await fetch("/api/config")).json();
  if (state.refresh < 0) state.refresh = config.refresh_interval_seconds;
  if (!config.range_presets.includes(state.range)) state.range = config.default_range;
  const range = $("range");
  range.replaceChildren(...config.range_presets.map((preset) =>
    h("option", { value: preset, selected: preset === state.range }, "last " + preset)),
  h("option", { value: "custom" }, "custom…"));
  const refresh = $("refresh");
  if (![...refresh.options].some((option) => Number(option.value) === state.refresh)) {
    refresh.append(h("option", { value: state.refresh }, `${state.refresh} s`));
  }
  refresh.value = String(state.refresh);
  range.addEventListener("change", () => {
    state.range = range.value;
    $("custom-range").hidden = state.range !== "custom";
    if (state.range === "custom") {
      state.to = Date.now();
      state.from = state.to - 3600_000;
      $("from").value = toLocalInput(state.from);
      $("to").value = toLocalInput(state.to);
    } else {
      localStorage.setItem("llmtap.range", state.range);
    }
    render();
  });
  for (const id of ["from", "to"]) {
    $(id).addEventListener("change", () => {
      const value = new Date($(id).value).getTime();
      if (!Number.isNaN(value)) state[id] = value;
      if (state.from < state.to) render();
    });
  }
  for (const id of ["service", "tenant", "model"]) {
    $(id).addEventListener("change", () => { state[id] = $(id).value; render(); });
  }
  refresh.addEventListener("change", () => {
    state.refresh = Number(refresh.value);
    localStorage.setItem("llmtap.refresh", String(state.refresh));
    scheduleRefresh();
  });
  $("controls").addEventListener("submit", (event) => { event.preventDefault(); loadFilters(); render(); });
  $("token-form").addEventListener("submit", () => {
    sessionStorage.setItem("llmtap.token", $("token").value);
    loadFilters();
    render();
  });
  window.addEventListener("hashchange", render);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const plot of charts) plot.setSize({ width: Math.max(plot.root.parentElement.clientWidth, 300), height: plot.height });
    }, 150);
  });
  scheduleRefresh();
  await loadFilters();
  await render();
}

document.addEventListener("DOMContentLoaded", start);

// The console's usage page: filters (key, model, a UTC date range; kept in the URL so a
// reload keeps them), the period's totals, charts per day and per model (uPlot, each with
// a summary and its data as a table beneath it), the records a page at a time, and export
// links. Money stays the API's decimal strings in every text; only the charts plot Numbers.
import uPlot from "uplot";
import { api } from "../lib/api.js";
import { el, formatTime, formatUsd, status } from "../lib/dom.js";
import { lang, t } from "../lib/i18n.js";

const DAY = 86_400;
const DEFAULT_DAYS = 30;
const RECORDS_PAGE = 100; // records read per "Load more" (25 on a narrow screen: cards)
const RECORDS_READ = 500; // records read per request (the API's most)
const CHART_RECORDS_CAP = 10_000; // a key's charts are totalled from at most this many records
const FILTERS = ["since", "until", "key_id", "model"];
// Distinct on white and for common colour-vision deficiencies (Okabe-Ito, darkened).
const COLORS = ["#0b5fff", "#d55e00", "#009e73", "#8a3ffc", "#b8860b", "#cc79a7", "#0072b2", "#555555"];
const CHART_HEIGHT = 220;

const $ = (id) => document.getElementById(id);

// -- dates (UTC days as "YYYY-MM-DD") -------------------------------------------------------

const isoDay = (date) => date.toISOString().slice(0, 10);
const dayStart = (day) => Date.parse(`${day}T00:00:00Z`) / 1000;
const validDay = (text) => /^\d{4}-\d{2}-\d{2}$/.test(text || "") && !Number.isNaN(dayStart(text));

function addDays(day, count) {
  const date = new Date(dayStart(day) * 1000);
  date.setUTCDate(date.getUTCDate() + count);
  return isoDay(date);
}

function daysOf(since, until) {
  const days = [];
  for (let day = since; day <= until && days.length < 3700; day = addDays(day, 1)) days.push(day);
  return days;
}

function defaults() {
  const until = isoDay(new Date());
  return { since: addDays(until, -(DEFAULT_DAYS - 1)), until, key_id: "", model: "" };
}

// The filters from the URL (a reload keeps them); the last 30 days by default.
function readFilters() {
  const query = new URLSearchParams(window.location.search);
  const chosen = defaults();
  if (validDay(query.get("until"))) chosen.until = query.get("until");
  chosen.since = validDay(query.get("since"))
    ? query.get("since")
    : addDays(chosen.until, -(DEFAULT_DAYS - 1));
  chosen.key_id = (query.get("key_id") || "").trim();
  chosen.model = (query.get("model") || "").trim();
  return chosen;
}

function writeFilters(filters) {
  const url = new URL(window.location.href);
  for (const name of FILTERS) {
    if (filters && filters[name]) url.searchParams.set(name, filters[name]);
    else url.searchParams.delete(name);
  }
  window.history.pushState(null, "", url.pathname + url.search + url.hash);
}

// The API's query: [since, until + 1 day) in UTC, and the key and model when chosen.
function apiQuery(filters, extra = {}) {
  const query = new URLSearchParams({ since: filters.since, until: addDays(filters.until, 1) });
  if (filters.key_id) query.set("key_id", filters.key_id);
  if (filters.model) query.set("model", filters.model);
  for (const [name, value] of Object.entries(extra)) if (value) query.set(name, value);
  return query.toString();
}

// -- numbers and money ----------------------------------------------------------------------

const numbers = () => new Intl.NumberFormat(lang());
const formatCount = (value) => numbers().format(value);

function formatDay(day, style = "medium") {
  const options = style === "short" ? { month: "short", day: "numeric" } : { dateStyle: "medium" };
  return new Intl.DateTimeFormat(lang(), { ...options, timeZone: "UTC" }).format(
    new Date(dayStart(day) * 1000),
  );
}

// The exact sum of decimal strings ("0.000150" + "1.2" = "1.200150"), at least 6 decimals
// as the API writes money; never through a float.
export function decimalSum(values) {
  let scale = 6;
  for (const value of values) scale = Math.max(scale, (String(value).split(".")[1] || "").length);
  let total = 0n;
  for (const value of values) {
    const text = String(value).trim();
    if (!/^-?\d+(\.\d+)?$/.test(text)) continue;
    const negative = text.startsWith("-");
    const [whole, fraction = ""] = (negative ? text.slice(1) : text).split(".");
    const units = BigInt(whole + fraction.padEnd(scale, "0"));
    total += negative ? -units : units;
  }
  const negative = total < 0n;
  const digits = (negative ? -total : total).toString().padStart(scale + 1, "0");
  return `${negative ? "-" : ""}${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
}

function formatAxisUsd(value) {
  const digits = value !== 0 && Math.abs(value) < 0.01 ? 6 : 2;
  return new Intl.NumberFormat(lang(), { maximumFractionDigits: digits }).format(value);
}

// -- the data: one line per UTC day and model -------------------------------------------------

function lineOf(date, model) {
  return {
    date,
    model,
    requests: 0,
    prompt_tokens: 0,
    completion_tokens: 0,
    costs: [],
    errors: 0,
    cache_hits: 0,
  };
}

// The daily totals of the API (every key), the model filtered here.
async function dailyLines(orgId, filters) {
  const query = new URLSearchParams({ since: filters.since, until: addDays(filters.until, 1) });
  const answer = await api("GET", `/api/orgs/${orgId}/usage/daily?${query}`);
  return answer.days
    .filter((day) => !filters.model || day.model === filters.model)
    .map((day) => ({ ...lineOf(day.date, day.model), ...day, costs: [day.cost_usd] }));
}

// One key's daily totals, added up from its records (the daily totals are not per key).
async function keyLines(orgId, filters) {
  const lines = new Map();
  let cursor = null;
  let read = 0;
  do {
    const query = apiQuery(filters, { limit: String(RECORDS_READ), cursor });
    const answer = await api("GET", `/api/orgs/${orgId}/usage?${query}`);
    for (const record of answer.records) {
      const date = String(record.timestamp).slice(0, 10);
      const key = `${date}\u0000${record.model}`;
      if (!lines.has(key)) lines.set(key, lineOf(date, record.model));
      const line = lines.get(key);
      line.requests += 1;
      line.prompt_tokens += record.prompt_tokens;
      line.completion_tokens += record.completion_tokens;
      line.costs.push(record.cost_usd);
      line.errors += record.status >= 400 ? 1 : 0;
      line.cache_hits += record.cached ? 1 : 0;
    }
    read += answer.records.length;
    cursor = answer.next;
  } while (cursor && read < CHART_RECORDS_CAP);
  return { lines: [...lines.values()], capped: Boolean(cursor) };
}

// The period's series for the charts and their tables.
function shape(lines, filters) {
  const days = daysOf(filters.since, filters.until);
  const index = new Map(days.map((day, i) => [day, i]));
  const models = new Map();
  const tokensIn = days.map(() => 0);
  const tokensOut = days.map(() => 0);
  for (const line of lines) {
    const i = index.get(line.date);
    if (i === undefined) continue;
    // A request refused before its model was known (a 400) has none: named in words.
    const name = line.model || t("usage.no_model");
    if (!models.has(name)) {
      models.set(name, {
        model: name,
        requests: days.map(() => 0),
        costs: days.map(() => []),
        totalRequests: 0,
        promptTokens: 0,
        completionTokens: 0,
        errors: 0,
        cacheHits: 0,
        allCosts: [],
      });
    }
    const model = models.get(name);
    model.requests[i] += line.requests;
    model.costs[i].push(...line.costs);
    model.totalRequests += line.requests;
    model.promptTokens += line.prompt_tokens;
    model.completionTokens += line.completion_tokens;
    model.errors += line.errors;
    model.cacheHits += line.cache_hits;
    model.allCosts.push(...line.costs);
    tokensIn[i] += line.prompt_tokens;
    tokensOut[i] += line.completion_tokens;
  }
  const list = [...models.values()].sort(
    (a, b) => b.totalRequests - a.totalRequests || (a.model < b.model ? -1 : 1),
  );
  for (const model of list) {
    model.cost = decimalSum(model.allCosts);
    model.dayCosts = model.costs.map((costs) => (costs.length ? decimalSum(costs) : "0.000000"));
  }
  const dayRequests = days.map((_, i) => list.reduce((sum, m) => sum + m.requests[i], 0));
  const dayCosts = days.map((_, i) => decimalSum(list.map((m) => m.dayCosts[i])));
  return {
    days,
    xs: days.map(dayStart),
    models: list,
    tokensIn,
    tokensOut,
    dayRequests,
    dayCosts,
    requests: dayRequests.reduce((a, b) => a + b, 0),
    promptTokens: tokensIn.reduce((a, b) => a + b, 0),
    completionTokens: tokensOut.reduce((a, b) => a + b, 0),
    errors: list.reduce((sum, m) => sum + m.errors, 0),
    cacheHits: list.reduce((sum, m) => sum + m.cacheHits, 0),
    cost: decimalSum(list.map((m) => m.cost)),
  };
}

// -- charts -----------------------------------------------------------------------------------

const plots = new Map(); // chart id → uPlot
let resizer = null;

function chartWidth(node) {
  return Math.max(260, Math.floor(node.clientWidth || node.parentElement.clientWidth || 600));
}

function mount(id, options, data) {
  const node = $(id).querySelector(".chart");
  plots.get(id)?.destroy();
  node.replaceChildren();
  const plot = new uPlot({ ...options, width: chartWidth(node), height: CHART_HEIGHT }, data, node);
  plots.set(id, plot);
  if (!resizer) {
    resizer = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const owner = entry.target.closest("figure")?.id;
        const found = plots.get(owner);
        const width = chartWidth(entry.target);
        if (found && Math.abs(found.width - width) > 1) found.setSize({ width, height: CHART_HEIGHT });
      }
    });
  }
  resizer.observe(node);
}

const axisStyle = {
  stroke: "#565d69",
  grid: { stroke: "#e6e9ee", width: 1 },
  ticks: { stroke: "#d5d9e0", width: 1 },
};

const colorOf = (series, i) => series[i]?.color || COLORS[i % COLORS.length];

function dayChart(id, data, series, formatValue) {
  const shortDay = (seconds) => formatDay(isoDay(new Date(seconds * 1000)), "short");
  mount(
    id,
    {
      tzDate: (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"),
      scales: {
        // The whole period, half a day of room at each end (one day alone is centred).
        x: { time: true, range: () => [data.xs[0] - DAY / 2, data.xs[data.xs.length - 1] + DAY / 2] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      series: [
        {
          label: t("usage.col_date"),
          value: (u, v) => (v == null ? "" : formatDay(isoDay(new Date(v * 1000)))),
        },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: colorOf(series, i),
          width: 2,
          points: { show: true, size: 5 },
          value: (u, v) => (v == null ? "" : formatValue(v)),
        })),
      ],
      axes: [
        {
          ...axisStyle,
          space: 72,
          values: (u, splits) => splits.map(shortDay),
          incrs: [DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY, 91 * DAY, 365 * DAY],
        },
        { ...axisStyle, size: 64, values: (u, splits) => splits.map(formatValue) },
      ],
      cursor: { drag: { x: false, y: false } },
      // The series' names (the values are in the table beneath), each marked in its colour.
      legend: { live: false, markers: { fill: (u, i) => colorOf(series, i - 1) } },
    },
    [data.xs, ...series.map((s) => s.values)],
  );
}

function modelChart(id, models, values, formatValue) {
  const names = models.map((m) => m.model);
  // A label as long as its bar's room allows (the full names are in the table beneath).
  const short = (u, name) => {
    const room = Math.max(6, Math.floor(u.width / Math.max(names.length, 1) / 7.5));
    return name.length > room ? `${name.slice(0, room - 1)}…` : name;
  };
  mount(
    id,
    {
      scales: {
        x: { time: false, range: () => [-0.5, names.length - 0.5] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      series: [
        { label: t("usage.col_model"), value: (u, v) => (v == null ? "" : (names[v] ?? "")) },
        {
          label: t(id === "chart-model_cost" ? "usage.col_cost" : "usage.col_requests"),
          stroke: COLORS[0],
          fill: "rgba(11, 95, 255, 0.75)",
          width: 1,
          paths: uPlot.paths.bars({ size: [0.6, 80] }),
          points: { show: false },
          value: (u, v) => (v == null ? "" : formatValue(v)),
        },
      ],
      axes: [
        {
          ...axisStyle,
          splits: () => names.map((_, i) => i),
          values: (u, splits) => splits.map((i) => short(u, names[i] ?? "")),
          grid: { show: false },
        },
        { ...axisStyle, size: 64, values: (u, splits) => splits.map(formatValue) },
      ],
      cursor: { drag: { x: false, y: false } },
      legend: { show: false }, // one series, named by the heading
    },
    [names.map((_, i) => i), values],
  );
}

// A chart's text alternative: its data as a table (numbers and exact money strings).
function dataTable(id, headers, rows, numeric) {
  const table = el(
    "table",
    {},
    el("caption", {}, t(`usage.chart_${id.slice("chart-".length)}`)),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        headers.map((h, i) => el("th", { scope: "col", class: numeric(i) ? "num" : null }, h)),
      ),
    ),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          {},
          row.map((cell, i) =>
            i === 0 ? el("th", { scope: "row" }, cell) : el("td", { class: numeric(i) ? "num" : null }, cell),
          ),
        ),
      ),
    ),
  );
  $(id).querySelector(".table-wrap").replaceChildren(table);
}

function summary(id, text) {
  $(`${id}-summary`).textContent = text;
}

// The index of the largest value (the first of equals).
function peakOf(values) {
  let best = 0;
  values.forEach((v, i) => {
    if (v > values[best]) best = i;
  });
  return best;
}

function drawCharts(data) {
  const { days, models } = data;
  const withTotal = models.length > 1;
  const active = days.map((_, i) => i).filter((i) => data.dayRequests[i] > 0);

  // Requests per day, one line per model.
  dayChart(
    "chart-requests",
    data,
    models.map((m) => ({ label: m.model, values: m.requests })),
    formatCount,
  );
  const requestPeak = peakOf(data.dayRequests);
  summary(
    "chart-requests",
    data.requests
      ? t("usage.summary_requests", {
          total: formatCount(data.requests),
          peak_day: formatDay(days[requestPeak]),
          peak: formatCount(data.dayRequests[requestPeak]),
        })
      : t("usage.summary_nothing"),
  );
  dataTable(
    "chart-requests",
    [t("usage.col_date"), ...models.map((m) => m.model), ...(withTotal ? [t("usage.series_total")] : [])],
    active.map((i) => [
      formatDay(days[i]),
      ...models.map((m) => formatCount(m.requests[i])),
      ...(withTotal ? [formatCount(data.dayRequests[i])] : []),
    ]),
    (i) => i > 0,
  );

  // Tokens per day, input and output.
  dayChart(
    "chart-tokens",
    data,
    [
      { label: t("usage.series_input"), values: data.tokensIn, color: COLORS[0] },
      { label: t("usage.series_output"), values: data.tokensOut, color: COLORS[1] },
    ],
    formatCount,
  );
  const tokenTotals = days.map((_, i) => data.tokensIn[i] + data.tokensOut[i]);
  const tokenPeak = peakOf(tokenTotals);
  summary(
    "chart-tokens",
    data.requests
      ? t("usage.summary_tokens", {
          input: formatCount(data.promptTokens),
          output: formatCount(data.completionTokens),
          peak_day: formatDay(days[tokenPeak]),
          peak: formatCount(tokenTotals[tokenPeak]),
        })
      : t("usage.summary_nothing"),
  );
  dataTable(
    "chart-tokens",
    [t("usage.col_date"), t("usage.series_input"), t("usage.series_output")],
    active.map((i) => [formatDay(days[i]), formatCount(data.tokensIn[i]), formatCount(data.tokensOut[i])]),
    (i) => i > 0,
  );

  // Cost per day, one line per model (Numbers only for the plot).
  dayChart(
    "chart-cost",
    data,
    models.map((m) => ({ label: m.model, values: m.dayCosts.map(Number) })),
    formatAxisUsd,
  );
  const costPeak = peakOf(data.dayCosts.map(Number));
  summary(
    "chart-cost",
    data.requests
      ? t("usage.summary_cost", {
          total: data.cost,
          peak_day: formatDay(days[costPeak]),
          peak: data.dayCosts[costPeak],
        })
      : t("usage.summary_nothing"),
  );
  dataTable(
    "chart-cost",
    [t("usage.col_date"), ...models.map((m) => m.model), ...(withTotal ? [t("usage.series_total")] : [])],
    active.map((i) => [
      formatDay(days[i]),
      ...models.map((m) => formatUsd(m.dayCosts[i])),
      ...(withTotal ? [formatUsd(data.dayCosts[i])] : []),
    ]),
    (i) => i > 0,
  );

  // Per model: requests and cost.
  const top = models[0];
  modelChart(
    "chart-model_requests",
    models,
    models.map((m) => m.totalRequests),
    formatCount,
  );
  summary(
    "chart-model_requests",
    top
      ? t("usage.summary_models_requests", {
          count: formatCount(models.length),
          top: top.model,
          top_requests: formatCount(top.totalRequests),
          total: formatCount(data.requests),
        })
      : t("usage.summary_nothing"),
  );
  dataTable(
    "chart-model_requests",
    [t("usage.col_model"), t("usage.col_requests"), t("usage.col_errors"), t("usage.col_cached")],
    models.map((m) => [
      m.model,
      formatCount(m.totalRequests),
      formatCount(m.errors),
      formatCount(m.cacheHits),
    ]),
    (i) => i > 0,
  );

  const byCost = [...models].sort((a, b) => Number(b.cost) - Number(a.cost));
  modelChart(
    "chart-model_cost",
    models,
    models.map((m) => Number(m.cost)),
    formatAxisUsd,
  );
  summary(
    "chart-model_cost",
    byCost[0]
      ? t("usage.summary_models_cost", {
          count: formatCount(models.length),
          top: byCost[0].model,
          top_cost: byCost[0].cost,
          total: data.cost,
        })
      : t("usage.summary_nothing"),
  );
  dataTable(
    "chart-model_cost",
    [
      t("usage.col_model"),
      t("usage.col_requests"),
      t("usage.col_tokens_in"),
      t("usage.col_tokens_out"),
      t("usage.col_cost"),
    ],
    [
      ...models.map((m) => [
        m.model,
        formatCount(m.totalRequests),
        formatCount(m.promptTokens),
        formatCount(m.completionTokens),
        formatUsd(m.cost),
      ]),
      ...(withTotal
        ? [
            [
              t("usage.total_row"),
              formatCount(data.requests),
              formatCount(data.promptTokens),
              formatCount(data.completionTokens),
              formatUsd(data.cost),
            ],
          ]
        : []),
    ],
    (i) => i > 0,
  );
}

function drawTotals(data) {
  $("total-requests").textContent = formatCount(data.requests);
  $("total-notes").textContent = t("usage.total_errors", {
    count: formatCount(data.errors),
    cached: formatCount(data.cacheHits),
  });
  $("total-tokens-in").textContent = formatCount(data.promptTokens);
  $("total-tokens-out").textContent = formatCount(data.completionTokens);
  $("total-cost").textContent = formatUsd(data.cost);
}

// -- the records ------------------------------------------------------------------------------

function keyLabel(keys, keyId) {
  const key = keys.get(keyId);
  if (!key)
    return el(
      "span",
      {},
      el("span", { class: "muted" }, t("usage.deleted_key")),
      el("br"),
      el("code", {}, keyId),
    );
  return el(
    "span",
    {},
    key.name || t("usage.unnamed_key"),
    el("br"),
    el("code", { class: "muted" }, key.hint),
  );
}

// labels: the table's column headers (each cell carries its own, for the narrow layout).
function recordRow(record, keys, labels) {
  const failed = record.status >= 400;
  const cells = [
    [formatTime(record.timestamp), "nowrap"],
    [el("code", {}, record.model), ""],
    [keyLabel(keys, record.key_id), ""],
    [String(record.status), `num ${failed ? "bad" : "good"}`],
    [formatCount(record.prompt_tokens), "num"],
    [formatCount(record.completion_tokens), "num"],
    [formatUsd(record.cost_usd), "num"],
    [t("usage.ms", { n: formatCount(record.latency_ms) }), "num nowrap"],
    [record.cached ? t("usage.yes") : t("usage.no"), ""],
  ];
  return el(
    "tr",
    {},
    cells.map(([cell, kind], i) => el("td", { class: kind || null, "data-label": labels[i] }, cell)),
  );
}

// The records list: a page of the API at a time, with its cursor. A filtered page may come
// back empty with a cursor (the API reads `limit` records, then filters): reading goes on
// past empty pages, so "Load more" always shows more or ends the list.
// `current()`: whether this list is still the page's (a newer load replaces it).
function recordsList(orgId, filters, keys, current) {
  const body = $("records-table").querySelector("tbody");
  const more = $("records-more");
  const labels = [...$("records-table").querySelectorAll("thead th")].map((th) => th.textContent);
  let cursor = null;
  let shown = 0;

  async function next() {
    const found = [];
    let rounds = 0;
    do {
      const narrow = window.matchMedia("(max-width: 640px)").matches;
      const query = apiQuery(filters, { limit: String(narrow ? 25 : RECORDS_PAGE), cursor, order: "newest" });
      const answer = await api("GET", `/api/orgs/${orgId}/usage?${query}`);
      found.push(...answer.records);
      cursor = answer.next;
      rounds += 1;
    } while (cursor && !found.length && rounds < 20);
    if (!current()) return 0;
    body.append(...found.map((record) => recordRow(record, keys, labels)));
    shown += found.length;
    more.hidden = !cursor;
    $("records-count").textContent = t(cursor ? "usage.records_shown" : "usage.records_all_shown", {
      shown: formatCount(shown),
    });
    return found.length;
  }

  body.replaceChildren();
  return { next };
}

// -- the page ---------------------------------------------------------------------------------

function fillKeys(select, keys, chosen) {
  const options = [...keys.values()].map((key) =>
    el(
      "option",
      { value: key.key_id, selected: key.key_id === chosen },
      t(key.revoked ? "usage.key_option_revoked" : "usage.key_option", {
        name: key.name || t("usage.unnamed_key"),
        hint: key.hint,
      }),
    ),
  );
  select.replaceChildren(el("option", { value: "" }, t("usage.filter_key_all")), ...options);
  select.value = keys.has(chosen) ? chosen : "";
}

function setForm(filters) {
  $("filter-since").value = filters.since;
  $("filter-until").value = filters.until;
  $("filter-model").value = filters.model;
  $("filter-key").value = filters.key_id;
}

function formFilters() {
  return {
    since: $("filter-since").value,
    until: $("filter-until").value,
    key_id: $("filter-key").value,
    model: $("filter-model").value.trim(),
  };
}

function filterError(message) {
  const node = $("filter-error");
  node.textContent = message || "";
  node.hidden = !message;
  for (const id of ["filter-since", "filter-until"]) {
    if (message) $(id).setAttribute("aria-invalid", "true");
    else $(id).removeAttribute("aria-invalid");
  }
}

function setExports(orgId, filters) {
  for (const [id, format] of [
    ["export-csv", "csv"],
    ["export-json", "json"],
  ]) {
    $(id).href = `/api/orgs/${orgId}/usage/export?${apiQuery(filters, { format })}`;
  }
}

export async function render(ctx) {
  const { orgId } = ctx;
  if (!orgId) return;
  const form = $("usage-filter-form");
  const more = $("records-more");
  let keys = new Map();
  let list = null;
  let generation = 0;

  async function load(filters) {
    const mine = ++generation;
    setForm(filters);
    setExports(orgId, filters);
    status(t("usage.loading"));
    ctx.root.setAttribute("aria-busy", "true");
    try {
      const byKey = filters.key_id
        ? await keyLines(orgId, filters)
        : { lines: await dailyLines(orgId, filters), capped: false };
      if (mine !== generation) return;
      const data = shape(byKey.lines, filters);
      const models = new Set(data.models.map((m) => m.model));
      if (!filters.model)
        $("filter-models").replaceChildren(...[...models].sort().map((m) => el("option", { value: m })));
      // Nothing at all (the default view): the first-steps hint; else nothing matches.
      const usual = defaults();
      const filtered = Boolean(
        filters.key_id || filters.model || filters.since !== usual.since || filters.until !== usual.until,
      );
      const nothing = data.requests === 0;
      $("usage-empty").hidden = !(nothing && !filtered);
      $("usage-no-match").hidden = !(nothing && filtered);
      $("usage-content").hidden = nothing;
      if (!nothing) {
        drawTotals(data);
        const capped = $("charts-capped");
        capped.hidden = !byKey.capped;
        capped.textContent = byKey.capped
          ? t("usage.charts_capped", { count: formatCount(CHART_RECORDS_CAP) })
          : "";
        drawCharts(data);
        list = recordsList(orgId, filters, keys, () => mine === generation);
        await list.next();
      } else {
        list = null;
      }
      if (mine !== generation) return;
      status(t("usage.loaded", { since: formatDay(filters.since), until: formatDay(filters.until) }));
    } catch (error) {
      if (mine === generation) status(error.message || t("common.error_generic"), "error");
    } finally {
      if (mine === generation) ctx.root.setAttribute("aria-busy", "false");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const filters = formFilters();
    if (!validDay(filters.since) || !validDay(filters.until)) {
      filterError(t("usage.range_missing"));
      (validDay(filters.since) ? $("filter-until") : $("filter-since")).focus();
      return;
    }
    if (filters.since > filters.until) {
      filterError(t("usage.range_invalid"));
      $("filter-since").focus();
      return;
    }
    filterError("");
    writeFilters(filters);
    load(filters);
  });
  $("filter-reset").addEventListener("click", () => {
    filterError("");
    writeFilters(null);
    load(defaults());
  });
  more.addEventListener("click", async () => {
    if (!list) return;
    more.disabled = true;
    const firstNew = $("records-table").querySelector("tbody").children.length;
    try {
      await list.next();
      // Keyboard users continue from the first new row (the button may now be gone).
      const row = $("records-table").querySelector("tbody").children[firstNew];
      if (row) {
        row.setAttribute("tabindex", "-1");
        row.focus();
      }
    } catch (error) {
      status(error.message || t("common.error_generic"), "error");
    } finally {
      more.disabled = false;
    }
  });
  window.addEventListener("popstate", () => {
    filterError("");
    load(readFilters());
  });

  const filters = readFilters();
  try {
    const answer = await api("GET", `/api/orgs/${orgId}/keys`);
    keys = new Map(answer.keys.map((key) => [key.key_id, key]));
  } catch (error) {
    status(error.message || t("common.error_generic"), "error");
  }
  fillKeys($("filter-key"), keys, filters.key_id);
  if (filters.key_id && !keys.has(filters.key_id)) {
    // A key of the URL that is not (or no longer) this organization's: still filtered on.
    $("filter-key").append(el("option", { value: filters.key_id }, filters.key_id));
    $("filter-key").value = filters.key_id;
  }
  await load(filters);
}

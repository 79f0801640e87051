// Customers (SyncEngage): the LTV distribution and deciles (SyncValue's production model),
// the churn-risk list with its reasons and LTV, cohorts as a
// retention heat map, RFM segments, a segment builder with a live count, and retention rules
// with a dry run. Each part says what is missing (no data, no model) in the service's words.
import { api } from "../api.js";
import { h, field, money, micros, clock, table, needs, attempt } from "../ui.js";
import { barChart } from "../chart.js";

const FIELDS = {
  purchases: "integer", total_spend: "money", avg_order_value: "money", days_since_last: "integer",
  days_since_first: "integer", rfm_segment: "text", has_email: "boolean",
};
const OPS = { integer: [">=", ">", "<=", "<", "=", "!="], money: [">=", ">", "<=", "<"], text: ["=", "!="], boolean: ["="] };

// One section of the page: its content, or the service's reason it has none.
async function section(title, load) {
  const box = h("section", { "aria-labelledby": `h-${title.replace(/\W+/g, "-")}` },
    h("h2", { id: `h-${title.replace(/\W+/g, "-")}` }, title));
  try {
    box.append(await load());
  } catch (err) {
    if (err.status === 401) throw err;
    box.append(h("p", { class: "muted" }, err.message));
  }
  return box;
}

function churnList(page) {
  return h("div", {},
    h("p", { class: "muted" }, `${page.total} customers at or above ${page.threshold} churn risk (model v${page.model_version}, as of ${page.as_of}, scored at ${clock(page.scored_at)}).`,
      page.ltv_unavailable ? ` LTV: ${page.ltv_unavailable}.` : ""),
    table([
      { label: "Customer", cell: (c) => c.customer_id },
      { label: "Churn risk", num: true, cell: (c) => `${(c.churn_risk * 100).toFixed(1)}%` },
      { label: "Why", cell: (c) => c.reasons.map((r) => r.description).join("; ") },
      { label: "LTV", num: true, cell: (c) => (c.ltv ? money(c.ltv.value) : "–") },
      { label: "Last purchase", cell: (c) => c.last_purchase },
    ], page.customers, "Customers at risk of churning"));
}

function ltvSpread(s) {
  const cur = s.currency;
  // Each bar is labelled with where it starts (the last: and above), as precise as the spread needs.
  const digits = s.bins.length && s.bins.at(-1).low_micros < 100e6 ? 2 : 0;
  const short = (m) => (m / 1e6).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const labels = s.bins.map((b) => (b.high_micros === null ? `≥${short(b.low_micros)}` : short(b.low_micros)));
  return h("div", {},
    h("p", { class: "muted" }, `${s.customers.toLocaleString()} customers, ${micros(s.total_micros, cur)} in all, median ${micros(s.median_micros, cur)} over ${s.horizon_days} days (LTV model v${s.model_version}, as of ${s.as_of}, scored at ${clock(s.scored_at)}).`),
    barChart(`Customers by LTV (${cur}, ${s.horizon_days} days; each bar from its value up)`, labels, s.bins.map((b) => b.customers), { yLabel: "customers" }),
    table([
        { label: "Decile", cell: (d) => (d.decile === 1 ? "1 (top 10%)" : d.decile) },
        { label: "Customers", num: true, cell: (d) => d.customers.toLocaleString() },
        { label: "LTV from", num: true, cell: (d) => micros(d.min_micros, cur) },
        { label: "to", num: true, cell: (d) => micros(d.max_micros, cur) },
        { label: "Mean", num: true, cell: (d) => micros(d.mean_micros, cur) },
        { label: "Share of LTV", num: true, cell: (d) => `${(d.share * 100).toFixed(1)}%` },
      ], s.deciles, "LTV deciles"));
}

function heatMap(list) {
  const months = Math.max(0, ...list.cohorts.map((c) => c.retention.length));
  const cell = (r) => {
    const pctText = `${(r * 100).toFixed(0)}%`;
    // Lightness falls with retention; text flips to white on the darker cells (contrast AA).
    const light = 96 - Math.round(r * 60);
    return h("td", { class: "num", style: `background:hsl(221 83% ${light}%);color:${light < 60 ? "#fff" : "#111827"}` }, pctText);
  };
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Retention heat map" }, h("table", { class: "heat" },
    h("caption", { class: "sr-only" }, "Retention by cohort and month since first purchase"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Cohort"), h("th", { scope: "col", class: "num" }, "Customers"),
      Array.from({ length: months }, (_, k) => h("th", { scope: "col", class: "num" }, `M${k}`)))),
    h("tbody", {}, list.cohorts.map((c) => h("tr", {}, h("th", { scope: "row" }, c.cohort_id),
      h("td", { class: "num" }, c.customers), c.retention.map(cell))))));
}

function segmentBuilder() {
  const rows = h("div", { class: "stack" });
  const count = h("output", { "aria-live": "polite", "data-testid": "segment-count" }, "–");
  const problem = h("p", { class: "error" });
  let timer = null;
  const conditions = () => [...rows.children].map((row) => {
    const [f, op, v] = row.querySelectorAll("select, input");
    const kind = FIELDS[f.value];
    let value = v.value.trim();
    if (kind === "integer") value = Number(value);
    if (kind === "boolean") value = value !== "false";
    return { field: f.value, op: op.value, value };
  });
  const preview = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        const out = await api("/engage/api/v1/segments/preview", { method: "POST", query: { limit: 1 }, body: { rule: { all: conditions() } } });
        count.textContent = out.total.toLocaleString();
        problem.textContent = "";
      } catch (err) { problem.textContent = err.message; }
    }, 300);
  };
  const addRow = (fieldName = "purchases", op = ">=", value = "2") => {
    const f = h("select", { "aria-label": "Field" }, Object.keys(FIELDS).map((k) => h("option", { value: k, selected: k === fieldName }, k)));
    const o = h("select", { "aria-label": "Operator" });
    const v = h("input", { "aria-label": "Value", value });
    const fillOps = () => { o.replaceChildren(...OPS[FIELDS[f.value]].map((x) => h("option", { value: x, selected: x === op }, x))); };
    fillOps();
    f.addEventListener("change", () => { fillOps(); preview(); });
    for (const el of [o, v]) el.addEventListener("input", preview);
    const remove = h("button", { type: "button", class: "secondary", "aria-label": "Remove condition", onclick: () => { row.remove(); preview(); } }, "×");
    const row = h("div", { class: "inline" }, f, o, v, remove);
    rows.append(row);
    preview();
  };
  addRow();
  const name = h("input", { name: "segment_name" });
  const id = h("input", { name: "segment_id", pattern: "[a-z0-9_\\-]{1,64}" });
  const save = needs("write", h("form", { class: "inline" }, field("Segment id", id), field("Name", name), h("button", { type: "submit" }, "Save segment")));
  if (save) save.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await attempt(() => api("/engage/api/v1/segments", { method: "POST", body: { segment_id: id.value.trim(), name: name.value.trim(), rule: { all: conditions() } } }), "Segment saved");
  });
  return h("div", { class: "card" },
    h("p", {}, "Customers matching all of these: ", h("strong", {}, count)),
    rows, h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => addRow() }, "Add condition")),
    problem, save || "");
}

function rules(list) {
  const result = h("div");
  return h("div", {},
    table([
      { label: "Rule", cell: (r) => r.name },
      { label: "Churn risk ≥", num: true, cell: (r) => r.min_churn_risk },
      { label: "Channel", cell: (r) => r.channel },
      { label: "Template", cell: (r) => r.template },
      { label: "Every", num: true, cell: (r) => `${r.period_days} days` },
      { label: "", cell: (r) => needs("write", h("button", {
        type: "button", "aria-label": `Dry run ${r.name}`,
        onclick: async () => {
          const out = await attempt(() => api(`/engage/api/v1/rules/${encodeURIComponent(r.rule_id)}/run`, { method: "POST", query: { dry_run: true } }));
          if (out) {
            result.replaceChildren(h("h3", {}, `Dry run of ${r.name}: ${out.targets.length} customers would get ${out.template} by ${out.channel}`),
              table([
                { label: "Customer", cell: (t) => t.customer_id },
                { label: "Churn risk", num: true, cell: (t) => `${(t.churn_risk * 100).toFixed(1)}%` },
                { label: "Outcome", cell: (t) => t.outcome },
                { label: "Reason", cell: (t) => t.reason || "" },
              ], out.targets.slice(0, 100), "Dry run targets"));
          }
        },
      }, "Dry run")) },
    ], list, "Retention rules"),
    result);
}

export async function render(main) {
  main.replaceChildren(h("h1", {}, "Customers"), h("p", { class: "muted" }, "Loading…"));
  const parts = await Promise.all([
    section("Lifetime value", async () => ltvSpread(await api("/engage/api/v1/ltv-spread", { query: { bins: 12 } }))),
    section("Churn risk", async () => churnList(await api("/engage/api/v1/churn-risk", { query: { threshold: 0.7, limit: 50 } }))),
    section("RFM segments", async () => {
      const segs = await api("/engage/api/v1/rfm");
      return barChart("Customers per RFM segment", segs.map((s) => s.segment), segs.map((s) => s.customers), { yLabel: "customers" });
    }),
    section("Cohorts: retention by month", async () => heatMap(await api("/engage/api/v1/cohorts"))),
    section("Segment builder", async () => segmentBuilder()),
    section("Retention rules", async () => rules(await api("/engage/api/v1/rules"))),
  ]);
  main.replaceChildren(h("h1", {}, "Customers"), ...parts);
  return null;
}

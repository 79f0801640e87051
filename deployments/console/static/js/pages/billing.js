// Billing: plans, customers, invoices (with their PDFs), MRR and net revenue retention by
// month, and usage per billable metric over the last 30 days.
import { api } from "../api.js";
import { h, money, badge, table } from "../ui.js";
import { barChart } from "../chart.js";

const MONTHS = 6;

function lastMonths(n) {
  const out = [];
  const d = new Date();
  d.setUTCDate(1);
  for (let i = 0; i < n; i += 1) {
    out.unshift(`${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`);
    d.setUTCMonth(d.getUTCMonth() - 1);
  }
  return out;
}

export async function render(main) {
  const months = lastMonths(MONTHS);
  const to = new Date();
  const from = new Date(to.getTime() - 30 * 86_400_000);
  const [plans, customers, invoices, metrics, mrr] = await Promise.all([
    api("/billing/api/v1/plans"),
    api("/billing/api/v1/customers"),
    api("/billing/api/v1/invoices", { query: { limit: 100 } }),
    api("/billing/api/v1/metrics"),
    api("/billing/api/v1/analytics/mrr", { query: { month: months.at(-1), months: MONTHS } }),
  ]);
  const usage = await Promise.all(metrics.map((m) => api("/billing/api/v1/analytics/usage", {
    query: { metric: m.code, from: from.toISOString(), to: to.toISOString(), granularity: "day" },
  })));
  // One entry per month and currency billed; the chart shows the first currency.
  const currency = (mrr[0] || {}).currency || "USD";
  const mrrOf = (month) => mrr.find((r) => r.month === month && r.currency === currency);
  const charts = h("div", { class: "grid" },
    barChart(`MRR by month (${currency})`, months, months.map((m) => Number((mrrOf(m) || { mrr: { amount: 0 } }).mrr.amount)), { yLabel: currency }),
    barChart("Net revenue retention by month (%)", months, months.map((m) => Number((mrrOf(m) || {}).net_revenue_retention_percent ?? 0)), { yLabel: "%" }),
    ...metrics.map((m, i) => barChart(`Usage: ${m.code} (last 30 days)`,
      usage[i].map((p) => p.start.slice(5, 10)), usage[i].map((p) => Number(p.quantity)), { yLabel: m.code })));
  main.replaceChildren(
    h("h1", {}, "Billing"), charts,
    h("h2", {}, "Invoices"),
    table([
      { label: "Number", cell: (i) => i.number || "draft" },
      { label: "Customer", cell: (i) => i.customer_id },
      { label: "Plan", cell: (i) => i.plan || "–" },
      { label: "Period", cell: (i) => (i.period_start ? `${i.period_start.slice(0, 10)} – ${(i.period_end || "").slice(0, 10)}` : "–") },
      { label: "Status", cell: (i) => badge(i.status) },
      { label: "Total", num: true, cell: (i) => money(i.total) },
      { label: "PDF", cell: (i) => h("a", { href: `/billing/api/v1/invoices/${i.id}/pdf`, download: "", "aria-label": `PDF of invoice ${i.number || i.id}` }, "PDF") },
    ], invoices, "Invoices"),
    h("h2", {}, "Plans"),
    table([
      { label: "Plan", cell: (p) => `${p.name || p.code} (v${p.version})` },
      { label: "Interval", cell: (p) => p.interval },
      { label: "Base fee", num: true, cell: (p) => `${(p.base_fee_minor / 100).toFixed(2)} ${p.currency}` },
      { label: "Charges", cell: (p) => p.charges.map((c) => c.metric_code).join(", ") || "none" },
      { label: "Trial", num: true, cell: (p) => `${p.trial_days} days` },
    ], plans, "Plans"),
    h("h2", {}, "Customers"),
    table([
      { label: "Customer", cell: (c) => c.customer_id },
      { label: "Name", cell: (c) => c.name },
      { label: "Currency", cell: (c) => c.currency },
      { label: "Credit", num: true, cell: (c) => money(c.credit_balance) },
      { label: "Payment method", cell: (c) => (c.has_payment_method ? "yes" : "no") },
    ], customers, "Customers"));
  return null;
}

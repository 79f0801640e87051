// Campaigns: the list (status, budget, spend, pacing error, ROAS), a page at a time, and a form to
// create one (SyncFlow validates it; its message is shown as it is).
import { api } from "../api.js";
import { h, field, money, pct, badge, table, needs, attempt } from "../ui.js";

const PLATFORMS = ["google_ads", "meta", "tiktok", "linkedin", "amazon"];
const PAGE = 100;

function createForm(onCreated) {
  const id = h("input", { name: "campaign_id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.:\\-]*" });
  const name = h("input", { name: "name", required: true });
  const budget = h("input", { name: "budget", required: true, inputmode: "decimal", value: "500" });
  const hours = h("input", { name: "hours", type: "number", min: "1", max: "720", value: "24", required: true });
  const roas = h("input", { name: "roas", inputmode: "decimal", value: "2.5", required: true });
  const value = h("input", { name: "value_per_conversion", inputmode: "decimal", value: "60", required: true });
  const maxBid = h("input", { name: "max_bid", inputmode: "decimal", value: "4.00" });
  const boxes = PLATFORMS.map((p, i) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "platform", value: p, checked: i < 2 }), p));
  const form = h("form", { class: "inline card", "aria-label": "New campaign" },
    field("Campaign id", id), field("Name", name), field("Budget (USD)", budget),
    field("Runs for (hours)", hours), field("Target ROAS", roas),
    field("Value per conversion (USD)", value), field("Max bid (USD)", maxBid),
    h("fieldset", {}, h("legend", {}, "Platforms"), boxes),
    h("button", { type: "submit" }, "Create campaign"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const now = Date.now();
    const body = {
      campaign_id: id.value.trim(), name: name.value.trim(), budget: budget.value.trim(), currency: "USD",
      starts_at: new Date(now - 60_000).toISOString(),
      ends_at: new Date(now + Number(hours.value) * 3_600_000).toISOString(),
      goal: { kind: "roas", target: roas.value.trim() },
      platforms: boxes.map((b) => b.querySelector("input")).filter((b) => b.checked).map((b) => b.value),
      ad_groups: [{ ad_group_id: "main", segment: "all", value_per_conversion: value.value.trim() }],
      max_bid: maxBid.value.trim() || null,
    };
    const created = await attempt(() => api("/flow/api/v1/campaigns", { method: "POST", body }), "Campaign created");
    if (created) onCreated(created);
  });
  return form;
}

export async function render(main) {
  const body = h("div");
  const heading = h("h1", {}, "Campaigns");
  const creating = needs("write", h("details", {}, h("summary", {}, "New campaign"),
    createForm((c) => { location.hash = `#/campaigns/${encodeURIComponent(c.campaign_id)}`; })));
  main.replaceChildren(heading, creating || "", body);
  const cursors = [null];

  async function show(after) {
    const page = await api("/flow/api/v1/campaigns", { query: { limit: PAGE, after, roas: true } });
    const ids = page.campaigns.map((c) => c.campaign_id);
    const budgets = ids.length ? await api("/shield/api/v1/budgets", { query: { campaign_id: ids } }) : [];
    const byId = new Map(budgets.map((b) => [b.campaign_id, b]));
    const rows = page.campaigns.map((c) => ({ ...c, shield: byId.get(c.campaign_id) }));
    const nav = h("div", { class: "actions" },
      cursors.length > 1 ? h("button", { class: "secondary", onclick: () => { cursors.pop(); show(cursors[cursors.length - 1]); } }, "Previous page") : null,
      page.next_after ? h("button", { class: "secondary", onclick: () => { cursors.push(page.next_after); show(page.next_after); } }, "Next page") : null);
    body.replaceChildren(table([
      { label: "Campaign", cell: (r) => h("a", { href: `#/campaigns/${encodeURIComponent(r.campaign_id)}` }, r.name) },
      { label: "Status", cell: (r) => badge(r.status) },
      { label: "Budget", num: true, cell: (r) => money(r.budget) },
      { label: "Spent", num: true, cell: (r) => money(r.shield && r.shield.committed) },
      { label: "Reserved", num: true, cell: (r) => money(r.shield && r.shield.reserved) },
      { label: "Pacing error", num: true, cell: (r) => pct(r.pacing_error) },
      { label: "ROAS", num: true, cell: (r) => (r.roas === null || r.roas === undefined ? "–" : r.roas.toFixed(2)) },
      { label: "Goal", cell: (r) => `${r.goal.kind.toUpperCase()} ${r.goal.target}` },
      { label: "Platforms", cell: (r) => r.platforms.join(", ") },
    ], rows, "Campaigns"), nav);
  }
  await show(null);
  return null;
}

// Budgets and platforms: every campaign's caps, committed and reserved spend, over-delivery
// blocks with the unblock action (SyncShield), and each ad platform's breaker and rate budget.
import { api } from "../api.js";
import { h, money, badge, table, needs, attempt } from "../ui.js";

const PAGE = 100;

export async function render(main) {
  const budgetsBox = h("div");
  const platformsBox = h("div");
  main.replaceChildren(h("h1", {}, "Budgets & platforms"), h("h2", {}, "Campaign budgets"), budgetsBox,
    h("h2", {}, "Ad platforms"), platformsBox);

  async function showBudgets(after) {
    const page = await api("/flow/api/v1/campaigns", { query: { limit: PAGE, after } });
    const ids = page.campaigns.map((c) => c.campaign_id);
    const budgets = ids.length ? await api("/shield/api/v1/budgets", { query: { campaign_id: ids } }) : [];
    budgetsBox.replaceChildren(table([
      { label: "Campaign", cell: (b) => h("a", { href: `#/campaigns/${encodeURIComponent(b.campaign_id)}` }, b.campaign_id) },
      { label: "Budget", num: true, cell: (b) => money(b.budget) },
      { label: "Daily cap", num: true, cell: (b) => (b.daily_budget ? money(b.daily_budget) : "none") },
      { label: "Platform caps", cell: (b) => Object.entries(b.platform_budgets).map(([p, m]) => `${p} ${money(m)}`).join(", ") || "none" },
      { label: "Committed", num: true, cell: (b) => money(b.committed) },
      { label: "Reserved", num: true, cell: (b) => money(b.reserved) },
      { label: "Remaining", num: true, cell: (b) => money(b.remaining) },
      { label: "Over-delivered", num: true, cell: (b) => money(b.over_delivered) },
      { label: "State", cell: (b) => (b.blocked ? badge("blocked") : badge("ok")) },
      { label: "Action", cell: (b) => (b.blocked ? needs("admin", h("button", {
        type: "button", "aria-label": `Unblock ${b.campaign_id}`,
        onclick: async () => {
          const done = await attempt(() => api(`/shield/api/v1/budget/${encodeURIComponent(b.campaign_id)}/unblock`, { method: "POST" }), "Unblocked");
          if (done) showBudgets(after);
        },
      }, "Unblock")) : "") },
    ], budgets, "Campaign budgets"),
    page.next_after ? h("div", { class: "actions" }, h("button", { class: "secondary", onclick: () => showBudgets(page.next_after) }, "Next page")) : "");
  }

  async function showPlatforms() {
    const platforms = await api("/shield/api/v1/platforms");
    const act = (p, what) => needs("operator", h("button", {
      type: "button", class: what === "open" ? "danger" : "secondary",
      onclick: async () => { if (await attempt(() => api(`/shield/api/v1/platforms/${p.platform}/${what}`, { method: "POST" }), `${p.platform}: ${what}`)) showPlatforms(); },
    }, what === "open" ? "Open breaker" : "Reset breaker"));
    platformsBox.replaceChildren(table([
      { label: "Platform", cell: (p) => p.platform },
      { label: "Breaker", cell: (p) => badge(p.breaker.state) },
      { label: "Failure rate", num: true, cell: (p) => (p.breaker.failure_rate === null ? "–" : `${p.breaker.failure_rate.toFixed(1)}%`) },
      { label: "Calls (failed)", num: true, cell: (p) => `${p.breaker.buffered_calls} (${p.breaker.failed_calls})` },
      { label: "Your breaker", cell: (p) => (p.tenant_breaker ? badge(p.tenant_breaker.state) : "–") },
      { label: "Rate budget", num: true, cell: (p) => `${p.rate_per_s}/s, burst ${p.burst}` },
      { label: "Tokens now", num: true, cell: (p) => p.tokens.toFixed(1) },
      { label: "Operator", cell: (p) => h("span", {}, act(p, "reset"), " ", act(p, "open")) },
    ], platforms, "Ad platforms"));
  }

  await Promise.all([showBudgets(null), showPlatforms()]);
  return null;
}

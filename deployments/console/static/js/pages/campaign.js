// One campaign: cumulative spend against its target curve, in all and per platform, live
// (server-sent events from SyncFlow after every bid-loop tick), what each platform was
// granted per tick, the newest
// tick's decisions with their reasons, each platform's spend so far (SyncShield, refreshed
// after every tick), and the controls (start, pause, stop, budget, max bid; daily and
// per-platform caps in SyncShield).
import { api } from "../api.js";
import { h, field, money, micros, badge, clock, table, needs, attempt, toast } from "../ui.js";
import { timeChart } from "../chart.js";

const ACTIONS = { draft: ["start", "stop"], running: ["pause", "stop"], paused: ["start", "stop"], stopped: [] };

export async function render(main, [id]) {
  const path = `/flow/api/v1/campaigns/${encodeURIComponent(id)}`;
  const shieldPath = `/shield/api/v1/budget/${encodeURIComponent(id)}`;
  let [campaign, pacing, shield] = await Promise.all([api(path), api(`${path}/pacing`), api(shieldPath).catch(() => null)]);
  const head = h("div");
  const platformNames = [...campaign.platforms].sort();
  const spendChart = timeChart("Cumulative spend against the target curve, in all and by platform",
    ["Spent", "Target", ...platformNames], { dashed: ["Target"], yLabel: campaign.budget.currency });
  const grantChart = timeChart("Granted per tick, by platform", platformNames, { yLabel: campaign.budget.currency });
  const decisions = h("div");
  const ticks = h("span", { "data-testid": "points" });
  const controls = h("div");
  const byPlatform = h("div");
  main.replaceChildren(head, controls, h("div", { class: "grid" }, spendChart.el, grantChart.el),
    h("p", { class: "muted" }, "Ticks shown: ", ticks),
    h("h2", {}, "Spend by platform"), byPlatform,
    h("h2", {}, "Newest decisions"), decisions);

  function drawPlatforms() {
    if (!shield) { byPlatform.replaceChildren(h("p", { class: "muted" }, "SyncShield holds no budget for this campaign.")); return; }
    byPlatform.replaceChildren(table([
      { label: "Platform", cell: (p) => p },
      { label: "Spent", num: true, cell: (p) => money((shield.platforms[p] || {}).committed) },
      { label: "Reserved", num: true, cell: (p) => money((shield.platforms[p] || {}).reserved) },
      { label: "Cap", num: true, cell: (p) => (shield.platform_budgets[p] ? money(shield.platform_budgets[p]) : "none") },
    ], platformNames, "Spend by platform"));
  }
  // One SyncShield read per tick at most, however many events arrive while it is in flight.
  let refreshing = false;
  async function refreshShield() {
    if (refreshing) return;
    refreshing = true;
    try { shield = await api(shieldPath); drawPlatforms(); } catch { /* the next tick retries */ }
    refreshing = false;
  }

  const points = [];
  function drawHead() {
    head.replaceChildren(
      h("h1", {}, campaign.name, " ", badge(campaign.status)),
      h("div", { class: "kpis" },
        h("div", { class: "kpi" }, h("b", {}, money(campaign.budget)), h("span", {}, "budget")),
        h("div", { class: "kpi" }, h("b", {}, money(campaign.spent)), h("span", {}, "spent")),
        h("div", { class: "kpi" }, h("b", {}, `${campaign.goal.kind.toUpperCase()} ${campaign.goal.target}`), h("span", {}, "goal")),
        h("div", { class: "kpi" }, h("b", {}, campaign.max_bid ? money(campaign.max_bid) : "none"), h("span", {}, "max bid"))));
  }

  function draw(view) {
    points.push(...view.points);
    if (view.points.length) {
      const last = view.points.at(-1);
      campaign = { ...campaign, spent: { amount: String(last.spent_micros / 1e6), currency: view.currency } };
      drawHead();
      if (points.length > view.points.length) refreshShield();  // a tick after the first draw
    }
    const cur = view.currency;
    const xs = points.map((p) => Date.parse(p.at) / 1000);
    // Ticks recorded before SyncFlow kept spend per platform carry zeros there: no point.
    const byPlatformKnown = (pt) => pt.spent_micros === 0 || Object.values(pt.platform_spent_micros).some((v) => v > 0);
    const platformLine = (p) => points.map((pt) => (byPlatformKnown(pt) ? (pt.platform_spent_micros[p] ?? 0) / 1e6 : null));
    spendChart.set([xs, points.map((p) => p.spent_micros / 1e6), points.map((p) => p.target_micros / 1e6), ...platformNames.map(platformLine)],
      points.length ? `Spent ${micros(points.at(-1).spent_micros, cur)} against a target of ${micros(points.at(-1).target_micros, cur)} after ${points.length} ticks: ${platformNames.map((p) => `${p} ${micros(points.at(-1).platform_spent_micros[p] ?? 0, cur)}`).join(", ")}.` : "No ticks yet.");
    grantChart.set([xs, ...platformNames.map((p) => points.map((pt) => (pt.reserved_micros[p] ?? 0) / 1e6))],
      "What SyncShield granted each platform per tick.");
    ticks.textContent = String(points.length);
    if (view.decisions.length) {
      decisions.replaceChildren(table([
        { label: "Time", cell: (d) => clock(d.decided_at) },
        { label: "Ad group", cell: (d) => d.ad_group_id },
        { label: "Platform", cell: (d) => d.platform },
        { label: "Bid", num: true, cell: (d) => micros(d.bid_micros, cur) },
        { label: "Multiplier", num: true, cell: (d) => d.pacing_multiplier.toFixed(3) },
        { label: "Granted", num: true, cell: (d) => micros(d.reserved_micros, cur) },
        { label: "Reason", cell: (d) => d.reason },
        { label: "Platform said", cell: (d) => d.connector_result },
      ], view.decisions, "Newest decisions"));
    } else if (!points.length) {
      decisions.replaceChildren(h("p", { class: "muted" }, "No decisions yet: a campaign decides while it is running and inside its schedule."));
    }
    if (view.status !== campaign.status) { campaign = { ...campaign, status: view.status }; drawHead(); drawControls(); }
  }

  async function act(action) {
    const updated = await attempt(() => api(`${path}/${action}`, { method: "POST" }), `Campaign: ${action}`);
    if (updated) { campaign = updated; drawHead(); drawControls(); }
  }

  function drawControls() {
    const buttons = (ACTIONS[campaign.status] || []).map((a) =>
      h("button", { type: "button", class: a === "stop" ? "danger" : null, onclick: () => act(a) }, a[0].toUpperCase() + a.slice(1)));
    const budget = h("input", { name: "budget", inputmode: "decimal", value: campaign.budget.amount, required: true });
    const maxBid = h("input", { name: "max_bid", inputmode: "decimal", value: campaign.max_bid ? campaign.max_bid.amount : "" });
    const edit = h("form", { class: "inline card", "aria-label": "Budget and max bid" },
      field(`Budget (${campaign.budget.currency})`, budget), field("Max bid", maxBid), h("button", { type: "submit" }, "Save"));
    edit.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { budget: budget.value.trim() };
      if (maxBid.value.trim()) body.max_bid = maxBid.value.trim();
      const updated = await attempt(() => api(path, { method: "PATCH", body }), "Saved");
      if (updated) { campaign = updated; drawHead(); }
    });
    const daily = h("input", { name: "daily_budget", inputmode: "decimal", value: shield && shield.daily_budget ? shield.daily_budget.amount : "" });
    const perPlatform = platformNames.map((p) => [p, h("input", {
      name: `cap_${p}`, inputmode: "decimal",
      value: shield && shield.platform_budgets[p] ? shield.platform_budgets[p].amount : "" })]);
    const caps = h("form", { class: "inline card", "aria-label": "Caps in SyncShield" },
      field("Daily cap", daily), perPlatform.map(([p, input]) => field(`Cap on ${p}`, input)),
      h("button", { type: "submit" }, "Set caps"));
    caps.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      // The form is the whole set of caps: an empty field means no cap there.
      const body = {
        daily_budget: daily.value.trim() || null,
        platform_budgets: Object.fromEntries(perPlatform.filter(([, i]) => i.value.trim()).map(([p, i]) => [p, i.value.trim()])),
      };
      const updated = await attempt(() => api(shieldPath, { method: "PATCH", body }), "Caps set");
      if (updated) { shield = updated; drawPlatforms(); }
    });
    controls.replaceChildren(
      needs("write", h("div", { class: "actions", role: "group", "aria-label": "Campaign actions" }, buttons)) || "",
      needs("write", campaign.status === "stopped" ? null : edit) || "",
      needs("admin", caps) || "");
  }

  drawHead();
  drawControls();
  drawPlatforms();
  draw(pacing);

  // Each (re)connection asks only for the ticks after the newest one drawn.
  let stream = null;
  let retry = null;
  function listen() {
    const after = points.length ? `?after=${encodeURIComponent(points.at(-1).at)}` : "";
    stream = new EventSource(`${path}/pacing/stream${after}`);
    stream.addEventListener("pacing", (ev) => draw(JSON.parse(ev.data)));
    stream.addEventListener("ended", (ev) => { stream.close(); toast(ev.data); });
    stream.addEventListener("error", () => { stream.close(); retry = setTimeout(listen, 3000); });
  }
  listen();
  return () => { clearTimeout(retry); stream.close(); };
}

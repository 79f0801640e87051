// Models: SyncValue's LTV models and SyncEngage's churn models, each version with its status,
// traffic share and metrics; promote (LTV: to a share of customers as the A/B candidate) and
// roll back (admin); the LTV model's drift per feature (PSI against its training reference).
import { api } from "../api.js";
import { h, table, needs, attempt, clock } from "../ui.js";
import { barChart } from "../chart.js";

function metricsText(m) {
  return Object.entries(m).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k} ${Number(v).toPrecision(3)}`).join(", ");
}

async function registry(title, base, allowsShare, refresh) {
  let versions;
  try {
    versions = await api(`${base}/api/v1/models`);
  } catch (err) {
    if (err.status === 401) throw err;
    return h("section", {}, h("h2", {}, title), h("p", { class: "muted" }, err.message));
  }
  const promote = (v) => {
    const share = h("input", { type: "number", min: "1", max: "100", value: "100", "aria-label": `Traffic percent for version ${v.version}`, style: "width:5em" });
    const form = h("form", { class: "inline" }, allowsShare ? share : "", h("button", { type: "submit", "aria-label": `Promote ${title} version ${v.version}` }, "Promote"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { traffic_percent: Number(share.value) };
      if (await attempt(() => api(`${base}/api/v1/models/${v.version}/promote`, { method: "POST", body }), `Version ${v.version} promoted`)) refresh();
    });
    return form;
  };
  return h("section", {}, h("h2", {}, title),
    table([
      { label: "Version", num: true, cell: (v) => v.version },
      { label: "Status", cell: (v) => v.status },
      { label: "Traffic", num: true, cell: (v) => `${v.traffic_percent}%` },
      { label: "Calibration end", cell: (v) => v.calibration_end },
      { label: "Horizon", num: true, cell: (v) => `${v.horizon_days} d` },
      { label: "Metrics", cell: (v) => metricsText(v.metrics) || "–" },
      { label: "", cell: (v) => (v.status === "production" ? "" : needs("admin", promote(v))) },
    ], versions, `${title} versions`),
    needs("admin", h("div", { class: "actions" }, h("button", {
      type: "button", class: "secondary",
      onclick: async () => { if (await attempt(() => api(`${base}/api/v1/models/rollback`, { method: "POST" }), "Rolled back")) refresh(); },
    }, `Roll back ${title}`))) || "");
}

async function drift(ltvServing) {
  // Drift is measured against the production model's reference: without one there is none
  // to show (and asking would be a 409).
  if (!ltvServing) return h("section", {}, h("h2", {}, "LTV model drift"), h("p", { class: "muted" }, "No LTV model in production, so no drift to measure: train one with `kiki train ltv` and promote it."));
  try {
    const report = await api("/value/api/v1/drift");
    const names = Object.keys(report.psi);
    return h("section", {}, h("h2", {}, "LTV model drift"),
      h("p", { class: report.stale ? "error" : "muted" }, report.stale ? `Stale: ${report.drifted.join(", ")} moved past PSI ${report.threshold}.` : `Stable: no feature past PSI ${report.threshold} (${report.live_rows} live rows, measured at ${clock(report.measured_at)}).`),
      barChart("Drift per feature (PSI)", names, names.map((n) => report.psi[n]), { yLabel: "PSI" }));
  } catch (err) {
    if (err.status === 401) throw err;
    return h("section", {}, h("h2", {}, "LTV model drift"), h("p", { class: "muted" }, err.message));
  }
}

export async function render(main) {
  const refresh = async () => {
    const ltv = await api("/value/api/v1/models").catch(() => []);
    const parts = await Promise.all([
      registry("LTV model", "/value", true, refresh),
      registry("Churn model", "/engage", false, refresh),
      drift(ltv.some((v) => v.status === "production")),
    ]);
    main.replaceChildren(h("h1", {}, "Models"), ...parts);
  };
  await refresh();
  return null;
}

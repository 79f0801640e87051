// Creatives (SyncCreate): generate from a form (product, brand colours, placement); the
// gallery of recent experiments, each variant with its image, compliance score and, on
// opening, its compliance breakdown and image-safety verdict; CTR and probability of being
// best once results are reported.
import { api } from "../api.js";
import { h, field, table, needs, attempt, toast } from "../ui.js";

function variantCard(v) {
  const detail = h("div");
  const more = h("details", {}, h("summary", {}, "Compliance and safety"), detail);
  more.addEventListener("toggle", async () => {
    if (!more.open || detail.childElementCount) return;
    const c = await attempt(() => api(`/create/api/v1/creatives/${v.creative_id}`));
    if (!c) return;
    detail.append(
      table([
        { label: "Check", cell: ([k]) => k },
        { label: "Score", num: true, cell: ([, p]) => p.score },
        { label: "Weight", num: true, cell: ([, p]) => p.weight },
        { label: "Detail", cell: ([, p]) => Object.entries(p.detail).map(([k, d]) => `${k}: ${typeof d === "object" ? JSON.stringify(d) : d}`).join("; ").slice(0, 160) },
      ], Object.entries(c.compliance.breakdown), `Compliance of variant ${v.variant}`),
      h("p", {}, c.safety.checked ? (c.safety.safe ? "Image safety: passed" : `Image safety: refused (${c.safety.reason})`) : "Image safety: not checked (no classifier configured)"));
  });
  return h("figure", { class: "card creative" },
    h("img", { src: v.image_url, alt: `Variant ${v.variant}: ${v.headline}`, loading: "lazy", width: 240 }),
    h("figcaption", {}, h("strong", {}, v.headline), h("br"),
      `Compliance ${v.compliance_score}/100`,
      v.ctr === null ? "" : ` · CTR ${(v.ctr * 100).toFixed(2)}% · P(best) ${(v.p_best_ctr * 100).toFixed(0)}%`),
    more);
}

function experiment(e) {
  return h("section", { class: "card", "aria-label": `Experiment ${e.experiment_id}` },
    h("h3", {}, `${e.placement} · ${new Date(e.created_at).toLocaleString()}`),
    h("div", { class: "gallery" }, e.variants.map(variantCard)));
}

export async function render(main) {
  const [placements, recent] = await Promise.all([api("/create/api/v1/placements"), api("/create/api/v1/experiments", { query: { limit: 10 } })]);
  const gallery = h("div", { "data-testid": "gallery" }, recent.length ? recent.map(experiment) : h("p", { class: "muted" }, "No creatives yet."));
  const product = h("input", { name: "product", required: true });
  const features = h("input", { name: "features", placeholder: "comma-separated" });
  const brand = h("input", { name: "brand" });
  const colour = h("input", { name: "colour", type: "color", value: "#1d4ed8" });
  const placement = h("select", { name: "placement" }, placements.map((p) => h("option", { value: p.name }, `${p.name} (${p.width}×${p.height})`)));
  const variants = h("input", { name: "variants", type: "number", min: "1", max: "4", value: "2" });
  const form = h("form", { class: "inline card", "aria-label": "Generate creatives" },
    field("Product", product), field("Features", features), field("Brand", brand), field("Brand colour", colour),
    field("Placement", placement), field("Variants", variants), h("button", { type: "submit" }, "Generate"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    button.textContent = "Generating…";
    const body = {
      product: { name: product.value.trim(), features: features.value.split(",").map((f) => f.trim()).filter(Boolean) },
      brand: { name: brand.value.trim() || product.value.trim(), primary_colors: [colour.value] },
      platform: placement.value, variants: Number(variants.value),
    };
    const made = await attempt(() => api("/create/api/v1/generate", { method: "POST", body }));
    button.disabled = false;
    button.textContent = "Generate";
    if (made) {
      const e = await api(`/create/api/v1/experiments/${made.experiment_id}`);
      if (gallery.querySelector("p.muted")) gallery.replaceChildren();
      gallery.prepend(experiment(e));
      toast("Creatives generated");  // once they are in the gallery
    }
  });
  main.replaceChildren(h("h1", {}, "Creatives"), needs("write", form) || "", h("h2", {}, "Gallery"), gallery);
  return null;
}

// Time-series charts with uPlot (npm, copied into static/vendor by `make`). Each chart is an
// image to assistive technology, with a text summary the caller keeps current.
import uPlot from "../vendor/uPlot.esm.js";
import { h } from "./ui.js";

// Distinct at AA contrast on white: a campaign's chart has 2 lines plus one per platform (5).
const PALETTE = ["#1d4ed8", "#b45309", "#047857", "#7c3aed", "#be123c", "#0e7490", "#4d7c0f", "#374151", "#9d174d"];

export function timeChart(title, seriesNames, { dashed = [], yLabel = "" } = {}) {
  const summary = h("p", { class: "sr-only" });
  const box = h("div", { class: "chart", role: "img", "aria-label": title });
  const wrap = h("figure", { class: "card" }, h("figcaption", {}, h("strong", {}, title)), box, summary);
  let plot = null;
  const series = [{}, ...seriesNames.map((name, i) => ({
    label: name, stroke: PALETTE[i % PALETTE.length], width: 2,
    dash: dashed.includes(name) ? [6, 4] : undefined,
  }))];
  const size = () => ({ width: Math.max(280, box.clientWidth || wrap.clientWidth || 600), height: 260 });
  const observer = new ResizeObserver(() => { if (plot) plot.setSize(size()); });
  return {
    el: wrap,
    set(data, text) {
      summary.textContent = text || "";
      if (!plot) {
        plot = new uPlot({ ...size(), series, axes: [{}, { label: yLabel, size: 70 }], legend: { live: false } }, data, box);
        observer.observe(box);
      } else {
        plot.setData(data);
      }
    },
    destroy() { observer.disconnect(); if (plot) plot.destroy(); },
  };
}

export function barChart(title, labels, values, { yLabel = "" } = {}) {
  const x = labels.map((_, i) => i);
  const box = h("div", { class: "chart", role: "img", "aria-label": title });
  const summary = h("p", { class: "sr-only" }, labels.map((l, i) => `${l}: ${values[i]}`).join("; "));
  const wrap = h("figure", { class: "card" }, h("figcaption", {}, h("strong", {}, title)), box, summary);
  if (!values.length) {
    box.replaceWith(h("p", { class: "muted" }, "No data in this period."));
    return wrap;
  }
  requestAnimationFrame(() => {
    new uPlot({
      width: Math.max(280, box.clientWidth || 600), height: 240,
      // One bar per label, each labelled, with half a bar's room at either end.
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
      axes: [{ splits: () => x, values: (_, ticks) => ticks.map((t) => labels[t] ?? "") }, { label: yLabel, size: 70 }],
      series: [{}, { label: yLabel || title, stroke: PALETTE[0], fill: "rgba(29,78,216,0.25)",
        paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } }],
      legend: { live: false },
    }, [x, values], box);
  });
  return wrap;
}

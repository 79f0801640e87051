// Small DOM helpers: every text goes in through textContent, never innerHTML.
import { can } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// A control only a key with `scope` may use: left out of the page for other keys (the API
// refuses them anyway).
export function needs(scope, el) { return can(scope) ? el : null; }

export function money(m) {
  if (!m) return "–";
  const n = Number(m.amount);
  return `${n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${m.currency}`;
}

export function micros(v, currency) {
  return money({ amount: String(v / 1e6), currency });
}

// A server time (ISO 8601) as the viewer's local time of day.
export function clock(iso) { return new Date(iso).toLocaleTimeString(); }

export function pct(x) { return x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`; }

export function badge(state) { return h("span", { class: `badge s-${state}` }, state); }

export function table(columns, rows, caption) {
  // A table wider than the screen scrolls sideways: focusable, so a keyboard can scroll it.
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption || "Table" },
    h("table", {},
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(r)))))
        : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing yet")))));
}

let toastTimer;
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

// Runs an action, saying what went wrong (the service's own message) if it fails.
export async function attempt(action, done) {
  try {
    const out = await action();
    if (done) toast(done);
    return out;
  } catch (err) {
    toast(`${err.message}`);
    return undefined;
  }
}

export function field(label, input) { return h("label", {}, label, input); }

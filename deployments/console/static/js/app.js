// The console's shell: sign-in, navigation (hash routes) and the current page.
import { api, setScopes } from "./api.js";
import { h, field, toast } from "./ui.js";
import * as campaigns from "./pages/campaigns.js";
import * as campaign from "./pages/campaign.js";
import * as budgets from "./pages/budgets.js";
import * as billing from "./pages/billing.js";
import * as customers from "./pages/customers.js";
import * as models from "./pages/models.js";
import * as creatives from "./pages/creatives.js";

const ROUTES = [
  [/^#\/campaigns\/([^/]+)$/, campaign, "#/campaigns"],
  [/^#\/campaigns$/, campaigns, "#/campaigns"],
  [/^#\/budgets$/, budgets, "#/budgets"],
  [/^#\/billing$/, billing, "#/billing"],
  [/^#\/customers$/, customers, "#/customers"],
  [/^#\/models$/, models, "#/models"],
  [/^#\/creatives$/, creatives, "#/creatives"],
];

const main = document.getElementById("main");
let who = null;
let cleanup = null;

function signInPage(problem) {
  const key = h("input", { type: "password", name: "api_key", autocomplete: "off", required: true, id: "api-key" });
  const error = h("p", { class: "error", role: "alert" }, problem || "");
  const form = h("form", { class: "stack card", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to KIKI"),
    h("p", { class: "muted" }, "Use an API key (`kiki keys create`, or the key `kiki up` prints). It stays on the server: this browser keeps only a session cookie."),
    field("API key", key), error, h("div", {}, h("button", { type: "submit" }, "Sign in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const state = await api("/console/api/v1/session", { method: "POST", body: { api_key: key.value } });
      key.value = "";
      signedIn(state.who);
      if (!location.hash || location.hash === "#/signin") location.hash = "#/campaigns";
      else route();
    } catch (err) {
      error.textContent = err.message;
      key.focus();
    }
  });
  main.replaceChildren(form);
  key.focus();
}

function signedIn(w) {
  who = w;
  setScopes(w.scopes);
  document.getElementById("who-text").textContent = `${w.tenant} · ${w.key_prefix} · ${w.scopes.join(", ")}`;
  document.getElementById("who").hidden = false;
  document.getElementById("nav").hidden = false;
}

function signedOut(problem) {
  who = null;
  setScopes([]);
  document.getElementById("who").hidden = true;
  document.getElementById("nav").hidden = true;
  if (cleanup) { cleanup(); cleanup = null; }
  main.removeAttribute("aria-busy");
  delete main.dataset.page;
  signInPage(problem);
}

async function route() {
  if (!who) return;
  if (cleanup) { cleanup(); cleanup = null; }
  const hash = location.hash || "#/campaigns";
  for (const [pattern, page, nav] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.getAttribute("href") === nav) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    // aria-busy until the page's data is drawn: assistive technology waits for it, and so do
    // the tests and `kiki bench console` (data-page says which page it is).
    main.setAttribute("aria-busy", "true");
    main.dataset.page = nav.slice(2);
    try {
      cleanup = (await page.render(main, m.slice(1).map(decodeURIComponent))) || null;
    } catch (err) {
      if (err.status === 401) { signedOut(err.message); return; }
      main.replaceChildren(h("h1", {}, "Could not load this page"), h("p", { class: "error" }, err.message));
    }
    main.removeAttribute("aria-busy");
    main.focus({ preventScroll: true });
    return;
  }
  location.hash = "#/campaigns";
}

document.getElementById("sign-out").addEventListener("click", async () => {
  try { await api("/console/api/v1/session", { method: "DELETE" }); } catch (err) { toast(err.message); }
  signedOut();
});
window.addEventListener("hashchange", route);

const state = await api("/console/api/v1/session");
if (state.signed_in) { signedIn(state.who); route(); } else signInPage();

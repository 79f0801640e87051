"""The console (`/console`) in a real browser: Debian's Chromium, headless, driven by
Playwright against the session's platform. Sign-in (HttpOnly session, no key in the page's
storage), a campaign created and started from the page with its pacing chart moving live,
scopes hiding controls while the API refuses them anyway, a revoked key ending the session,
budgets and platforms, billing with an invoice's PDF. Each page's screenshot is saved under
test-artifacts/console/ (KIKI_TEST_ARTIFACTS overrides); the browser's console must stay free
of errors."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from benchmarks.console import CHROMIUM, CHROMIUM_FLAGS, READY
from kiki.auth import Scope, ensure_tenant
from kiki.db.pool import connect
from kiki.engage.churn import fit_churn_model
from kiki.value import registry as ltv_registry
from kiki.value import transactions
from tests.conftest import SUPPRESSIONS, store_in
from tests.integration.conftest import RunningPlatform, new_key, run
from tests.integration.test_engage_api import promote_small_churn_model
from tests.integration.test_value_api import register_tiny_model, synthetic_purchases, tiny_model
from tests.unit.test_engage_churn import END, SMALL, simulate

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
expect.set_options(timeout=20_000)  # a busy machine: the platform answers in seconds at worst

TENANT = "console-ui"
ARTIFACTS = (
    Path(
        os.environ.get(
            "KIKI_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"
        )
    )
    / "console"
)
# axe-core, from npm like uPlot (`make console` copies it; the pages never load it).
AXE = Path(__file__).resolve().parents[2] / "deployments/console/static/vendor/axe.min.js"
# WCAG 2.1 A and AA: labels, names, contrast, keyboard (focusable, no traps).
AXE_RUN = """async () => {
  const found = await axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
  return found.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target).join(" | ")}`);
}"""
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


class Keys:
    """Keys of the tenant, and its customers: simulated purchases, a small churn model
    (SyncEngage's own test data) and a tiny LTV model (SyncValue's). Made before the browser
    starts: Playwright's sync API runs an event loop of its own in this thread."""

    def __init__(self, platform: RunningPlatform, models: Path) -> None:
        url = platform.database_url
        self.admin = run(new_key(url, TENANT))
        self.reader = run(new_key(url, TENANT, scopes=[Scope.READ]))
        self.doomed = run(new_key(url, TENANT))
        run(self._customers(platform, models))

    async def _customers(self, platform: RunningPlatform, models: Path) -> None:
        conn = await connect(platform.database_url)
        try:
            tenant = await ensure_tenant(conn, TENANT)
            history = simulate(customers=200)
            rows = transactions.from_frame(history.assign(quantity=1), "sim-")
            async with conn.transaction():
                await transactions.insert(conn, tenant.id, rows, SUPPRESSIONS)
            model = fit_churn_model(history[history["ts"] <= END], END, SMALL)
            saved = store_in(platform.settings, model.save(models / "churn"), "churn")
            for _ in range(
                2
            ):  # versions 1 and 2, the second in production: a rollback has a target
                await promote_small_churn_model(conn, tenant.id, saved)
            ltv = tiny_model(synthetic_purchases(customers=40), models / "ltv", platform.settings)
            await register_tiny_model(conn, tenant.id, *ltv)
            await ltv_registry.promote(conn, tenant.id, 1)
        finally:
            await conn.close()


@pytest.fixture(scope="module")
def keys(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(platform, tmp_path_factory.mktemp("console-models"))


@pytest.fixture(scope="module")
def browser(keys: Keys) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: `make chromium` installs it")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class Page:
    """One browser context and page, recording every console error and uncaught exception."""

    def __init__(self, browser: object, base_url: str, viewport: dict = LAPTOP) -> None:
        self.context = browser.new_context(viewport=viewport, accept_downloads=True)  # type: ignore[attr-defined]
        self.page = self.context.new_page()
        self.base_url = base_url
        self.errors: list[str] = []
        # Answers a test provokes on purpose (the browser logs every 4xx as an error): each
        # status here excuses one such line.
        self.expected: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: object) -> None:
        if message.type != "error":  # type: ignore[attr-defined]
            return
        text = message.text  # type: ignore[attr-defined]
        for status in self.expected:
            if f"status of {status}" in text:
                self.expected.remove(status)
                return
        self.errors.append(text)

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/console/{route}")

    def sign_in(self, key: str) -> None:
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#who").wait_for(state="visible")

    def shot(self, name: str) -> None:
        """The page's screenshot, once its data is drawn; and axe-core's accessibility check
        of it, failing on any serious or critical violation."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.wait_for_function(READY if self.page.locator("#nav").is_visible() else "true")
        self.page.wait_for_load_state("networkidle")
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        if not self.page.evaluate("typeof axe !== 'undefined'"):
            self.page.add_script_tag(path=str(AXE))
        violations = self.page.evaluate(AXE_RUN)
        assert violations == [], f"{name}: accessibility violations {violations}"

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], f"the browser console showed errors: {self.errors}"


def points(page: object) -> int:
    return int(page.get_by_test_id("points").inner_text() or 0)  # type: ignore[attr-defined]


def test_sign_in_create_start_and_watch_the_pacing_chart_move(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    ui = Page(browser, platform.base_url)
    page = ui.page
    ui.open()
    ui.shot("sign-in")
    ui.expected = ["401", "422"]  # a wrong key, then a negative budget
    page.get_by_label("API key").fill("kiki_AAAAAAAA_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked API key")

    ui.sign_in(keys.admin)
    (cookie,) = [c for c in ui.context.cookies() if c["name"] == "kiki_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert keys.admin not in cookie["value"]
    storage = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert storage == "[{},{}]" and keys.admin not in page.content()

    page.get_by_text("New campaign").click()
    page.get_by_label("Campaign id").fill("ui-spring")
    page.get_by_label("Name").fill("Spring from the console")
    page.get_by_label("Budget (USD)").fill("-5")
    page.get_by_role("button", name="Create campaign").click()
    # SyncFlow's own validation, its message shown as it is.
    expect(page.locator("#toast")).to_contain_text("budget")
    page.get_by_label("Budget (USD)").fill("800")
    page.get_by_role("button", name="Create campaign").click()
    page.wait_for_url("**/console/#/campaigns/ui-spring")
    expect(page.locator("h1")).to_contain_text("draft")

    page.evaluate("window.__same_page = true")
    page.get_by_role("button", name="Start").click()
    page.locator("h1 .badge", has_text="running").wait_for(timeout=10_000)
    deadline = time.monotonic() + 40
    while points(page) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    first = points(page)
    assert first >= 2, "no pacing points arrived within 40 s"
    page.wait_for_function(
        f"Number(document.querySelector('[data-testid=points]').textContent) > {first}",
        timeout=20_000,
    )
    assert page.evaluate("window.__same_page === true"), "the page reloaded"
    assert page.locator(".chart canvas").count() >= 2  # uPlot drew both charts
    assert (
        page.locator("td", has_text="reserved").count()
        + page.locator("td", has_text="ahead_of_pace").count()
        >= 1
    )  # the newest decisions, with their reasons
    ui.shot("campaign-live")
    # The spend chart's platform lines (that they add up is checked where the sandbox
    # delivers: tests/integration/test_flow_loop.py).
    legend = page.locator("figure", has_text="Cumulative spend").locator(".u-legend .u-label")
    assert {"Spent", "Target", "google_ads", "meta"} <= set(legend.all_inner_texts())

    page.get_by_label("Budget (USD)").fill("900")
    page.get_by_role("button", name="Save").click()
    page.locator(".kpi b", has_text="900.00 USD").wait_for(timeout=10_000)
    # Each platform's spend from SyncShield, and a per-platform cap set through its API.
    by_platform = page.get_by_role("table", name="Spend by platform")
    assert by_platform.locator("tbody tr").count() == 2  # google_ads and meta
    page.get_by_label("Cap on meta").fill("120")
    page.get_by_role("button", name="Set caps").click()
    by_platform.locator("tr", has_text="meta").locator("td", has_text="120.00 USD").wait_for()

    page.get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="Spring from the console").wait_for()
    assert "running" in page.locator("tbody tr", has_text="Spring from the console").inner_text()
    assert page.get_by_role("columnheader", name="ROAS").count() == 1
    ui.shot("campaigns")
    page.set_viewport_size(PHONE)
    ui.shot("campaigns-phone")
    ui.close()


def test_a_read_key_sees_no_controls_and_the_api_refuses_its_session(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    ui = Page(browser, platform.base_url)
    ui.open()
    # By keyboard alone: the key field has the focus, Tab reaches Sign in, Enter presses it.
    expect(ui.page.get_by_label("API key")).to_be_focused()
    ui.page.keyboard.type(keys.reader)
    ui.page.keyboard.press("Tab")
    assert ui.page.evaluate("document.activeElement.textContent") == "Sign in"
    ui.page.keyboard.press("Enter")
    ui.page.locator("#who").wait_for(state="visible")
    ui.page.goto(f"{platform.base_url}/console/#/campaigns/ui-spring")
    ui.page.locator("h1").wait_for()
    assert ui.page.get_by_role("button", name="Pause").count() == 0
    assert ui.page.get_by_role("button", name="Save").count() == 0
    ui.page.goto(f"{platform.base_url}/console/#/campaigns")
    ui.page.locator("table").wait_for()
    assert ui.page.get_by_text("New campaign").count() == 0

    (cookie,) = [c for c in ui.context.cookies() if c["name"] == "kiki_session"]
    with httpx.Client(base_url=platform.base_url, cookies={"kiki_session": cookie["value"]}) as c:
        refused = c.post("/flow/api/v1/campaigns/ui-spring/pause", headers={"X-KIKI-Console": "1"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "scope_missing"
        # A change sent with the cookie alone (what a forged cross-site form would send).
        forged = c.post("/flow/api/v1/campaigns/ui-spring/pause")
        assert forged.status_code == 403, forged.text
        assert forged.json()["error"]["code"] == "csrf_header_missing"
    ui.close()


def test_revoking_the_key_ends_its_console_session(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    ui = Page(browser, platform.base_url)
    ui.open()
    ui.sign_in(keys.doomed)
    ui.page.locator("table").wait_for()  # the first page's calls are done before the revocation
    prefix = keys.doomed.split("_")[1]
    revoked = httpx.delete(
        f"{platform.base_url}/shield/api/v1/keys/{prefix}",
        headers={"X-API-Key": keys.admin},
        timeout=30,
    )
    assert revoked.status_code == 200, revoked.text
    ui.page.reload()
    ui.page.get_by_role("button", name="Sign in").wait_for(timeout=10_000)
    assert ui.page.locator("#who").is_hidden()
    ui.close()


def test_budgets_platforms_and_billing_with_an_invoice_pdf(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    with httpx.Client(
        base_url=f"{platform.base_url}/billing/api/v1",
        headers={"X-API-Key": keys.admin},
        timeout=30,
    ) as billing:
        for path, body in [
            ("/metrics", {"code": "api_calls", "aggregation": "count"}),
            ("/plans", {"code": "growth", "name": "Growth", "interval": "monthly",
                        "currency": "USD", "base_fee_minor": 4900,
                        "charges": [{"metric_code": "api_calls", "charge_model": "standard",
                                     "unit_price": "0.01"}]}),
            ("/customers", {"customer_id": "acme", "name": "Acme", "currency": "USD"}),
            ("/subscriptions", {"customer_id": "acme", "plan_code": "growth",
                                "start_at": "2026-10-01T00:00:00Z"}),
            ("/events", {"events": [{"transaction_id": f"c{i}", "customer": "acme",
                                     "metric_code": "api_calls",
                                     "timestamp": "2026-10-10T10:00:00Z"} for i in range(5)]
                                   + [{"transaction_id": f"n{i}", "customer": "acme",
                                       "metric_code": "api_calls", "timestamp": recent}
                                      for i in range(3)]}),  # this month: the usage chart
            ("/periods/close", {"as_of": "2026-11-01T00:00:00Z"}),
        ]:  # fmt: skip
            answer = billing.post(path, json=body)
            assert answer.status_code in (200, 201), f"{path}: {answer.text}"

    ui = Page(browser, platform.base_url)
    ui.open()
    ui.sign_in(keys.admin)
    ui.page.get_by_role("link", name="Budgets & platforms").click()
    row = ui.page.locator("tbody tr", has_text="ui-spring")
    row.wait_for(timeout=10_000)
    assert "900.00 USD" in row.inner_text()
    ui.page.locator("tbody tr", has_text="google_ads").first.wait_for()
    ui.shot("budgets")

    ui.page.get_by_role("link", name="Billing").click()
    link = ui.page.get_by_role("link", name="PDF of invoice")
    link.first.wait_for(timeout=10_000)
    assert ui.page.locator(".chart canvas").count() >= 3  # MRR, NRR, usage
    ui.shot("billing")
    with ui.page.expect_download() as download:
        link.first.click()
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF-"), pdf[:20]
    ui.close()


def test_customers_churn_cohorts_segment_preview_and_a_rule_dry_run(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    rule = httpx.post(
        f"{platform.base_url}/engage/api/v1/rules",
        headers={"X-API-Key": keys.admin},
        json={"rule_id": "win-back", "name": "Win back", "min_churn_risk": 0.5, "channel": "email",
              "template": "win_back"},
        timeout=30,
    )  # fmt: skip
    assert rule.status_code == 201, rule.text
    ui = Page(browser, platform.base_url)
    ui.open()
    ui.sign_in(keys.admin)
    ui.page.get_by_role("link", name="Customers").click()
    page = ui.page
    page.get_by_role("heading", name="Churn risk").wait_for(timeout=20_000)
    deciles = page.get_by_role("table", name="LTV deciles").locator("tbody tr")
    assert deciles.count() == 10  # 200 customers, valued by the tiny LTV model
    assert "(top 10%)" in deciles.first.inner_text()
    assert page.get_by_role("img", name="Customers by LTV").locator("canvas").count() == 1
    risk = page.get_by_role("table", name="Customers at risk of churning")
    assert risk.locator("tbody tr").count() >= 1
    reasons = risk.locator("tbody tr").first.locator("td").nth(2).inner_text()
    assert reasons.strip(), "a customer at risk is listed without the reasons"
    heat = page.get_by_role("table", name="Retention by cohort and month since first purchase")
    assert heat.locator("tbody tr").count() >= 1

    count = page.get_by_test_id("segment-count")
    page.wait_for_function(
        "/[0-9]/.test(document.querySelector('[data-testid=segment-count]').textContent)"
    )
    two_or_more = int(count.inner_text().replace(",", ""))
    page.get_by_label("Value", exact=True).first.fill("5")  # purchases >= 5: the count drops, live
    page.wait_for_function(
        f"Number(document.querySelector('[data-testid=segment-count]').textContent"
        f".replace(/,/g, '')) < {two_or_more}"
    )
    page.get_by_role("button", name="Dry run Win back").click()
    page.get_by_role("heading", name="Dry run of Win back").wait_for(timeout=20_000)
    assert page.get_by_role("table", name="Dry run targets").locator("tbody tr").count() >= 1
    ui.shot("customers")
    ui.close()


def test_models_roll_back_and_promote(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    ui = Page(browser, platform.base_url)
    ui.open()
    ui.sign_in(keys.admin)
    page = ui.page
    page.get_by_role("link", name="Models").click()
    churn = page.get_by_role("table", name="Churn model versions")
    churn.wait_for(timeout=20_000)

    def status(version: int) -> str:
        return churn.locator("tbody tr").nth(version - 1).locator("td").nth(1).inner_text()

    assert (status(1), status(2)) == ("retired", "production")
    page.get_by_role("button", name="Roll back Churn model").click()
    # The page redraws with the registry's answer.
    churn.locator("tbody tr").nth(0).locator("td", has_text="production").wait_for()
    assert status(2) == "retired"
    page.get_by_role("button", name="Promote Churn model version 2").click()
    churn.locator("tbody tr").nth(1).locator("td", has_text="production").wait_for()
    ui.shot("models")
    ui.close()


def test_generate_a_creative_and_see_it_in_the_gallery(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    ui = Page(browser, platform.base_url)
    ui.open()
    ui.sign_in(keys.admin)
    page = ui.page
    page.get_by_role("link", name="Creatives").click()
    page.get_by_label("Product").fill("CloudSync Pro")
    page.get_by_label("Features").fill("Real-time sync, Encryption")
    page.get_by_label("Variants").fill("2")
    card = page.get_by_test_id("gallery").locator("figure.creative")
    for attempt in range(2):
        page.get_by_role("button", name="Generate").click()
        # The CPU placeholder pipeline, on a busy machine: a cold generator may answer 503
        # ("retry shortly"), as SyncCreate's deadline says; a user would try once more.
        done = card.nth(1).or_(page.locator("#toast:not([hidden])"))
        done.first.wait_for(timeout=60_000)
        if card.count() >= 2:
            break
        toast = page.locator("#toast").inner_text()
        assert attempt == 0 and "retry shortly" in toast, toast
        ui.expected.append("503")
        page.locator("#toast").evaluate("el => { el.hidden = true; }")
    assert card.count() == 2
    assert "Compliance" in card.first.inner_text()
    page.wait_for_function(
        "[...document.querySelectorAll('figure.creative img')].every(i => i.naturalWidth > 0)"
    )
    card.first.get_by_text("Compliance and safety").click()
    card.first.get_by_role("table").wait_for()
    assert "Image safety" in card.first.inner_text()
    ui.shot("creatives")
    ui.close()


def test_every_page_loads_within_a_second(
    browser: object, platform: RunningPlatform, keys: Keys
) -> None:
    """From a reload to the page's data and charts drawn (benchmarks.console.READY): the best
    of three per page, so a moment when this shared machine is busy with other work does not
    decide it. `kiki bench console` measures the same with the CDNOW demo and 1,000 campaigns."""
    ui = Page(browser, platform.base_url)
    ui.open()
    ui.sign_in(keys.admin)
    timings = {}
    for route in ["#/campaigns", "#/campaigns/ui-spring", "#/budgets", "#/billing",
                  "#/customers", "#/creatives", "#/models"]:  # fmt: skip
        ui.page.goto(f"{platform.base_url}/console/{route}")
        ui.page.wait_for_function(READY)
        best = float("inf")
        for _ in range(3):
            ui.page.reload()
            ui.page.wait_for_function(READY, polling="raf")
            best = min(best, ui.page.evaluate("window.__kikiShown") / 1000)
        timings[route] = round(best, 3)
    print("console page loads, best of 3 (s):", timings)
    assert all(t < 1.0 for t in timings.values()), timings
    ui.close()

"""`kiki bench console` (issue 23): how long each console page takes to show its data, in
headless Chromium, on the platform `kiki up --detach` runs, as the development key's tenant
(the CDNOW demo and its models, loaded by the first run) with 1,000 campaigns running live.

The campaigns (`console-bench-NNNN`, specs drawn like `kiki simulate`'s) are created and
started through SyncFlow's API, so the platform's own bid loop ticks them (the live
simulation) while the pages load; they are paused at the end, and a later run starts them
again. A page counts as shown when app.js has drawn it (`#main` without `aria-busy`) and every
chart on it has its canvas: the time from the navigation's start to then, read in the page.
"""

from __future__ import annotations

import asyncio
import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from pydantic import BaseModel

from benchmarks.pacing import SimulationOptions, synthetic_campaigns
from kiki.errors import Unavailable
from kiki.flow.campaigns import Campaign

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this
# machine's closed network refuses (NOTES.md).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PREFIX = "console-bench-"
# In the page: true once the page is drawn and its charts too; the first such moment is kept
# (ms since the navigation started).
READY = """() => {
  const main = document.getElementById("main");
  const drawn = main && main.dataset.page && !main.hasAttribute("aria-busy")
    && [...main.querySelectorAll(".chart")].every((c) => c.querySelector("canvas"));
  if (drawn && window.__kikiShown === undefined) window.__kikiShown = performance.now();
  return drawn;
}"""
# The navigation's DOMContentLoaded and the slowest API call the page made.
TIMINGS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const calls = performance.getEntriesByType("resource").filter((r) => r.name.includes("/api/"));
  calls.sort((a, b) => b.duration - a.duration);
  return { shown: window.__kikiShown, dcl: nav.domContentLoadedEventEnd,
           slowest: calls.length ? [new URL(calls[0].name).pathname, calls[0].duration] : null };
}"""


class PageLoads(BaseModel):
    page: str
    route: str
    first_ms: float  # the first load: the browser's and the services' caches cold
    shown_ms: list[float]
    dcl_ms: list[float]
    slowest_call: str | None  # of the run nearest the median: path and ms

    @property
    def p50(self) -> float:
        return statistics.median(self.shown_ms)

    @property
    def max(self) -> float:
        return max(self.shown_ms)


class ConsoleReport(BaseModel):
    campaigns: int
    running: int
    runs: int
    pages: list[PageLoads]

    def table(self) -> str:
        lines = [
            f"{'page':<12} {'first':>8} {'shown p50':>10} {'shown max':>10} {'DCL p50':>8}  "
            "slowest API call (median run)",
        ]
        for p in self.pages:
            lines.append(
                f"{p.page:<12} {p.first_ms:>6.0f}ms {p.p50:>8.0f}ms {p.max:>8.0f}ms "
                f"{statistics.median(p.dcl_ms):>6.0f}ms  {p.slowest_call or '-'}"
            )
        return "\n".join(lines)


def _spec(c: Campaign) -> dict:
    """A synthetic campaign as SyncFlow's create body (segment `all`: the dev tenant's
    customers, whose value SyncValue answers)."""
    target = c.goal_target if c.goal_kind == "roas" else c.goal_target / 1_000_000
    return {
        "campaign_id": c.campaign_id,
        "name": c.name,
        "starts_at": c.starts_at.isoformat(),
        "ends_at": c.ends_at.isoformat(),
        "timezone": c.timezone,
        "budget": str(Decimal(c.budget_micros) / 1_000_000),
        "currency": c.currency,
        "goal": {"kind": c.goal_kind, "target": str(target)},
        "platforms": list(c.platforms),
        "ad_groups": [
            {
                "ad_group_id": g.ad_group_id,
                "segment": "all",
                "value_per_conversion": str(g.value_per_conversion),
            }
            for g in c.ad_groups
        ],
        "pacing": c.pacing.model_dump(mode="json"),
    }


async def _existing(client: httpx.AsyncClient) -> dict[str, str]:
    """The tenant's bench campaigns and their status."""
    found: dict[str, str] = {}
    after = None
    while True:
        params = {"limit": 500, **({"after": after} if after else {})}
        page = (await client.get("/flow/api/v1/campaigns", params=params)).raise_for_status()
        body = page.json()
        for c in body["campaigns"]:
            if c["campaign_id"].startswith(PREFIX):
                found[c["campaign_id"]] = c["status"]
        after = body["next_after"]
        if not after:
            return found


async def _each(calls: list, concurrency: int, attempts: int = 5) -> None:
    """Every call, `concurrency` at a time; a 503 or 429 (a shard busy on this machine) is
    tried again a few times, as a client would."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call) -> None:
        async with gate:
            for attempt in range(attempts):
                answer = await call()
                if answer.status_code not in (429, 503):
                    break
                await asyncio.sleep(2**attempt)
            if answer.status_code >= 400:
                raise Unavailable(f"{answer.request.url.path}: {answer.status_code} {answer.text}")

    await asyncio.gather(*(one(c) for c in calls))


async def seed(base_url: str, key: str, campaigns: int, ticks: int, timeout_s: float) -> int:
    """Create the bench campaigns that are missing, start those not running, and wait until
    the newest has `ticks` pacing points. Returns how many run."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    specs = synthetic_campaigns("bench", SimulationOptions(campaigns=campaigns, hours=24), start)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": key}, timeout=120
    ) as client:
        have = await _existing(client)
        missing = [
            _spec(c.model_copy(update={"campaign_id": f"{PREFIX}{i:04d}"}))
            for i, c in enumerate(specs)
            if f"{PREFIX}{i:04d}" not in have
        ]
        await _each([lambda s=s: client.post("/flow/api/v1/campaigns", json=s) for s in missing], 8)
        ids = [f"{PREFIX}{i:04d}" for i in range(campaigns)]
        idle = [c for c in ids if have.get(c, "draft") in ("draft", "paused")]
        await _each([lambda c=c: client.post(f"/flow/api/v1/campaigns/{c}/start") for c in idle], 8)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:  # a 5xx while the loop is busy loading them is "not yet"
            pacing = await client.get(f"/flow/api/v1/campaigns/{ids[-1]}/pacing")
            if (
                pacing.status_code < 500
                and len(pacing.raise_for_status().json()["points"]) >= ticks
            ):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable(f"{ids[-1]} has fewer than {ticks} ticks after {timeout_s:.0f} s")
            await asyncio.sleep(1)
        return sum(1 for s in (await _existing(client)).values() if s == "running")


async def pause(base_url: str, key: str) -> None:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"X-API-Key": key}, timeout=120
    ) as client:
        running = [c for c, s in (await _existing(client)).items() if s == "running"]
        await _each(
            [lambda c=c: client.post(f"/flow/api/v1/campaigns/{c}/pause") for c in running], 8
        )


def pages(campaign_id: str) -> list[tuple[str, str]]:
    return [
        ("campaigns", "#/campaigns"),
        ("campaign", f"#/campaigns/{campaign_id}"),
        ("budgets", "#/budgets"),
        ("customers", "#/customers"),
        ("creatives", "#/creatives"),
        ("billing", "#/billing"),
        ("models", "#/models"),
    ]


def measure(base_url: str, key: str, campaign_id: str, runs: int) -> list[PageLoads]:
    """Each page loaded `runs` times (plus one warm-up), each a full navigation."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        signed = context.request.post(f"{base_url}/console/api/v1/session", data={"api_key": key})
        if not signed.ok:
            raise Unavailable(f"sign-in refused: {signed.status} {signed.text()}")
        page = context.new_page()
        for name, route in pages(campaign_id):
            shown, dcl, calls, first = [], [], [], 0.0
            for run in range(runs + 1):
                page.goto("about:blank")
                page.goto(f"{base_url}/console/{route}")
                page.wait_for_function(READY, polling="raf", timeout=60_000)
                t = page.evaluate(TIMINGS)
                if not run:  # the first load warms the browser's cache and the services'
                    first = round(t["shown"], 1)
                else:
                    shown.append(round(t["shown"], 1))
                    dcl.append(round(t["dcl"], 1))
                    calls.append(t["slowest"])
            mid = sorted(range(runs), key=lambda i: shown[i])[runs // 2]
            slowest = f"{calls[mid][0]} {calls[mid][1]:.0f}ms" if calls[mid] else None
            out.append(PageLoads(page=name, route=route, first_ms=first, shown_ms=shown, dcl_ms=dcl,
                                 slowest_call=slowest))  # fmt: skip
        browser.close()
    return out

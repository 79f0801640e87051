"""The mix `kiki bench load` drives (issue 22): Locust users calling all six apps the way the
platform's clients do. Run by `python -m locust -f benchmarks/locustfile.py` in a process of
its own (Locust patches the standard library with gevent), configured by environment:

- KIKI_LOAD_KEY: the API key sent as X-API-Key (the development key: its tenant is the
  first-run demo's, whose models answer predictions and churn risk);
- KIKI_LOAD_APPS: the apps whose calls are in the mix (comma-separated; all six by default);
- KIKI_LOAD_CAMPAIGNS: the campaign ids (comma-separated) whose budgets
  `benchmarks.load.prepare` allocated;
- KIKI_LOAD_RUN: the run's id, so usage events of different runs never collide.

Weights follow what a running platform sees most: budget checks and reservations from bidders,
predictions, then reads of churn, campaigns and decisions, usage events in batches; and one
more user asks for a creative now and then. A request counts as failed unless its answer is
the 2xx it should be.
"""

from __future__ import annotations

import itertools
import os
import random
from datetime import UTC, datetime
from typing import Any

from locust import FastHttpUser, between, constant_pacing, task

KEY = os.environ.get("KIKI_LOAD_KEY", "")
APPS = set(os.environ.get("KIKI_LOAD_APPS", "shield,value,engage,flow,billing,create").split(","))
CAMPAIGNS = os.environ.get("KIKI_LOAD_CAMPAIGNS", "load_camp_000").split(",")
RUN = os.environ.get("KIKI_LOAD_RUN", "run")
PLATFORMS = ("google_ads", "meta", "tiktok", "linkedin", "amazon")
EVENTS_PER_BATCH = 10
CREATIVE_EVERY_S = 30
_sequence = itertools.count()


def weighted(app: str, weight: int) -> int:
    """A task's weight in the mix, 0 (never picked) when its app is left out."""
    return weight if app in APPS else 0


class KikiUser(FastHttpUser):
    """A client of the platform with the API key; a call counts as failed unless 2xx."""

    abstract = True

    def on_start(self) -> None:
        self.headers = {"X-API-Key": KEY, "Content-Type": "application/json"}

    def _post(self, path: str, body: dict[str, Any], name: str | None = None) -> Any:
        with self.client.post(
            path, json=body, headers=self.headers, name=name or path, catch_response=True
        ) as response:
            if not 200 <= response.status_code < 300:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return None
            return response.json()

    def _get(self, path: str, name: str | None = None) -> None:
        with self.client.get(
            path, headers=self.headers, name=name or path, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class PlatformClient(KikiUser):
    """One client of the mix: no think time beyond 10-50 ms, so the users' count sets the
    offered load."""

    abstract = not APPS - {"create"}  # SyncCreate alone: only the creative user
    wait_time = between(0.01, 0.05)
    # Seeded, for a repeatable mix (the draws are not security-relevant).
    _random = random.Random(0)  # nosec B311

    def _campaign(self) -> str:
        return self._random.choice(CAMPAIGNS)

    @task(weighted("shield", 25))
    def budget_check(self) -> None:
        self._post(
            "/shield/api/v1/check",
            {
                "campaign_id": self._campaign(),
                "bid_amount": "0.50",
                "platform": self._random.choice(PLATFORMS),
            },
        )

    @task(weighted("shield", 10))
    def reserve_and_commit(self) -> None:
        campaign = self._campaign()
        granted = self._post(
            "/shield/api/v1/reserve",
            {"campaign_id": campaign, "amount": "0.50", "platform": "google_ads"},
        )
        if granted and granted.get("reservation_id"):
            self._post(
                "/shield/api/v1/commit",
                {
                    "campaign_id": campaign,
                    "reservation_id": granted["reservation_id"],
                    "actual_spend": "0.40",
                },
            )

    @task(weighted("shield", 5))
    def budget_status(self) -> None:
        self._get(f"/shield/api/v1/budget/{self._campaign()}", name="/shield/api/v1/budget/[id]")

    @task(weighted("value", 20))
    def predict(self) -> None:
        self._post(
            "/value/api/v1/predict",
            {
                "customer_id": f"cust_{self._random.randrange(1, 23_571)}",
                "spend": self._random.randrange(10, 1_000),
                "engagement_score": round(self._random.random(), 2),
            },
        )

    @task(weighted("engage", 5))
    def churn_risk(self) -> None:
        self._get("/engage/api/v1/churn-risk?threshold=0.7&limit=50")

    @task(weighted("engage", 2))
    def cohorts(self) -> None:
        self._get("/engage/api/v1/cohorts")

    @task(weighted("billing", 10))
    def usage_events(self) -> None:
        now = datetime.now(UTC).isoformat()
        events = [
            {
                "transaction_id": f"load-{RUN}-{os.getpid()}-{next(_sequence)}",
                "customer": "load_customer",
                "metric_code": "load_requests",
                "timestamp": now,
            }
            for _ in range(EVENTS_PER_BATCH)
        ]
        self._post("/billing/api/v1/events", {"events": events})

    @task(weighted("flow", 5))
    def campaigns(self) -> None:
        self._get("/flow/api/v1/campaigns?limit=50")

    @task(weighted("flow", 3))
    def decisions(self) -> None:
        self._get("/flow/api/v1/decisions?limit=50")


class CreativeClient(KikiUser):
    """ "A creative now and then": one user (beside the `--users` of the mix) asks for a
    creative every CREATIVE_EVERY_S. A generate holds its caller for seconds (the diffusion
    pipeline), so as a weighted task it would stall whichever mix user drew it."""

    abstract = "create" not in APPS
    fixed_count = 1
    wait_time = constant_pacing(CREATIVE_EVERY_S)

    @task
    def creative(self) -> None:
        self._post("/create/api/v1/generate", {"product": {"name": "Load Test"}, "variants": 1})

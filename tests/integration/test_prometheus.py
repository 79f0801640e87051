"""A real Prometheus server (Debian's `prometheus` package) on the test session's Ray: it finds
every metrics endpoint through the service-discovery file Ray writes in its session folder,
evaluates ops/prometheus/alerts.yml, and the alerts go firing on real faults. And every
metric the Grafana dashboards and the alerts query is one the running platform exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import ray
import yaml

from actors.flow.client import ACTOR_PREFIX
from actors.guard import GUARD_NAME
from kiki.auth import authenticate
from kiki.db.embedded import free_port
from kiki.db.pool import connect
from kiki.value import registry
from launcher.platform import SERVICE_DISCOVERY_FILE
from tests.integration.conftest import RunningPlatform, new_key
from tests.integration.test_value_api import (
    CUT,
    register_tiny_model,
    synthetic_purchases,
    tiny_model,
)
from tests.promql import DASHBOARDS, metric_names, panel_exprs

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "alerts.yml"
T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout_s: float, what: str, pause_s: float = 0.5) -> T:
    """`check()`'s first truthy answer within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout_s:g} s (last: {found!r})")
        time.sleep(pause_s)


@pytest.fixture(scope="module")
def prometheus(
    platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus on a free port with its data under the test's temp folder (other pytest
    sessions on the machine run their own), scraping every second through Ray's file_sd list
    and evaluating the rules every second, each rule's `for:` cut to 0s."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the prometheus server is missing: `make sysdeps` installs it")
    discovery = platform.ray_session_dir / SERVICE_DISCOVERY_FILE
    wait_for(discovery.exists, 30, f"Ray's {discovery}")
    home = tmp_path_factory.mktemp("prometheus")
    rules = home / "alerts.yml"
    rules.write_text(re.sub(r"(?m)^(\s+for:) \S+$", r"\1 0s", RULES.read_text()))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "ray", "file_sd_configs": [{"files": [str(discovery)]}]}],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = (home / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [binary, f"--config.file={home / 'prometheus.yml'}",
         f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address={url[7:]}",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: _ok(f"{url}/-/ready") or server.poll() is not None, 30, "Prometheus")
        assert server.poll() is None, (home / "prometheus.log").read_text()
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def firing(prometheus: str) -> set[tuple[str, str]]:
    """(alert name, its labels as JSON) of every alert firing now, from Prometheus's API."""
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {
        (a["labels"]["alertname"], json.dumps(a["labels"], sort_keys=True))
        for a in alerts
        if a["state"] == "firing"
    }


def _is(alert: str, **labels: str) -> Callable[[tuple[str, str]], bool]:
    return lambda fired: fired[0] == alert and labels.items() <= json.loads(fired[1]).items()


def test_a_breaker_opened_and_a_stalled_shard_fire_their_alerts(
    prometheus: str, platform: RunningPlatform
) -> None:
    guard = ray.get_actor(GUARD_NAME, namespace="kiki")
    shards = platform.settings.flow_shards
    shard = ray.get_actor(f"{ACTOR_PREFIX}-{shards - 1}-of-{shards}", namespace="kiki")
    stalled = str(shards - 1)
    # Prometheus has scraped Ray: its targets are up, and the running loop is not stalled.
    wait_for(lambda: _has_series(prometheus, "ray_kiki_flow_last_tick_seconds"), 30, "a scrape")
    assert not any(map(_is("KikiBidLoopStalled"), firing(prometheus)))

    ray.get(guard.force_open.remote("linkedin"))
    ray.get(shard.stop.remote())  # its process lives on, its loop no longer ticks
    try:
        wanted = [
            _is("KikiBreakerOpen", platform="linkedin"),
            _is("KikiBidLoopStalled", shard=stalled),
        ]

        def both() -> set[tuple[str, str]] | None:
            now = firing(prometheus)
            return now if all(any(map(w, now)) for w in wanted) else None

        # The stall shows after the rule's 30 s plus up to Ray's 10 s export interval; a CI
        # run on a loaded machine once saw neither alert within 75 s, hence the margin.
        now = wait_for(both, 120, "KikiBreakerOpen and KikiBidLoopStalled firing")
        # Only what was broken: the other shards tick, the other breakers are closed.
        assert {json.loads(labels)["shard"] for name, labels in now
                if name == "KikiBidLoopStalled"} == {stalled}  # fmt: skip
        assert {json.loads(labels)["platform"] for name, labels in now
                if name == "KikiBreakerOpen"} == {"linkedin"}  # fmt: skip
    finally:
        ray.get(guard.reset.remote("linkedin"))
        # Ray restarts the shard (max_restarts=-1): __init__ runs again and starts its loop.
        ray.kill(shard, no_restart=False)
        wait_for(lambda: _ticking(shard), 60, f"bid-loop shard {stalled} ticking again")


def _has_series(prometheus: str, name: str) -> bool:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": name}, timeout=5).json()
    return bool(answer["data"]["result"])


def _ticking(shard: ray.actor.ActorHandle) -> bool:
    try:
        beat = ray.get(shard.heartbeat.remote(), timeout=5)
    except (ray.exceptions.RayError, TimeoutError):
        return False
    return beat.ticking and beat.ticks > 0


def exported_names(platform: RunningPlatform) -> set[str]:
    """Every metric name on the /metrics of each endpoint Ray lists for Prometheus."""
    listing = json.loads((platform.ray_session_dir / SERVICE_DISCOVERY_FILE).read_text())
    names: set[str] = set()
    for group in listing:
        for target in group["targets"]:
            text = httpx.get(f"http://{target}/metrics", timeout=10).text
            names |= {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][\w:]*)[{ ]", text, re.M)}
    return names


@pytest.fixture(scope="module")
def served(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The platform at work, as in production: a budget allocated, a small LTV model serving
    a prediction, and a drift report (metrics that exist only once something happened)."""
    key = asyncio.run(new_key(platform.database_url, f"prom-{uuid.uuid4().hex[:6]}"))
    with httpx.Client(base_url=platform.base_url, timeout=60, headers={"X-API-Key": key}) as http:
        resp = http.post(
            "/shield/api/v1/allocate",
            json={"campaign_id": "camp_prom", "budget": 100, "currency": "USD"},
        )
        assert resp.status_code == 200, resp.text
        rows = synthetic_purchases(customers=60)
        resp = http.post("/value/api/v1/transactions", json={"transactions": rows})
        assert resp.status_code == 201, resp.text
        url, reference = tiny_model(rows, tmp_path_factory.mktemp("ltv") / "v1", platform.settings)

        async def promote() -> None:
            conn = await connect(platform.database_url)
            try:
                tenant = (await authenticate(conn, key)).tenant
                await register_tiny_model(conn, tenant.id, url, reference)
                await registry.promote(conn, tenant.id, 1)
            finally:
                await conn.close()

        asyncio.run(promote())
        # The scorer loads the model on its first call: on a busy machine past the deadline,
        # a 503 that says to retry.
        body = {"customer_id": "cust_0001", "as_of": CUT.isoformat()}
        resp = wait_for(
            lambda: (r := http.post("/value/api/v1/predict", json=body)).status_code != 503 and r,
            90, "a prediction", pause_s=1,
        )  # fmt: skip
        assert resp.status_code == 200, resp.text
        resp = http.get("/value/api/v1/drift", params={"as_of": CUT.isoformat()})
        assert resp.status_code == 200, resp.text


def test_every_dashboard_panel_and_alert_queries_exported_metrics(
    platform: RunningPlatform, served: None
) -> None:
    """A panel over a metric nobody exports shows "no data" forever; so does an alert that
    never fires. Ray publishes a recorded metric within seconds: wait for all of them."""
    queries = [(f"{path.name}: {title}", expr) for path in DASHBOARDS
               for title, expr in panel_exprs(path)]  # fmt: skip
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        queries += [(f"alerts.yml: {rule['alert']}", rule["expr"]) for rule in group["rules"]]
    queried: dict[str, str] = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric read from {expr!r}"
        queried |= dict.fromkeys(names, where)
    deadline = time.monotonic() + 40
    while True:
        live = exported_names(platform)
        missing = {name: where for name, where in queried.items() if name not in live}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert missing == {}

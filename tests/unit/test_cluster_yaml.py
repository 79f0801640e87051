"""cluster.yaml and cluster.local.yaml, checked offline: `ray up` itself needs the cloud."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
# AWS's public SSM parameters: EC2 resolves `resolve:ssm:<name>` to the region's current AMI.
PUBLIC_AMI = re.compile(r"resolve:ssm:/aws/service/(canonical/ubuntu|deeplearning/ami)/")
DRIVER_AMI = re.compile(
    r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/[a-z0-9.-]*nvidia-driver"
)
SECRET_LOOKING = re.compile(
    r"postgres(ql)?://[^\s/@]+:[^\s/@]+@"  # a URL with a password
    r"|\b[sr]k_(live|test)_|\bwhsec_"  # Stripe keys and webhook secrets
    r"|\bAKIA[0-9A-Z]{16}\b"  # an AWS access key id
)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _commands(config: dict[str, Any], *keys: str) -> str:
    return "\n".join(cmd for key in keys for cmd in config[key])


def test_cluster_yaml_passes_rays_own_schema(config: dict[str, Any]) -> None:
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))

    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert not types["cpu_worker"]["resources"].get("GPU")
    assert config["head_node_type"] in types
    assert any("pip install -e /home/ubuntu/kiki" in cmd for cmd in config["setup_commands"])
    assert "/home/ubuntu/kiki" in config["file_mounts"]


def test_one_region_and_images_that_exist_there(config: dict[str, Any]) -> None:
    region = config["provider"]["region"]
    assert region == "us-west-2"
    zones = config["provider"]["availability_zone"].split(",")
    assert all(zone.startswith(region) for zone in zones), zones
    for name, node in config["available_node_types"].items():
        image = node["node_config"]["ImageId"]
        # A public parameter exists in every region; a pinned ami- id only in its own.
        assert PUBLIC_AMI.match(image), f"{name}: {image} is not one of AWS's public AMI names"


def test_gpu_workers_have_a_gpu_and_its_driver(config: dict[str, Any]) -> None:
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"] == {"GPU": 1}
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p4d.", "p5."))
    assert DRIVER_AMI.match(gpu["node_config"]["ImageId"]), "no NVIDIA driver on the GPU workers"


def test_secrets_come_from_secrets_manager_never_from_the_file(config: dict[str, Any]) -> None:
    text = (REPO / "cluster.yaml").read_text()
    assert not SECRET_LOOKING.search(text), SECRET_LOOKING.search(text)
    setup = _commands(config, "setup_commands")
    assert "get_secret_value(SecretId='kiki/cluster')" in setup
    assert "umask 077" in setup and "/etc/kiki/env" in setup
    for node in config["available_node_types"].values():
        assert node["node_config"]["IamInstanceProfile"]["Name"].startswith("kiki-ray-")
    # Everything that runs KIKI loads the settings first.
    for key in ("head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        last = config[key][-1]
        assert last.startswith("settings=$(sudo cat /etc/kiki/env) && set -a"), key


def test_nodes_get_the_artifact_store_and_the_haproxy_ingress(config: dict[str, Any]) -> None:
    assert re.search(
        r"KIKI_ARTIFACTS_URL=s3://[A-Za-z0-9.-]+/kiki", _commands(config, "setup_commands")
    )
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = config[key][-1]
        assert "RAY_SERVE_ENABLE_HA_PROXY=1" in start and "ray start" in start, key
    serve = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert serve["proxy_location"] == "EveryNode"


def test_local_cluster_mirrors_the_node_types(config: dict[str, Any]) -> None:
    local = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    assert local["provider"]["type"] == "fake_multinode"
    assert local["available_node_types"].keys() == config["available_node_types"].keys()
    assert local["head_node_type"] == config["head_node_type"]
    types = local["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert not types["cpu_worker"]["resources"].get("GPU")
    for name in ("cpu_worker", "gpu_worker"):
        for bound in ("min_workers", "max_workers"):
            assert types[name][bound] <= config["available_node_types"][name][bound], name

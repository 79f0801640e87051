import json
from pathlib import Path

import jsonschema
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_cluster_yaml_passes_rays_own_schema() -> None:
    schema_path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    jsonschema.validate(config, json.loads(schema_path.read_text()))

    types = config["available_node_types"]
    assert config["provider"]["type"] == "aws"
    assert types["gpu_worker"]["resources"] == {"GPU": 1}
    assert not types["cpu_worker"]["resources"].get("GPU")
    assert config["head_node_type"] in types
    assert any("pip install -e /home/ubuntu/kiki" in cmd for cmd in config["setup_commands"])
    assert "/home/ubuntu/kiki" in config["file_mounts"]

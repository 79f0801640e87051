"""k8s/rayservice.yaml: what `kiki k8s render` makes now, valid for KubeRay's RayService CRD,
and carrying serve_config.yaml unchanged."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import main
from launcher.k8s import SECRET_NAME, render

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "k8s" / "rayservice.yaml"
# KubeRay v1.7.0's CRD, kept beside the repository (not copied into it).
CRD = REPO.parent / "shared" / "kuberay" / "ray.io_rayservices.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def _containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_committed_manifest_is_what_the_generator_renders() -> None:
    assert MANIFEST.read_text() == render(), (
        "k8s/rayservice.yaml is out of date with serve_config.yaml or cluster.yaml: "
        "re-render it with `kiki k8s render` and commit the result"
    )


def test_manifest_validates_against_the_rayservice_crd(
    manifest: dict[str, Any], schema: dict[str, Any]
) -> None:
    jsonschema.validate(manifest, schema)
    # The schema has teeth: a worker group without its required groupName fails.
    broken = copy.deepcopy(manifest)
    del broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        jsonschema.validate(broken, schema)


def test_serve_config_v2_is_serve_config_yaml(manifest: dict[str, Any]) -> None:
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    original = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    assert [a["name"] for a in embedded["applications"]] == [
        a["name"] for a in original["applications"]
    ]
    for mine, theirs in zip(embedded["applications"], original["applications"], strict=True):
        assert [d.get("ray_actor_options") for d in mine["deployments"]] == [
            d.get("ray_actor_options") for d in theirs["deployments"]
        ], mine["name"]
    assert embedded == original
    # The proxy root's app, `GET /health` over every service, is deployed on Kubernetes too.
    assert {"name": "root", "route_prefix": "/"}.items() <= embedded["applications"][-1].items()


def test_groups_secrets_and_settings(manifest: dict[str, Any]) -> None:
    workers = {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert sorted(workers) == ["cpu-worker", "gpu-worker"]
    gpu = workers["gpu-worker"]
    assert gpu["minReplicas"] == 0
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in str(workers["cpu-worker"])
    for container in _containers(manifest):
        assert container["envFrom"] == [{"secretRef": {"name": SECRET_NAME}}]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KIKI_ARTIFACTS_URL"].startswith("s3://")
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert not any(name in env for name in ("KIKI_DATABASE_URL", "KIKI_STRIPE_API_KEY"))


def test_render_command_writes_the_manifest_and_refuses_a_bad_config(tmp_path: Path) -> None:
    out = tmp_path / "rayservice.yaml"
    result = CliRunner().invoke(main, ["k8s", "render", "--image", "r.example/kiki:1", "-o", out])
    assert result.exit_code == 0, result.output
    assert "image: r.example/kiki:1" in out.read_text()

    bad = tmp_path / "serve.yaml"
    bad.write_text(
        (REPO / "serve_config.yaml")
        .read_text()
        .replace("route_prefix: /value", "route_prefx: /value")
    )
    result = CliRunner().invoke(main, ["k8s", "render", "--serve-config", bad, "-o", out])
    assert result.exit_code == 2
    assert "kiki: error: unknown key(s) in Serve config" in result.output
    assert "Traceback" not in result.output

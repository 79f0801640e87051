import copy
import os

import pytest

from kiki.config import APPS, ROOT_APP, SERVICES, Settings
from kiki.errors import ConfigError
from launcher import serve_config


@pytest.fixture
def config() -> dict:
    return serve_config.load()


def test_the_shipped_config_passes_rays_schema_and_the_strict_check(config: dict) -> None:
    schema = serve_config.validate_strict(config)
    apps = {app.name: app for app in schema.applications}
    assert sorted(apps) == sorted(APPS)
    assert {apps[s].route_prefix for s in SERVICES} == {f"/{s}" for s in SERVICES}
    assert apps[ROOT_APP].route_prefix == "/"  # the proxy root: GET /health over them all
    assert schema.http_options.port == 8000
    assert schema.grpc_options.port == 50051
    assert any("LTVService" in f for f in schema.grpc_options.grpc_servicer_functions)
    assert any("Health" in f for f in schema.grpc_options.grpc_servicer_functions)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda c: c.update(htp_options={}), "config.htp_options"),
        (lambda c: c["http_options"].update(prot=1), "config.http_options.prot"),
        (lambda c: c["applications"][0].update(route_prefx="/x"), "route_prefx"),
        (
            lambda c: c["applications"][0]["deployments"][0].update(num_replica=2),
            "deployments[ValueIngress].num_replica",
        ),
        (
            lambda c: c["applications"][0]["deployments"][0]["autoscaling_config"].update(
                max_replica=3
            ),
            "autoscaling_config.max_replica",
        ),
    ],
)
def test_unknown_keys_that_ray_would_ignore_are_rejected(config: dict, mutate, where: str) -> None:
    bad = copy.deepcopy(config)
    mutate(bad)
    with pytest.raises(ConfigError, match="unknown key") as info:
        serve_config.validate_strict(bad)
    assert where in info.value.message


def test_bad_autoscaling_values_are_rejected(config: dict) -> None:
    bad = copy.deepcopy(config)
    bad["applications"][0]["deployments"][0]["autoscaling_config"]["min_replicas"] = -1
    with pytest.raises(ConfigError, match="min_replicas"):
        serve_config.validate_strict(bad)


def test_a_missing_app_is_rejected(config: dict) -> None:
    bad = copy.deepcopy(config)
    bad["applications"] = bad["applications"][1:]
    with pytest.raises(ConfigError, match="must define the apps"):
        serve_config.validate_strict(bad)


def test_adapting_for_a_small_machine(config: dict) -> None:
    settings = Settings(http_port=9100, grpc_port=9101, replica_cpus=0.05, pg_port=6000)
    gpu_config = copy.deepcopy(config)
    gpu_config["applications"][3]["deployments"][0]["ray_actor_options"]["num_gpus"] = 1
    adapted = serve_config.adapt_for_machine(gpu_config, settings, gpus=0)
    assert adapted["http_options"]["port"] == 9100
    assert adapted["grpc_options"]["port"] == 9101
    for app in adapted["applications"]:
        assert app["runtime_env"]["env_vars"]["KIKI_PG_PORT"] == "6000"
        for dep in app["deployments"]:
            # Shares capped at replica_cpus; the root and the console ask for none, keep none.
            expected = 0.0 if app["name"] in ("root", "console") else 0.05
            assert dep["ray_actor_options"]["num_cpus"] == expected
            assert not dep["ray_actor_options"].get("num_gpus")
    serve_config.validate_strict(adapted)
    assert config["http_options"]["port"] == 8000  # the input is not modified


def test_the_creative_generator_asks_for_a_gpu_and_scales_to_zero(config: dict) -> None:
    create = next(app for app in config["applications"] if app["name"] == "create")
    generator = next(d for d in create["deployments"] if d["name"] == "CreativeGenerator")
    assert generator["ray_actor_options"]["num_gpus"] == 1
    assert generator["autoscaling_config"]["min_replicas"] == 0
    settings = Settings(replica_cpus=0.1)

    def adapted_generator(gpus: float) -> dict:
        adapted = serve_config.adapt_for_machine(config, settings, gpus=gpus)
        app = next(a for a in adapted["applications"] if a["name"] == "create")
        return next(d for d in app["deployments"] if d["name"] == "CreativeGenerator")

    assert adapted_generator(0)["ray_actor_options"]["num_gpus"] == 0
    assert adapted_generator(1)["ray_actor_options"]["num_gpus"] == 1
    assert adapted_generator(0)["autoscaling_config"]["min_replicas"] == 0


def test_secrets_never_travel_in_runtime_env(config: dict, monkeypatch) -> None:
    settings = Settings(
        database_url="postgresql://kiki:pw@db:5432/kiki",
        stripe_api_key="sk_test_123",
        smtp_password="hunter2",
        flow_tick_s=1.0,
    )
    adapted = serve_config.adapt_for_machine(config, settings, gpus=0)
    for app in adapted["applications"]:
        env = app["runtime_env"]["env_vars"]
        assert env["KIKI_FLOW_TICK_S"] == "1.0"
        assert not {"KIKI_DATABASE_URL", "KIKI_STRIPE_API_KEY", "KIKI_SMTP_PASSWORD"} & set(env)
        assert "pw@" not in str(env) and "sk_test_123" not in str(env)
    secrets = serve_config.secret_env(settings)
    assert secrets == {
        "KIKI_DATABASE_URL": "postgresql://kiki:pw@db:5432/kiki",
        "KIKI_STRIPE_API_KEY": "sk_test_123",
        "KIKI_SMTP_PASSWORD": "hunter2",
    }
    monkeypatch.setenv("KIKI_SMTP_PASSWORD", "outer")
    monkeypatch.delenv("KIKI_STRIPE_API_KEY", raising=False)
    with serve_config.inherited_env(secrets):
        assert os.environ["KIKI_STRIPE_API_KEY"] == "sk_test_123"
        assert os.environ["KIKI_SMTP_PASSWORD"] == "hunter2"
    assert "KIKI_STRIPE_API_KEY" not in os.environ
    assert os.environ["KIKI_SMTP_PASSWORD"] == "outer"


def test_a_secretstr_setting_is_a_secret_without_being_listed(config: dict) -> None:
    settings = Settings(secret_key="k" * 44)
    adapted = serve_config.adapt_for_machine(config, settings, gpus=0)
    assert all(
        "KIKI_SECRET_KEY" not in a["runtime_env"]["env_vars"] for a in adapted["applications"]
    )
    assert serve_config.secret_env(settings) == {"KIKI_SECRET_KEY": "k" * 44}


def test_each_app_is_built_from_typed_args_that_a_local_run_fills_from_settings(
    config: dict,
) -> None:
    """Serve calls each app's builder with its `args:`; `kiki up` fills them from the KIKI_*
    settings the operator changed, over what the YAML says."""
    paths = {app["name"]: app["import_path"] for app in config["applications"]}
    for name in ("shield", "flow"):
        assert paths[name] == f"deployments.{name}.app:build_app"
        assert serve_config.args_type(paths[name]) is not None
    settings = Settings(flow_tick_s=0.5)
    flow = paths["flow"]
    assert serve_config.local_args(flow, {}, settings) == {"tick_s": 0.5}
    assert serve_config.local_args(flow, {"shards": 4}, Settings()) == {"shards": 4}
    with pytest.raises(ConfigError, match=r"args: shards: .*greater than or equal to 1"):
        serve_config.local_args(flow, {"shards": 0}, Settings())
    with pytest.raises(ConfigError, match="args: tick_spead"):
        serve_config.local_args(flow, {"tick_spead": 1}, Settings())


def test_the_yaml_args_are_valid_and_win_only_where_they_are_named(config: dict) -> None:
    """A replica's options: those `args:` names, the rest from its node's KIKI_* settings."""
    for app in config["applications"]:
        kind = serve_config.args_type(app["import_path"])
        assert kind is not None, app["name"]
        kind.model_validate(app.get("args") or {})
    flow = next(a for a in config["applications"] if a["name"] == "flow")
    kind = serve_config.args_type(flow["import_path"])
    given = kind.given({"tick_s": 1.5})
    node = Settings(flow_tick_s=9.0, flow_shards=3)
    resolved = kind.resolve(given, node)
    assert (resolved.tick_s, resolved.shards) == (1.5, 3)
    assert kind.given({}) is None and kind.resolve(None, node).tick_s == 9.0


def test_a_cluster_deploy_keeps_the_yamls_resources_and_takes_ports_and_args(
    config: dict,
) -> None:
    """On a cluster the CPU and GPU requests stand, so a GPU deployment at zero replicas
    still asks the autoscaler for a GPU node; only the ports and `args:` come from settings."""
    settings = Settings(http_port=9100, grpc_port=9101, replica_cpus=0.05, flow_tick_s=0.5)
    adapted = serve_config.adapt_for_cluster(config, settings)
    assert adapted["http_options"] == {**config["http_options"], "port": 9100}
    assert adapted["grpc_options"] == {**config["grpc_options"], "port": 9101}
    assert adapted["proxy_location"] == config["proxy_location"] == "EveryNode"
    for app, given in zip(adapted["applications"], config["applications"], strict=True):
        assert app["deployments"] == given["deployments"]
        assert "runtime_env" not in app  # replicas read their settings on their nodes
    flow = next(a for a in adapted["applications"] if a["name"] == "flow")
    assert flow["args"]["tick_s"] == 0.5
    create = next(a for a in adapted["applications"] if a["name"] == "create")
    generator = next(d for d in create["deployments"] if d["name"] == "CreativeGenerator")
    assert generator["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1}
    serve_config.validate_strict(adapted)
    assert config["http_options"]["port"] == 8000  # the input is not modified

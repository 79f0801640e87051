"""serve_config.yaml: strict validation, and what `kiki up` adapts on a cluster or one machine.

Ray's `ServeDeploySchema` silently ignores unknown keys and does not validate
`autoscaling_config`, so a typo would deploy with defaults; `validate_strict` catches both.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import (
    DeploymentSchema,
    HTTPOptionsSchema,
    LoggingConfig,
    ServeApplicationSchema,
    ServeDeploySchema,
    gRPCOptionsSchema,
)

from deployments._serve import AppArgs
from kiki.config import APPS, SECRET_SETTINGS, Settings
from kiki.errors import ConfigError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "serve_config.yaml"

# Which model checks the keys of each nested mapping.
_NESTED: dict[type[BaseModel], dict[str, type[BaseModel]]] = {
    ServeDeploySchema: {
        "http_options": HTTPOptionsSchema,
        "grpc_options": gRPCOptionsSchema,
        "logging_config": LoggingConfig,
    },
    ServeApplicationSchema: {"logging_config": LoggingConfig},
    DeploymentSchema: {"autoscaling_config": AutoscalingConfig, "logging_config": LoggingConfig},
}
_LISTS: dict[type[BaseModel], dict[str, type[BaseModel]]] = {
    ServeDeploySchema: {"applications": ServeApplicationSchema},
    ServeApplicationSchema: {"deployments": DeploymentSchema},
}


def load(path: Path | None = None) -> dict[str, Any]:
    path = Path(path or DEFAULT_PATH)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read Serve config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Serve config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Serve config {path} must be a mapping with `applications:`")
    return data


def _unknown_keys(data: dict[str, Any], model: type[BaseModel], where: str) -> list[str]:
    found = [f"{where}.{k}" for k in data if k not in model.model_fields]
    for key, sub in _NESTED.get(model, {}).items():
        if isinstance(data.get(key), dict):
            found += _unknown_keys(data[key], sub, f"{where}.{key}")
    for key, sub in _LISTS.get(model, {}).items():
        for i, item in enumerate(data.get(key) or []):
            if isinstance(item, dict):
                name = item.get("name", i)
                found += _unknown_keys(item, sub, f"{where}.{key}[{name}]")
    return found


def validate_strict(data: dict[str, Any]) -> ServeDeploySchema:
    """Ray's own validation, plus unknown keys and autoscaling configs rejected."""
    unknown = _unknown_keys(data, ServeDeploySchema, "config")
    if unknown:
        raise ConfigError(f"unknown key(s) in Serve config: {', '.join(unknown)}")
    try:
        schema = ServeDeploySchema.model_validate(data)
        for app in data.get("applications", []):
            for dep in app.get("deployments") or []:
                if "autoscaling_config" in dep:
                    AutoscalingConfig(**dep["autoscaling_config"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"Serve config invalid at {where}: {first['msg']}") from None
    names = [a.name for a in schema.applications]
    if sorted(names) != sorted(APPS):
        raise ConfigError(f"Serve config must define the apps {', '.join(APPS)}; found {names}")
    return schema


def adapt_for_cluster(data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A copy of the config for a cluster (`kiki up` with RAY_ADDRESS): the ports and each
    app's `args:` from settings, everything else as the YAML says. Above all the replicas'
    `num_cpus` and `num_gpus` stay: a GPU deployment scaled to zero must keep asking for its
    GPU, or the autoscaler never adds a GPU node for it. Replicas read their other settings
    from their nodes' environment, as with `serve deploy`."""
    out = copy.deepcopy(data)
    out["http_options"] = {**out.get("http_options", {}), "port": settings.http_port}
    out["grpc_options"] = {**out.get("grpc_options", {}), "port": settings.grpc_port}
    for app in out["applications"]:
        args = local_args(app["import_path"], app.get("args") or {}, settings)
        if args:
            app["args"] = args
    return out


def adapt_for_machine(data: dict[str, Any], settings: Settings, gpus: float) -> dict[str, Any]:
    """A copy of the config for a local run on this machine: the cluster's adaptation, plus
    the HTTP host, small CPU shares so six apps fit on a laptop, no GPU requests where there
    is no GPU, and the replicas' KIKI_* settings (secrets excepted) in `runtime_env`."""
    out = adapt_for_cluster(data, settings)
    out["http_options"]["host"] = settings.http_host
    # One proxy on this node: a local run has one node, and it keeps the printed URLs right.
    out["proxy_location"] = "HeadOnly"
    env = replica_env(settings)
    for app in out["applications"]:
        runtime_env = app.setdefault("runtime_env", {})
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        for dep in app.get("deployments") or []:
            options = dep.setdefault("ray_actor_options", {})
            options["num_cpus"] = min(float(options.get("num_cpus", 1)), settings.replica_cpus)
            if gpus < 1 and options.get("num_gpus"):
                options["num_gpus"] = 0
    return out


def args_type(import_path: str) -> type[AppArgs] | None:
    """The options model an app's builder takes (None: the path names a built application)."""
    module_name, _, attribute = import_path.partition(":")
    builder = getattr(importlib.import_module(module_name), attribute)
    if not inspect.isfunction(builder):
        return None
    hints = typing.get_type_hints(builder)
    kind = next((hints[p] for p in inspect.signature(builder).parameters if p in hints), None)
    return kind if isinstance(kind, type) and issubclass(kind, AppArgs) else None


def local_args(import_path: str, given: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """An app's `args:` as `kiki up` deploys them: the YAML's, overridden by the KIKI_*
    settings the operator set (a setting left at its default leaves the YAML's value).
    Validated here, so a bad value stops `kiki up` with the option named instead of failing
    a deployment."""
    kind = args_type(import_path)
    if kind is None:
        return given
    chosen = {
        field: getattr(settings, name)
        for field, name in kind.settings_fields.items()
        if getattr(settings, name) != Settings.model_fields[name].default
    }
    try:
        args = kind.model_validate({**given, **chosen})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{import_path} args: {where}: {first['msg']}") from None
    return args.model_dump(mode="json", exclude_defaults=True)


def replica_env(settings: Settings) -> dict[str, str]:
    """The settings a replica needs, as environment variables: the state folder and the
    database port always, and every other setting that differs from its default (settings
    built in code, as tests do, would otherwise not reach the replicas); secrets excepted
    (see `secret_env`)."""
    env = {
        "KIKI_PG_PORT": str(settings.pg_port),
        "KIKI_LOG_LEVEL": settings.log_level,
        "KIKI_HOME": str(Path(settings.home).resolve()),
    }
    for name, value in _changed(settings):
        if name != "ray_address" and not _is_secret(name):
            env.setdefault(f"KIKI_{name.upper()}", str(value))
    return env


def secret_env(settings: Settings) -> dict[str, str]:
    """The secret settings that are set, as environment variables: a local run gives them to
    the raylet when it starts (its workers inherit them); a cluster's nodes must have them."""
    return {f"KIKI_{name.upper()}": str(value) for name, value in _changed(settings)
            if _is_secret(name)}  # fmt: skip


def _changed(settings: Settings) -> Iterator[tuple[str, Any]]:
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is not None and value != field.default:
            yield name, value.get_secret_value() if isinstance(value, SecretStr) else value


def _is_secret(name: str) -> bool:
    """Named in SECRET_SETTINGS, or typed SecretStr (alone or optional)."""
    annotation = Settings.model_fields[name].annotation
    return name in SECRET_SETTINGS or SecretStr in (annotation, *get_args(annotation))


@contextmanager
def inherited_env(env: dict[str, str]) -> Iterator[None]:
    """`env` in this process's environment for the block only: processes started inside it
    (the raylet) keep it, this process does not."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

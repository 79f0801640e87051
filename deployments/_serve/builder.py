"""An application's typed options and the builder that turns them into a Serve application.

`serve_config.yaml` names each app's builder (`import_path: deployments.<svc>.app:build_app`)
and its options (`args:`); Serve calls the builder with them. The builder validates them into
the app's `AppArgs` (unknown keys refused) and binds its deployments; the ingress hands them
to the replica's runtime. Deployment options (replicas, CPUs, GPUs) live in the YAML only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve import Deployment

from deployments._serve.ingress import ServiceIngress
from kiki.config import Settings


class AppArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The KIKI_* setting each option is read from on a local run (`kiki up`), by field name.
    settings_fields: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls, args: Any) -> Self:
        """Serve passes the YAML's mapping (or an instance, from code)."""
        return args if isinstance(args, cls) else cls.model_validate(args or {})

    @classmethod
    def given(cls, args: Any) -> Self | None:
        """The builder's options: those `args:` names, validated; None when it names none, so
        the replicas read them from their KIKI_* settings (a cluster's node environment)."""
        return cls.parse(args) if args else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The options as a local run's settings give them."""
        return cls.model_validate(
            {field: getattr(settings, name) for field, name in cls.settings_fields.items()}
        )


def plain_ingress(service: str, api: FastAPI) -> Deployment:
    """The ingress deployment (`<Service>Ingress`) of an app whose replicas serve only its
    FastAPI routes; its options come from serve_config.yaml."""
    cls = type(f"{service.title()}Ingress", (ServiceIngress,), {"service": service, "api": api})
    return serve.deployment(serve.ingress(api)(cls))

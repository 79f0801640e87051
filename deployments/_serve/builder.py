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
    def resolve(cls, given: Self | None, settings: Settings) -> Self:
        """The options in force in a replica: those `args:` named, and for the rest the
        replica's KIKI_* settings (its node's environment)."""
        base = cls.from_settings(settings)
        if given is None:
            return base
        return base.model_copy(
            update={name: getattr(given, name) for name in given.model_fields_set}
        )

    def applied_to(self, settings: Settings) -> Settings:
        """`settings` with these options in place of the KIKI_* values they stand for, for
        code that reads one Settings (channels, the studio, the automation actor)."""
        update = {name: getattr(self, field) for field, name in self.settings_fields.items()}
        return settings.model_copy(update=update)

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

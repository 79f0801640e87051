"""Subcommands imported when they are run, not when `kiki` starts.

Some commands need torch, XGBoost, scikit-learn and Ray Tune (training, benchmarks), which take
seconds of CPU to import: importing every command up front made each `kiki` call, even `kiki
keys list` or a mistyped option, pay for all of them. This is click's documented pattern for
lazily loaded subcommands."""

from __future__ import annotations

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    """A group whose `lazy` subcommands ({name: "module:attribute"}) are imported on use."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise RuntimeError(f"{target} is not the command {cmd_name!r}")
        return command

"""How a command ends on a problem: one line on stderr and an exit code, never a trace."""

from __future__ import annotations

import sys

import click

from kiki.config import Settings, load_settings
from kiki.errors import ConfigError


def fail(message: str, code: int = 1) -> None:
    click.echo(f"kiki: error: {message}", err=True)
    sys.exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        fail(exc.message, 2)
        raise  # unreachable; keeps type checkers content

"""Public faces of the services, loaded on first use.

`kiki/<service>/__init__.py` names what other services may import from it. The names resolve
lazily (PEP 562), so importing one small module of a service does not load all of it (SyncValue
brings torch, SyncEngage xgboost) just because its package's face was read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """(`__all__`, `__getattr__`) for a package whose face is `exports`: public name ->
    "module:attribute" (the attribute defaults to the public name)."""

    def resolve(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute or name)

    return sorted(exports), resolve

"""The rules of the house, checked on the source:

- the domain (`kiki/`) never imports Ray or the Ray layers, the benchmarks or the launcher;
- nothing imports the launcher (the `kiki` command sits on top of everything);
- a service uses another service only through its public face (`kiki.<service>`, whose
  `__all__` names it), from its domain package, its actors and its app alike;
- there are no import cycles between the project's modules.
"""

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("kiki", "actors", "deployments", "training", "benchmarks", "launcher")
FORBIDDEN_IN_DOMAIN = {"ray", "actors", "deployments", "training", "launcher", "benchmarks"}
SERVICES = ("value", "shield", "flow", "create", "engage", "billing")
# Which service each actor module belongs to.
ACTORS = {"budget": "shield", "guard": "shield", "flow": "flow", "engage": "engage"}


def _files(*layers: str) -> Iterator[Path]:
    for layer in layers:
        yield from (REPO / layer).rglob("*.py")


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported when `path` is imported (not those imported inside functions, nor
    under `if TYPE_CHECKING:`)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(sub, ast.Import):
                names |= {alias.name for alias in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                names.add(sub.module)
                names |= {f"{sub.module}.{alias.name}" for alias in sub.names}
    return names


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _own_service(path: Path) -> str | None:
    parts = path.relative_to(REPO).parts
    if parts[0] in ("kiki", "deployments") and len(parts) > 2 and parts[1] in SERVICES:
        return parts[1]
    if parts[0] == "actors" and len(parts) > 1:
        return ACTORS.get(parts[1].removesuffix(".py"))
    return None


def test_the_domain_never_imports_ray_or_the_layers_above_it() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted({n.split(".")[0] for n in _all_imports(path)}
                                           & FORBIDDEN_IN_DOMAIN)
        for path in _files("kiki")
        if {n.split(".")[0] for n in _all_imports(path)} & FORBIDDEN_IN_DOMAIN
    }  # fmt: skip
    assert offenders == {}


def test_nothing_imports_the_launcher() -> None:
    for path in _files(*(layer for layer in LAYERS if layer != "launcher")):
        assert not any(n.split(".")[0] == "launcher" for n in _all_imports(path)), path


def _face(service: str) -> set[str]:
    return set(importlib.import_module(f"kiki.{service}").__all__)


def test_every_service_names_its_public_face() -> None:
    for service in SERVICES:
        assert _face(service), f"kiki/{service}/__init__.py names no public face (__all__)"


def test_services_use_each_other_only_through_their_public_faces() -> None:
    offenders = []
    for path in _files("kiki", "actors", "deployments"):
        own = _own_service(path)
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [(node.module, [alias.name for alias in node.names])]
            else:
                continue
            for module, names in modules:
                parts = module.split(".")
                if parts[0] != "kiki" or len(parts) < 2 or parts[1] not in SERVICES:
                    continue
                if parts[1] == own:
                    continue
                outside = len(parts) > 2 or set(names) - _face(parts[1])
                if outside:
                    offenders.append(f"{path.relative_to(REPO)}: {module} {names}")
    assert offenders == []


def test_no_import_cycles() -> None:
    modules = {_module(path): path for path in _files(*LAYERS)}
    graph = {
        name: {m for m in _top_level_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    cycles = _cycles(graph)
    assert cycles == [], cycles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found

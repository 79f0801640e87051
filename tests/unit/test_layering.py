"""The one-way rule: deployments/, actors/, training/ and launcher/ may import kiki/; kiki/
never imports Ray or those layers."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {"ray", "actors", "deployments", "training", "launcher"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_the_domain_package_never_imports_ray_or_the_ray_layers() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & FORBIDDEN)
        for path in (REPO / "kiki").rglob("*.py")
        if _imports(path) & FORBIDDEN
    }
    assert offenders == {}


def test_nothing_imports_the_launcher() -> None:
    for layer in ("kiki", "actors", "deployments", "training"):
        for path in (REPO / layer).rglob("*.py"):
            assert "launcher" not in _imports(path), path

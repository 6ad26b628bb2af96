"""The import rules of the package: layers only point down, and no package imports itself in a cycle.

Layers, top to bottom: the command line; what Flower runs (apps); strategies and clients; the
federated glue; the data-free pipeline, training and reports; models; data; errors, config and
utilities. A module may import its own package and any lower layer, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Folders of the repository and the package names they install as.
ROOTS = {"fedkd": "fedkd", "strategies": "fedkd.strategies", "clients": "fedkd.clients"}
LAYERS = {
    "fedkd.cli": 7,
    "fedkd.apps": 6,
    "fedkd.strategies": 5,
    "fedkd.clients": 5,
    "fedkd.federated": 4,
    "fedkd.datafree": 3,
    "fedkd.training": 3,
    "fedkd.report": 3,
    "fedkd.models": 2,
    "fedkd.data": 1,
    "fedkd.errors": 0,
    "fedkd.config": 0,
    "fedkd.config_renames": 0,
    "fedkd.utils": 0,
}


def _package(module: str) -> str | None:
    """The layered package a dotted module name belongs to (``None`` for ``fedkd`` itself)."""
    parts = module.split(".")
    for depth in (2, 1):
        name = ".".join(parts[:depth])
        if name in LAYERS:
            return name
    return None


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Every fedkd module ``path`` imports, at the top or inside functions (relative ones resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")[: len(module.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return {name for name in out if name == "fedkd" or name.startswith("fedkd.")}


MODULES = _modules()


def test_every_module_belongs_to_a_layer():
    orphans = [m for m in MODULES if m != "fedkd" and _package(m) is None]
    assert not orphans, f"add these packages to LAYERS (and to the layer map in CONTRIBUTING.md): {orphans}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _package(m)))
def test_imports_point_down(module):
    source = _package(module)
    upward = sorted(
        name for name in _imports(MODULES[module], module)
        if (target := _package(name)) is not None and LAYERS[target] > LAYERS[source]
    )
    assert not upward, f"{module} (layer {LAYERS[source]}) imports a higher layer: {upward}"


def test_no_import_cycle_between_packages():
    edges: dict[str, set[str]] = {p: set() for p in LAYERS}
    for module, path in MODULES.items():
        source = _package(module)
        if source is None:
            continue
        edges[source].update(t for n in _imports(path, module) if (t := _package(n)) not in (None, source))
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges[node]):
            assert seen.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in seen:
                visit(nxt, [*path, node])
        seen[node] = 2

    for package in sorted(edges):
        if package not in seen:
            visit(package, [])


def test_installed_names_cannot_clash():
    """strategies/ and clients/ install under fedkd (no top-level package of either name)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["fedkd*"]
    assert setuptools["package-dir"] == {"fedkd.strategies": "strategies", "fedkd.clients": "clients"}
    import fedkd.clients.train
    import fedkd.strategies.fedavg

    assert Path(fedkd.strategies.fedavg.__file__).parent == REPO / "strategies"
    assert Path(fedkd.clients.train.__file__).parent == REPO / "clients"

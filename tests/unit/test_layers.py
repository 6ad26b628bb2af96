"""The import rules of the package: layers only point down, and nothing imports itself in a cycle.

Layers, top to bottom: the command line; what Flower runs (apps); strategies and clients; the
federated glue; the data-free pipeline, training and reports; models; data; errors, config and
utilities. A module may import its own package and any lower layer, never a higher one. Neither
packages nor modules form an import cycle, whether the imports sit at the top of a module or
inside a function (an import moved into a function to dodge a cycle is still a cycle).
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Mapping
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


def _import_statements(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """Each import in ``path``, at the top or inside functions, as ``(base, names)``.

    ``import a.b`` is ``("a.b", [])``; ``from a import b, c`` is ``("a", ["b", "c"])``, with a
    relative base resolved against ``module``.
    """
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + (path.name == "__init__.py")]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            out.append((base, [a.name for a in node.names]))
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every fedkd name ``path`` imports, at the top or inside functions (relative ones resolved)."""
    out: set[str] = set()
    for base, names in _import_statements(path, module):
        out.add(base)
        out.update(f"{base}.{name}" for name in names)
    return {name for name in out if name == "fedkd" or name.startswith("fedkd.")}


def _module_of(name: str, modules: Collection[str]) -> str | None:
    """The module of ``modules`` that dotted ``name`` lies in: itself, or its longest prefix."""
    parts = name.split(".")
    for depth in range(len(parts), 0, -1):
        if (candidate := ".".join(parts[:depth])) in modules:
            return candidate
    return None


def _module_imports(path: Path, module: str, modules: Collection[str]) -> set[str]:
    """The modules of ``modules`` whose code runs because ``module`` imports it.

    ``from a import b`` depends on module ``a.b`` when there is one (``a`` is then only its parent
    package, which Python has already begun to import), else on ``a``. Parent packages that an
    import initialises implicitly are left out, as is ``module`` itself: with them every package
    whose ``__init__`` imports its own modules would look like a cycle.
    """
    out: set[str] = set()
    for base, names in _import_statements(path, module):
        targets = [f"{base}.{name}" if f"{base}.{name}" in modules else base for name in names] or [base]
        out.update(found for t in targets if (found := _module_of(t, modules)) is not None)
    out.discard(module)
    return out


def _cycles(edges: Mapping[str, Collection[str]]) -> list[list[str]]:
    """One closed path (first node repeated at the end) per back edge a depth-first search meets."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


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


def test_no_import_cycle_between_modules():
    """No two fedkd modules, in any package, import each other directly or through others."""
    edges = {module: _module_imports(path, module, MODULES) for module, path in MODULES.items()}
    cycles = [" -> ".join(cycle) for cycle in _cycles(edges)]
    assert not cycles, "import cycles between modules (put the shared names in a module both import):\n" + "\n".join(
        cycles
    )


def test_module_cycle_check_sees_function_level_and_relative_imports(tmp_path):
    """The module check counts imports inside functions, resolves relative ones, and reports the path."""
    modules = {"fedkd.p", "fedkd.p.a", "fedkd.p.b", "fedkd.p.c", "fedkd.q"}
    sources = {
        "a.py": "from fedkd.p.b import thing\n",
        "b.py": "def late():\n    from . import c\n",
        "c.py": "import fedkd.q\n\ndef later():\n    from .a import thing  # noqa\n",
        "__init__.py": "from fedkd.p import a, b\n",
    }
    edges = {}
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
        module = "fedkd.p" if name == "__init__.py" else f"fedkd.p.{name[:-3]}"
        edges[module] = _module_imports(tmp_path / name, module, modules)
    assert edges == {
        "fedkd.p.a": {"fedkd.p.b"},
        "fedkd.p.b": {"fedkd.p.c"},
        "fedkd.p.c": {"fedkd.q", "fedkd.p.a"},
        "fedkd.p": {"fedkd.p.a", "fedkd.p.b"},
    }
    assert _cycles(edges) == [["fedkd.p.a", "fedkd.p.b", "fedkd.p.c", "fedkd.p.a"]]
    assert _cycles({"x": {"y"}, "y": set()}) == []


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

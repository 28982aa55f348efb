"""The package's layers import one way: foundations ← data ← models ← runs ← comparisons · site tools ·
spatial ← command line; no import circle; lazy (function-level) imports of kgml only in the command line;
importing the model imports no reader."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "kgml"

#: (layer, regular expression on the dotted module name), lowest first.
LAYERS = [
    ("foundations", r"kgml(\.(variables|io|paths|config|metrics|machine|progress|cliopts|_moved))?$"),
    ("data", r"kgml\.data(\.\w+)*$"),
    ("models", r"kgml\.models(\.\w+)*$"),
    ("runs", r"kgml\.(training|experiment|evaluation|uncertainty|synthetic(\.\w+)?)$"),
    ("tools", r"kgml\.(compare|fluxsite|spatial)(\.\w+)?$"),
    ("cli", r"kgml\.cli(\.\w+)?$"),
]


def _layer(module: str) -> int:
    for i, (_, rx) in enumerate(LAYERS):
        if re.match(rx, module):
            return i
    raise AssertionError(f"module {module} is in no layer: add it to LAYERS")


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mods: dict[str, Path]):
    """(importer, imported module, line, at module level) for every kgml import, module or function level."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kgml":
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "kgml"]
            for n in names:
                target = resolve(n)
                if target and target != m:
                    yield m, target, node.lineno, id(node) in top


def test_every_module_is_in_a_layer_and_imports_only_downward():
    mods = _modules()
    bad = []
    for m in mods:
        _layer(m)
    for a, b, line, _ in _imports(mods):
        if _layer(b) > _layer(a):
            bad.append(f"{mods[a].relative_to(ROOT)}:{line} ({LAYERS[_layer(a)][0]}) imports {b} "
                       f"({LAYERS[_layer(b)][0]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_circle():
    mods = _modules()
    graph = defaultdict(set)
    for a, b, _, _ in _imports(mods):
        if not (a == "kgml" or b.startswith(a + ".")):  # a package's own __init__ re-exports
            graph[a].add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(w):] + [w]))
            if w not in state:
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if v not in state:
            visit(v)


def test_lazy_kgml_imports_only_in_the_command_line():
    mods = _modules()
    lazy = [f"{mods[a].relative_to(ROOT)}:{line} imports {b}" for a, b, line, top in _imports(mods)
            if not top and LAYERS[_layer(a)][0] != "cli"]
    assert not lazy, "function-level kgml imports outside kgml's command line:\n" + "\n".join(lazy)


@pytest.mark.parametrize("module", ["kgml.models.hybrid", "kgml.models.neural", "kgml.models.base"])
def test_importing_the_model_imports_no_reader(module):
    code = (f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('kgml.data.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    readers = sorted(set(out) - {"kgml.data.schema", "kgml.data.batching", "kgml.data.drivers"})
    assert not readers, f"importing {module} imports data readers {readers}"


@pytest.mark.parametrize("old", sorted(__import__("kgml._moved", fromlist=["MOVED"]).MOVED))
def test_an_old_module_name_imports_the_same_module(old):
    import importlib

    from kgml._moved import new_name
    assert importlib.import_module(old) is importlib.import_module(new_name(old))


def test_old_names_reach_submodules_and_public_entry_points():
    import kgml.bench.suites
    from kgml.bench.suites import get_suite
    from kgml.nn.heads import ParameterHead

    import kgml.compare.suites
    assert kgml.bench.suites is kgml.compare.suites and get_suite is kgml.compare.suites.get_suite
    assert ParameterHead.__module__ == "kgml.models.nn.heads"  # one class, not a second copy
    assert kgml.bench.suites.__spec__.name == "kgml.compare.suites"


def test_the_package_itself_imports_only_new_names():
    from kgml._moved import new_name
    old = [f"{mods_path.relative_to(ROOT)}:{line} imports {b}"
           for mods_path, line, b in _raw_imports() if new_name(b) is not None]
    assert not old, "kgml imports a module by its old name:\n" + "\n".join(old)


def _raw_imports():
    for p in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kgml"):
                yield p, node.lineno, node.module
                for a in node.names:
                    yield p, node.lineno, f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("kgml"):
                        yield p, node.lineno, a.name

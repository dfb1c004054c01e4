"""The package's architecture, read from its imports: subpackages depend on each other in one direction only
(no two import each other, directly or through others), modules stay small, and every module says what it is for."""

from __future__ import annotations

import ast
import os
from collections import defaultdict

import pix2seq_d2
from tests.helpers import REPO_ROOT

PACKAGE_DIR = os.path.dirname(pix2seq_d2.__file__)
MAX_MODULE_LINES = 520  # "no module runs past ~500 lines"
# The subpackages, lowest first: each may import only those before it (pix2seq_d2/__init__.py says the same).
LAYERS = ("utils", "tasks", "data", "modeling", "solver", "checkpoint", "evaluation", "config", "export",
          "model_zoo", "conversion", "analysis", "engine")  # fmt: skip


def _modules() -> dict[str, str]:
    """Dotted module name -> file path, for every module of the package."""
    found = {}
    for root, _, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def _imported_modules(module: str, path: str) -> set[str]:
    """The pix2seq_d2 modules ``module`` imports (relative imports resolved), anywhere in the file."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
            out.update(n for n in names if n.startswith("pix2seq_d2"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("pix2seq_d2"))
    return out


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def subpackage_graph() -> dict[str, set[str]]:
    """Subpackage -> the other subpackages it imports (the top-level ``pix2seq_d2/__init__.py`` excluded)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in _modules().items():
        source = _subpackage(module)
        if source is None:
            continue
        graph[source]
        for target in _imported_modules(module, path):
            other = _subpackage(target)
            if other is not None and other != source:
                graph[source].add(other)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_subpackages_import_each_other_in_one_direction_only():
    graph = subpackage_graph()
    assert {"utils", "tasks", "data", "modeling", "config", "engine"} <= set(graph)
    mutual = sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, ()))
    assert not mutual, f"subpackages that import each other: {mutual}"
    cycle = _cycle(graph)
    assert cycle is None, f"an import cycle between subpackages: {' -> '.join(cycle)}"


def test_each_subpackage_imports_only_the_layers_below_it():
    graph = subpackage_graph()
    assert set(graph) <= set(LAYERS), f"subpackages missing from LAYERS: {sorted(set(graph) - set(LAYERS))}"
    upward = {
        name: sorted(t for t in targets if LAYERS.index(t) > LAYERS.index(name)) for name, targets in graph.items()
    }
    assert not {k: v for k, v in upward.items() if v}, f"imports of higher layers: {upward}"


def test_the_layering_check_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_utils_imports_nothing_of_the_package():
    assert subpackage_graph()["utils"] == set()


def test_modules_are_small_and_say_what_they_are_for():
    too_long, undocumented = [], []
    for module, path in _modules().items():
        text = open(path, encoding="utf-8").read()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{module} ({text.count(chr(10))} lines)")
        if ast.get_docstring(ast.parse(text)) is None:
            undocumented.append(module)
    assert not too_long, f"modules past {MAX_MODULE_LINES} lines: {too_long}"
    assert not undocumented, f"modules without a docstring: {undocumented}"


def test_no_module_imports_private_names_of_another():
    found = []
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pix2seq_d2")):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    found.append(f"{module}: {private} from {'.' * node.level}{node.module or ''}")
    assert not found, found


def test_tests_mirror_the_package():
    """Every subpackage has its tests under tests/<subpackage>/."""
    missing = []
    for module, path in _modules().items():
        if path.endswith("__init__.py") and module.count(".") == 1:
            folder = os.path.join(REPO_ROOT, "tests", module.split(".")[1])
            if not os.path.isdir(folder):
                missing.append(folder)
    assert not missing, f"subpackages without a tests folder: {missing}"

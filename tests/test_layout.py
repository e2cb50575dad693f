"""The layout's rules, checked from the source (AST only: nothing is imported, so these are cheap).

- No import cycle among the project's modules, counting imports inside functions too: an import
  placed in a function to dodge a cycle still makes one.
- gan_common imports neither framework; gan_jax never imports gan_torch, nor gan_torch gan_jax.
- The two backends' checkpoint modules keep one contract (gan_common.loop.Checkpointer): the same
  functions with the same parameters.
"""

from __future__ import annotations

import ast
import inspect
import pathlib

import pytest

from gan_common.loop import Checkpointer

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("gan_common", "gan_jax", "gan_torch", "benchmarks")
# tensorflow_datasets is allowed in gan_common: it reads prepared datasets (lazily, only for --data-source tfds).
FRAMEWORKS = ("jax", "jaxlib", "flax", "optax", "orbax", "torch", "tensorflow")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def _imports(path: pathlib.Path, module: str) -> set[str]:
    """Every module `module`'s source imports, at any depth of the file (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _project_graph() -> dict[str, set[str]]:
    sources = _sources()
    graph = {}
    for module, path in sources.items():
        targets = set()
        for name in _imports(path, module):
            while name and name not in sources:  # `pkg.module.attr` -> `pkg.module`
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_imports_inside_functions():
    """The checker itself: a function-level import is an edge, and a two-module loop is a cycle."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    deps = _project_graph()
    assert "gan_jax.step" in deps["gan_jax.backend"]
    assert "gan_common.outputs" in deps["gan_common.loop"]


def test_no_import_cycles_among_project_modules():
    assert _cycles(_project_graph()) == []


@pytest.mark.parametrize("package, forbidden", [
    ("gan_common", FRAMEWORKS + ("gan_jax", "gan_torch", "benchmarks")),
    ("gan_jax", ("torch", "gan_torch", "benchmarks")),
    ("gan_torch", ("jax", "jaxlib", "flax", "optax", "orbax", "gan_jax", "benchmarks")),
])
def test_each_package_imports_only_what_it_may(package, forbidden):
    bad = {}
    for module, path in _sources().items():
        if module.split(".")[0] != package:
            continue
        hits = sorted(n for n in _imports(path, module) if n.split(".")[0] in forbidden)
        if hits:
            bad[module] = hits
    assert bad == {}


# Deliberate function-level imports of project modules, each commented where it stands: a benchmark that
# needs jax (or torch) only for one option does not load it otherwise.
LAZY_IMPORTS = {("benchmarks.flops", "gan_jax.step"), ("benchmarks.quality", "gan_torch.backend")}


def test_project_imports_sit_at_the_top_of_modules():
    """Imports of project modules are module-level statements, but for the listed lazy ones."""
    nested = []
    for module, path in _sources().items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                project = [n for n in names if n.split(".")[0] in ("gan_common", "gan_jax", "gan_torch", "benchmarks")]
                if any((module, n) not in LAZY_IMPORTS for n in project):
                    nested.append(f"{module}:{node.lineno}")
    assert nested == []


def _parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.mark.parametrize("backend", ["gan_jax", "gan_torch"])
def test_each_checkpoint_module_keeps_the_checkpointer_contract(backend):
    """Same function names and parameter names as gan_common.loop.Checkpointer, in both backends
    (read from the source, so neither framework is imported here)."""
    tree = ast.parse((REPO / backend / "checkpoint.py").read_text())
    defs = {node.name: [a.arg for a in node.args.args] for node in tree.body if isinstance(node, ast.FunctionDef)}
    for name, member in inspect.getmembers(Checkpointer, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert defs.get(name) == _parameters(member)[1:], name  # [1:]: the protocol's self

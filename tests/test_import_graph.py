"""No import circles among the repository's packages.

The graph is built statically (ast), so it also sees imports inside functions,
which a circle can hide behind until the one call that runs them. No circle is
allowed (the last one, the data readers' through prepare, went with data/engine.py).

    python -m tests.test_import_graph    # print the graph's layers
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("amanet_fast", "kernels", "benchmarks", "tools")

# Inference depends on the model, never on the trainer (docs/design.md): these modules, and
# everything they reach, may not import amanet_fast.training.
INFERENCE = ("amanet_fast.predict", "amanet_fast.export", "amanet_fast.visualize", "amanet_fast.stream",
             "amanet_fast.pretrained", "amanet_fast.pretrained.__main__", "amanet_fast.ensemble")
TRAINER = "amanet_fast.training"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def repo_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of `if TYPE_CHECKING:` (never imported at run time)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported repo module: first line}; `from pkg import name` points at
    pkg.name when that is a module, else at pkg."""
    modules = repo_modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                # `import a.b.c` binds through a.b.c's deepest module in the repo
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].setdefault(target, node.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """Tarjan's components, iteratively (the graph is a few hundred nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(frozenset(component))
    return components


def cycles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    return [c for c in strongly_connected(graph) if len(c) > 1]


def describe(graph: dict[str, dict[str, int]], component: frozenset[str]) -> str:
    """One concrete circle inside the component, with the importing lines."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        node = path[-1]
        nxt = next((n for n in sorted(graph[node]) if n in component and (n == start or n not in seen)), None)
        if nxt is None or nxt == start or len(path) > len(component):
            path.append(start if nxt == start else nxt or start)
            break
        path.append(nxt)
        seen.add(nxt)
    hops = [f"{a} (line {graph[a].get(b, '?')}) -> {b}" for a, b in zip(path, path[1:])]
    return f"{len(component)} modules {sorted(component)}; e.g. " + ", ".join(hops)


def layers(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Components by depth: layer 0 imports nothing of the repo; layer n imports up to n-1."""
    components = strongly_connected(graph)
    owner = {m: c for c in components for m in c}
    depth: dict[frozenset[str], int] = {}
    for component in components:  # Tarjan emits a component after everything it reaches
        deps = {owner[t] for m in component for t in graph[m]} - {component}
        depth[component] = 1 + max((depth[d] for d in deps), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for component, d in depth.items():
        out[d].append(" + ".join(sorted(component)) if len(component) > 1 else next(iter(component)))
    return [sorted(layer) for layer in out]


def test_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "kernels.ops" in graph["kernels.api"]  # from . import ops
    assert "kernels.window" in graph["kernels.tools.specs"]  # from .. import window
    assert all(not t.startswith("amanet_fast") for m in graph if m.startswith("kernels") for t in graph[m])


def test_cycle_finder_sees_a_circle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(describe(graph, c) for c in found)


def trainer_path(graph: dict[str, dict[str, int]], start: str) -> list[str] | None:
    """A chain of imports from `start` into the trainer package, or None (breadth first: the shortest)."""
    parent: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == TRAINER or node.startswith(TRAINER + "."):
            chain = [node]
            while parent[chain[-1]] is not None:
                chain.append(parent[chain[-1]])
            return chain[::-1]
        for nxt in graph[node]:
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return None


@pytest.mark.parametrize("module", INFERENCE)
def test_inference_never_imports_the_trainer(module):
    graph = import_graph()
    assert module in graph, f"{module} moved: update INFERENCE"
    chain = trainer_path(graph, module)
    assert chain is None, " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(chain, chain[1:])) + f" -> {chain[-1]}"


def test_trainer_check_sees_function_level_imports():
    graph = {"a": {"b": 3}, "b": {TRAINER + ".loop": 9}, TRAINER + ".loop": {}}
    assert trainer_path(graph, "a") == ["a", "b", TRAINER + ".loop"]
    real = import_graph()  # visualize reaches data/io through a function-local import
    assert "amanet_fast.data.io" in real["amanet_fast.visualize"]
    assert TRAINER + ".checkpoint" in real["tools.pack_pretrained"]  # tools may use the trainer


if __name__ == "__main__":
    for depth, layer in enumerate(layers(import_graph())):
        print(f"layer {depth}: {', '.join(layer)}")

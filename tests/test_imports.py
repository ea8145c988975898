"""No import cycles between the project's modules (bayesiamp_jax, experiments, benchmarks).

The graph is read from the source with ``ast``: every ``import`` / ``from … import`` anywhere in a
module (top level, inside functions) adds an edge to the project module it names, so a cycle
broken by an import inside a function still counts. Imports under ``if __name__ == "__main__"``
are edges of the program, not of the module (``python -m experiments.paper`` hands its
arguments to ``experiments.cli``, which imports ``experiments.paper`` as a module): they are in
the graph with ``main_blocks=True`` and left out of the cycle check.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bayesiamp_jax", "experiments", "benchmarks")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file below the packages."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imported(node, module: str, is_package: bool, modules) -> set[str]:
    """Project modules an import node names (``from p import m`` names p.m when m is one)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level:  # relative: resolve against the importing module's package
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    found = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
    if target in modules and len(found) < len(node.names):
        found.add(target)
    return found


def _is_main_block(node) -> bool:
    t = node.test if isinstance(node, ast.If) else None
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name)
            and t.left.id == "__name__" and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def import_graph(root: Path, packages=PACKAGES, main_blocks: bool = True) -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (``main_blocks``: also
    under ``if __name__ == "__main__"``)."""
    files = module_files(root, packages)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        if not main_blocks:
            tree.body = [n for n in tree.body if not _is_main_block(n)]
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module, path.name == "__init__.py", files)
        graph[module] = edges - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_the_project_has_no_import_cycles():
    graph = import_graph(ROOT)
    assert {"bayesiamp_jax", "experiments.paper", "benchmarks.run"} <= set(graph)
    assert "bayesiamp_jax.regression" in graph["experiments.regression"]
    assert "benchmarks.runner" in graph["benchmarks.generation"]  # from its __main__ block
    assert "experiments.cli" in graph["experiments.paper"]  # likewise
    assert find_cycles(import_graph(ROOT, main_blocks=False)) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from toy.a import f\n")
    (pkg / "a.py").write_text("from toy import sub\n\ndef f():\n    from toy.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..a import f\n")
    (pkg / "c.py").write_text("import toy.a\n")
    graph = import_graph(tmp_path, ("toy",))
    assert graph == {"toy": {"toy.a"}, "toy.a": {"toy.sub", "toy.sub.b"}, "toy.sub": set(),
                     "toy.sub.b": {"toy.a"}, "toy.c": {"toy.a"}}
    assert find_cycles(graph) == [["toy.a", "toy.sub.b"]]
    assert find_cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []

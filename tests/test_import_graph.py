"""No package-level import cycle in ppsn/, lazy imports (inside functions) included: a lower
layer never imports a higher one (DESIGN.md, "The next shape")."""

import ast
import pathlib

from tests.conftest import REPO_ROOT

PACKAGE = pathlib.Path(REPO_ROOT) / "ppsn"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: pathlib.Path) -> set[str]:
    """Every ``ppsn.*`` module or name ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "ppsn" or m.startswith("ppsn.")}


def _unit(module: str) -> str | None:
    """The top-level module or subpackage of ``ppsn`` that ``module`` belongs to."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    top = PACKAGE / parts[1]
    return f"ppsn.{parts[1]}" if top.is_dir() or top.with_suffix(".py").is_file() else None


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _unit(_module_name(path))
        if source is None:  # ppsn/__init__.py
            continue
        targets = {_unit(m) for m in _imported(path)} - {None, source}
        graph.setdefault(source, set()).update(targets)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_lazy_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_imports_are_edges():
    graph = package_graph()
    assert "ppsn.preflight" in graph["ppsn.train_mode"]  # module level
    assert "ppsn.data" in graph["ppsn.preflight"]  # only inside functions


def test_ppsn_has_no_package_level_import_cycle():
    graph = package_graph()
    found = cycles(graph)
    assert not found, "import cycles between ppsn's packages: " + "; ".join(
        " <-> ".join(c) for c in found)

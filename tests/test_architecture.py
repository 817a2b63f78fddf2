"""The shape of the house, read from the source: no import cycle among ``pipeline`` modules
(module-level and function-level imports alike), no stage reaching into another's private
names, and ``edge_runtime`` at the bottom with no upward import."""
import ast
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def _module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, dict[str, list[int]]]:
    """module -> {imported module of the same package: [line numbers]}, every import counted
    (inside functions too: a lazy import still ties the two modules together)."""
    modules = {_module_name(package, f): f for f in sorted(package.rglob("*.py"))}
    graph = {}
    for name, file in modules.items():
        edges: dict[str, list[int]] = {}
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target != package.name:
                    edges.setdefault(target, []).append(node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _describe(graph, cycle) -> str:
    return " → ".join(f"{a} (line {graph[a][b][0]})" for a, b in zip(cycle, cycle[1:])) + f" → {cycle[-1]}"


def test_no_import_cycle_among_pipeline_modules():
    graph = import_graph(PROJECT / "pipeline")
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {_describe(graph, cycle)}"


def test_a_planted_cycle_is_found_and_named(tmp_path):
    package = tmp_path / "house"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "schema.py").write_text("from house.errors import Error\n")
    (package / "errors.py").write_text("")
    (package / "stage.py").write_text("from house.schema import Section\n")
    (package / "checks.py").write_text("def check():\n    from house.stage import ALLOWED\n")
    graph = import_graph(package)
    assert find_cycle(graph) is None
    # the config reaching up into a stage for its allowed values, inside a function:
    (package / "schema.py").write_text("from house.errors import Error\n\n\ndef validate():\n"
                                       "    from house.stage import ALLOWED\n")
    graph = import_graph(package)
    cycle = find_cycle(graph)
    assert cycle == ["house.stage", "house.schema", "house.stage"]
    assert _describe(graph, cycle) == "house.stage (line 1) → house.schema (line 5) → house.stage"


def test_no_module_imports_another_modules_private_names():
    """A stage's private names are its own; the modules of one package (``pipeline.search``)
    are one stage and share theirs."""
    found = []
    for file in sorted((PROJECT / "pipeline").rglob("*.py")):
        package = _module_name(PROJECT / "pipeline", file).rpartition(".")[0]
        if file.name == "__init__.py":
            package = _module_name(PROJECT / "pipeline", file)
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                if package != "pipeline" and node.module.startswith(package + "."):
                    continue
                found += [f"{file.relative_to(PROJECT)}:{node.lineno} {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names imported across modules: " + "; ".join(found)


def test_edge_runtime_imports_nothing_above_it():
    upward = []
    for file in sorted((PROJECT / "edge_runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            upward += [f"{file.relative_to(PROJECT)}:{node.lineno} {n}" for n in names
                       if n.split(".")[0] in ("pipeline", "models", "tensorflow", "keras")]
    assert not upward, "edge_runtime imports upward: " + "; ".join(upward)

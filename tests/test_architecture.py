"""The shape of the house, read from the source: the layer rule between ``pipeline``'s packages
(docs/architecture.md), no import cycle among its modules (module-level and function-level
imports alike), no package reaching into another's private names, and ``edge_runtime`` at the
bottom with no upward import."""
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


# The layer rule: what each package of ``pipeline`` may import besides itself. Foundations at
# the bottom; formats and data above them, then the config; the stages, which never import each
# other; only the search and the orchestrator (``running``) compose stages; the CLI on top.
FOUNDATIONS = {"core", "compat"}
BUILDING_BLOCKS = FOUNDATIONS | {"formats", "data", "config"}
STAGES = {"training", "optimizing", "checking", "device"}
LAYERS: dict[str, set[str]] = {
    "core": {"compat"},
    "compat": {"core"},
    "formats": FOUNDATIONS,
    "data": FOUNDATIONS | {"formats"},
    "config": FOUNDATIONS | {"formats", "data"},
    **{stage: BUILDING_BLOCKS for stage in STAGES},
    "search": BUILDING_BLOCKS | STAGES,
    "running": BUILDING_BLOCKS | STAGES | {"search"},
    "cli": BUILDING_BLOCKS | STAGES | {"search", "running"},
}
MAX_TOP_LEVEL_MODULES = 10


def _package(module: str) -> str | None:
    """``pipeline.optimizing.quantize`` → ``optimizing``; a top-level module has none."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def layer_violations(graph: dict[str, dict[str, list[int]]], layers: dict[str, set[str]]) -> list[str]:
    """Every import from one package into another that ``layers`` does not allow, as
    ``module:line -> imported`` (a package missing from ``layers`` may import nothing)."""
    found = []
    for module, edges in sorted(graph.items()):
        source = _package(module)
        if source is None:
            continue
        for target, lines in sorted(edges.items()):
            imported = _package(target)
            if imported is not None and imported != source and imported not in layers.get(source, set()):
                found.append(f"{module}:{lines[0]} -> {target} ({source} may not import {imported})")
    return found


def test_packages_import_only_the_layers_below_them():
    graph = import_graph(PROJECT / "pipeline")
    packages = sorted(p.name for p in (PROJECT / "pipeline").iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(LAYERS), "a package with no place in the layer rule (LAYERS)"
    found = layer_violations(graph, LAYERS)
    assert not found, "layer rule broken: " + "; ".join(found)


def test_a_planted_layer_violation_is_found_and_named(tmp_path):
    package = tmp_path / "pipeline"
    for folder in ("", "core", "optimizing", "checking", "running"):
        (package / folder).mkdir(exist_ok=True)
        (package / folder / "__init__.py").write_text("")
    (package / "core" / "errors.py").write_text("")
    (package / "checking" / "verify.py").write_text("from pipeline.core.errors import Error\n")
    (package / "optimizing" / "quantize.py").write_text("from pipeline.core.errors import Error\n")
    (package / "running" / "orchestrator.py").write_text("from pipeline.optimizing.quantize import quantize\n"
                                                         "from pipeline.checking.verify import verify\n")
    assert layer_violations(import_graph(package), LAYERS) == []
    # a stage reaching into another for a helper, inside a function:
    (package / "optimizing" / "quantize.py").write_text(
        "from pipeline.core.errors import Error\n\n\ndef gates():\n    from pipeline.checking.verify import GATES\n")
    assert layer_violations(import_graph(package), LAYERS) == [
        "pipeline.optimizing.quantize:5 -> pipeline.checking.verify (optimizing may not import checking)"]
    # and a foundation reaching up:
    (package / "core" / "errors.py").write_text("import pipeline.running.orchestrator\n")
    assert "pipeline.core.errors:1 -> pipeline.running.orchestrator (core may not import running)" in \
        layer_violations(import_graph(package), LAYERS)


def test_the_top_level_holds_few_modules():
    top = sorted(p.name for p in (PROJECT / "pipeline").iterdir() if p.suffix == ".py")
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_every_package_says_what_it_owns():
    for init in sorted((PROJECT / "pipeline").glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and len(docstring.split()) >= 15, f"{init.relative_to(PROJECT)} has no docstring"


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


def test_no_module_imports_another_packages_private_names():
    """A package's private names are its own: the modules of one package (``pipeline.search``,
    ``pipeline.cli``) share theirs, nothing else imports them, and no ``__init__`` re-exports
    them."""
    found = []
    for file in sorted((PROJECT / "pipeline").rglob("*.py")):
        package = _module_name(PROJECT / "pipeline", file).rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                if file.name != "__init__.py" and package != "pipeline" and node.module.startswith(package + "."):
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


def test_the_tests_mirror_the_packages():
    """Every package of ``pipeline`` (and the device runtime and the zoo) has its folder of tests."""
    packages = [p.name for p in (PROJECT / "pipeline").iterdir() if (p / "__init__.py").is_file()]
    missing = [name for name in [*packages, "edge_runtime", "models"]
               if not list((PROJECT / "tests" / name).glob("test_*.py"))]
    assert missing == [], f"packages without tests/<package>/: {missing}"


def test_no_module_is_over_400_lines():
    long = [f"{p.relative_to(PROJECT)} ({n} lines)" for p in sorted((PROJECT / "pipeline").rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    assert long == [], "split by concern: " + ", ".join(long)

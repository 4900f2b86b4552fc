"""The project's module graph, read statically (ast): no import cycles among serve_app/, loadtest/ and benchmarks/,
and the serving package imports neither the load tester nor the benchmarks.

Every import statement counts, wherever it stands: at module level, inside a function (a lazy import still makes
the two modules depend on each other, and is the usual way a cycle gets hidden) and under `if TYPE_CHECKING:`.
Only project-internal edges are kept. `from pkg import name` points at the submodule `pkg.name` when that file
exists, else at `pkg`. A benchmark script's bare `import harness` / `from harness import ...` resolves to the
file beside it (benchmarks/ is sys.path[0] when a script runs). Dynamic imports (importlib) are not seen.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("serve_app", "loadtest")
SCRIPTS = "benchmarks"


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    for path in sorted((REPO / SCRIPTS).glob("*.py")):
        modules[f"{SCRIPTS}.{path.stem}"] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that `name` (a dotted import target) is, or lies inside."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that `module` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    is_script = module.startswith(f"{SCRIPTS}.")
    targets: set[str] = set()

    def add(name: str) -> None:
        if is_script and f"{SCRIPTS}.{name.split('.')[0]}" in modules:
            name = f"{SCRIPTS}.{name}"  # a sibling script or the harness, found through sys.path[0]
        resolved = _resolve(name, modules)
        if resolved is not None and resolved != module:
            targets.add(resolved)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                add(f"{source}.{alias.name}")  # the submodule when it is one; else _resolve falls back to source
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _module_files()
    return {module: _imports(module, path, modules) for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_graph_sees_the_imports_it_must_see():
    graph = import_graph()
    # Module level, function level, a package's submodule, a benchmark script's harness beside it.
    assert "serve_app.stats" in graph["loadtest.metrics"]
    assert "loadtest.prompt_sets" in graph["loadtest.workload"]  # imported inside build_jobs
    assert "serve_app.compress.metrics" in graph["serve_app.compress.report"]
    assert "benchmarks.harness" in graph["benchmarks.side_by_side"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(component) for component in found)


def test_serving_package_imports_neither_load_tester_nor_benchmarks():
    graph = import_graph()
    offending = {module: sorted(t for t in targets if not t.startswith("serve_app"))
                 for module, targets in graph.items() if module.startswith("serve_app")}
    assert not {m: t for m, t in offending.items() if t}


def test_benchmark_scripts_import_no_other_script():
    graph = import_graph()
    library = {f"{SCRIPTS}.harness", f"{SCRIPTS}.tables"}  # the shared libraries beside the scripts
    offending = {module: sorted(t for t in targets if t.startswith(f"{SCRIPTS}.") and t not in library)
                 for module, targets in graph.items() if module.startswith(f"{SCRIPTS}.")}
    assert not {m: t for m, t in offending.items() if t}


def test_the_statistics_module_is_pure():
    """serve_app.stats loads nothing beyond the standard library (and serve_app's own light __init__)."""
    code = ("import sys; before = set(sys.modules); import serve_app.stats; "
            "print(' '.join(sorted(m for m in set(sys.modules) - before if not m.startswith('_'))))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=REPO).stdout.split())
    project_or_heavy = {m for m in loaded if m.split(".")[0] in {"serve_app", "loadtest", "numpy", "torch", "vllm", "ray"}}
    assert project_or_heavy == {"serve_app", "serve_app.stats"}

"""The layers import downwards only: core ← read models ← workers and web ← composition root; no module
imports itself back through others (an import cycle), not even for type hints.

Pure: reads the source with `ast`, starts no service.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lower number = lower layer. A module may import its own layer and the ones below.
LAYERS = {"bank": 0, "projections": 1, "consumers": 2, "live": 2, "web": 2, "ops": 2, "server": 3}
# Never imported by the app: only tests, benchmarks and scripts use them.
APART = {"devservices", "bench", "tests"}


def imports_of(path: Path) -> list[str]:
    """Every module `path` imports, anywhere in it (functions and `if TYPE_CHECKING:` blocks too);
    `from package import name` also names `package.name`, which may be a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def app_modules() -> list[tuple[str, Path]]:
    return [(package, path) for package in LAYERS for path in sorted((ROOT / package).rglob("*.py"))]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the app modules it imports (a package's `__init__` stands for the package)."""
    modules = {module_name(path): path for _, path in app_modules()}
    return {name: {i for i in imports_of(path) if i in modules and i != name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the modules along it (strongly connected components, Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in sorted(graph[node]):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_it_finds_an_import_cycle_where_there_is_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_it_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_it_has_no_import_running_up_a_layer() -> None:
    upward = []
    for package, path in app_modules():
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in LAYERS and LAYERS[top] > LAYERS[package]:
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert upward == []


def test_it_never_imports_dev_services_benchmarks_or_tests_from_the_app() -> None:
    found = [
        f"{path.relative_to(ROOT)} imports {name}"
        for _, path in app_modules()
        for name in imports_of(path)
        if name.split(".")[0] in APART
    ]
    assert found == []


def modules_of(*packages: str) -> list[Path]:
    return [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]


def imports_from(paths: list[Path], apart: set[str]) -> list[str]:
    """Each import, in `paths`, of a module from one of the `apart` packages."""
    return [f"{path} imports {name}" for path in paths for name in imports_of(path) if name.split(".")[0] in apart]


def test_it_never_imports_benchmarks_from_the_tests() -> None:
    """What tests and benchmarks share lives below both (devservices/), so that a test never depends on a benchmark."""
    assert imports_from(modules_of("tests"), {"bench"}) == []


def test_it_never_imports_benchmarks_or_tests_from_the_dev_services() -> None:
    assert imports_from(modules_of("devservices"), {"bench", "tests"}) == []


def test_it_finds_a_test_importing_a_benchmark(tmp_path: Path) -> None:
    module = tmp_path / "test_x.py"
    module.write_text("def f():\n    from bench.harness import wait_until\n")
    assert imports_from([module], {"bench"}) != []


def test_it_keeps_the_domain_free_of_django_and_kafka() -> None:
    names = {name.split(".")[0] for name in imports_of(ROOT / "bank" / "domain.py")}
    assert not names & {"django", "confluent_kafka", "channels", "psycopg"}

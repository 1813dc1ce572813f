"""The layers import downwards only: core ← read models ← workers and web ← composition root.

Pure: reads the source with `ast`, starts no service.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lower number = lower layer. A module may import its own layer and the ones below.
LAYERS = {"bank": 0, "projections": 1, "consumers": 2, "web": 2, "ops": 2, "server": 3}
# Never imported by the app: only tests, benchmarks and scripts use them.
APART = {"devservices", "bench", "tests"}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def app_modules() -> list[tuple[str, Path]]:
    return [(package, path) for package in LAYERS for path in sorted((ROOT / package).rglob("*.py"))]


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


def test_it_keeps_the_domain_free_of_django_and_kafka() -> None:
    names = {name.split(".")[0] for name in imports_of(ROOT / "bank" / "domain.py")}
    assert not names & {"django", "confluent_kafka", "channels", "psycopg"}

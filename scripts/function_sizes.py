"""The longest functions and the widest signatures in the given packages or files (default: consumers, web, live).

    python scripts/function_sizes.py [package-or-file ...] [--top N]

Lines count from `def` to the function's last line (decorators and docstring included); width counts
every parameter (self and cls too, *args and **kwargs as one each). Reads the source with `ast` only.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def functions(paths: list[Path]) -> list[tuple[str, int, int]]:
    """(where, lines, parameters) of every function and method in `paths`."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                width = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                found.append((f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", lines, width))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("packages", nargs="*", default=["consumers", "web", "live"])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    roots = [ROOT / package for package in args.packages]
    paths = [p for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*.py"))) if "migrations" not in p.parts]
    found = functions(paths)
    print("longest functions (lines)")
    for where, lines, _ in sorted(found, key=lambda f: -f[1])[: args.top]:
        print(f"  {lines:4d}  {where}")
    print("widest signatures (parameters)")
    for where, _, width in sorted(found, key=lambda f: -f[2])[: args.top]:
        print(f"  {width:4d}  {where}")


if __name__ == "__main__":
    main()

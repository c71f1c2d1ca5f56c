"""Code shape of a package: functions over a line limit and module sizes, as JSON or text.

Usage::

    python benchmarks/code_shape.py                 # functions over 80 lines in hpcml/, then module sizes
    python benchmarks/code_shape.py --limit 60 hpcml/sgd
    python benchmarks/code_shape.py --json          # one JSON object (for before/after comparisons)

A function's length is ``end_lineno - lineno + 1`` of its ``def`` node (decorators
excluded, docstring included), the measure the project's "under 80 lines" rule uses.
Nested functions are listed on their own and also count inside their parent.
No imports of the package: the files are parsed, never run.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def long_functions(paths: list[Path], limit: int) -> list[dict[str, object]]:
    """Every function or method longer than ``limit`` lines, longest first."""
    found = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                name = prefix
                if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        lines = child.end_lineno - child.lineno + 1
                        if lines > limit:
                            where = f"{path.relative_to(ROOT)}:{child.lineno}"
                            found.append({"function": name, "where": where, "lines": lines})
                    name += "."
                stack.append((child, name))
    return sorted(found, key=lambda f: (-int(f["lines"]), str(f["where"])))


def module_sizes(paths: list[Path]) -> dict[str, int]:
    """Lines per module."""
    return {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in paths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", nargs="*", default=["hpcml"], help="folders or files (default: hpcml)")
    parser.add_argument("--limit", type=int, default=80, help="longest allowed function (default 80)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    paths: list[Path] = []
    for item in args.where:
        p = (ROOT / item).resolve() if not Path(item).is_absolute() else Path(item)
        paths.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    longs = long_functions(paths, args.limit)
    sizes = module_sizes(paths)
    if args.json:
        print(json.dumps({"limit": args.limit, "long_functions": longs, "module_lines": sizes}, indent=1))
        return 0
    print(f"{len(longs)} functions over {args.limit} lines")
    for f in longs:
        print(f"  {f['lines']:4d}  {f['function']}  ({f['where']})")
    print(f"{len(sizes)} modules, {sum(sizes.values())} lines; largest:")
    for name, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {n:5d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

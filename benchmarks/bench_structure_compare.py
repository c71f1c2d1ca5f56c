"""The structure change (issue #12) must not make dispatch or search slower: two trees, one run.

    python benchmarks/bench_structure_compare.py --old /tmp/old [--repeats 2] [--json F.json] [--plot F.png]

``--old`` is a checkout of the commit before the change (``git worktree add /tmp/old 9830714``);
the new tree is the one holding this script.  Each repetition runs, for both trees in turn (the
order alternates between repetitions), that tree's own ``bench_dispatch.py`` (contenders
``hpcml`` and ``static_ideal``) and ``bench_search.py`` (``--searches``, default ``grid`` and ``mixed``,
``hpcml`` and ``sklearn_j2``), each with ``--repeats 1``, from a neutral working directory with
the tree first on ``PYTHONPATH`` (each script also puts its own tree there), so every measurement
imports the hpcml of its tree.  Quoted: per repetition, new / old of hpcml's empty-unit rate,
busy efficiency against the static ideal, and search walls (and their ratio to sklearn_j2 measured
in the same script run, which cancels most of the machine's load).  The machine may be shared:
``os.getloadavg()`` is recorded before and after every step.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

NEW = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_bench(tree: str, script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``tree/benchmarks/script ARGS --json TMP`` with that tree's hpcml; its JSON document."""
    with tempfile.TemporaryDirectory(prefix="hpcml-structure-") as tmp:
        out = os.path.join(tmp, "result.json")
        env = dict(os.environ, PYTHONPATH=tree)
        cmd = [sys.executable, os.path.join(tree, "benchmarks", script), *args, "--json", out]
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-3000:]}")
        with open(out, encoding="utf-8") as fh:
            return json.load(fh)


def _measure(tree: str, searches: str, timeout: float) -> dict[str, Any]:
    """One repetition of both benchmarks for one tree: the numbers compared."""
    load_before = C.loadavg()
    dispatch = _run_bench(tree, "bench_dispatch.py", ["--contenders", "hpcml,static_ideal", "--repeats", "1"], timeout)
    search = {"searches": {}}
    if searches:
        search = _run_bench(tree, "bench_search.py", ["--searches", searches, "--repeats", "1", "--no-serial"], timeout)
    hp = dispatch["results"]["hpcml"]
    row: dict[str, Any] = {
        "tree": tree,
        "loadavg": [load_before, C.loadavg()],
        "empty_units_per_s": hp["empty_units_per_s"]["median"],
        "busy_efficiency_vs_static": hp["busy_efficiency_vs_static"]["median"],
    }
    for name, found in search["searches"].items():
        res = found["results"]["hpcml"]
        row[f"{name}_search_wall"] = res["search_wall"]["median"]
        row[f"{name}_process_wall"] = res["process_wall"]["median"]
        row[f"{name}_search_over_sklearn_j2"] = found["ratios"]["search_hpcml_over_sklearn_j2"]["median"]
        row[f"{name}_scores_agree"] = found["scores_agree"]
    return row


def _plot(doc: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in doc["ratios_new_over_old"] if not k.endswith("scores_agree")]
    medians = [doc["ratios_new_over_old"][k]["median"] for k in keys]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.barh(keys, medians, color="#4477aa")
    ax.axvline(1.0, color="black", lw=0.8)
    for y, value in enumerate(medians):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
    ax.set_xlabel("new / old (median over repetitions); rates: higher is better, walls: lower is better")
    C.save_figure(fig, doc, "structure change: branch head vs 9830714, interleaved", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="checkout of the commit before the change")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--searches", default="grid,mixed", help="bench_search.py's searches (default grid,mixed; empty: dispatch only)"
    )
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    args = p.parse_args()
    old = os.path.abspath(args.old)
    doc: dict[str, Any] = {
        "benchmark": "structure_compare",
        "environment": C.environment(),
        "params": {
            "old": old,
            "new": NEW,
            "repeats": args.repeats,
            "searches": args.searches,
            "started": time.strftime("%H:%M:%S"),
        },
        "runs": [],
    }
    for rep in range(args.repeats):
        order = [("old", old), ("new", NEW)] if rep % 2 == 0 else [("new", NEW), ("old", old)]
        pair = {label: _measure(tree, args.searches, args.timeout) for label, tree in order}
        doc["runs"].append(pair)
        _summarise(doc)
        C.finish(doc, args, _plot)  # after every repetition: a stopped run keeps what it measured


def _summarise(doc: dict[str, Any]) -> None:
    """new / old per repetition, and the medians of each tree."""
    ratios: dict[str, list[float]] = {}
    for pair in doc["runs"]:
        for key, value in pair["new"].items():
            if isinstance(value, float) and pair["old"][key]:
                ratios.setdefault(key, []).append(value / pair["old"][key])
    doc["ratios_new_over_old"] = {k: C.summary(v) for k, v in ratios.items()}
    doc["medians"] = {
        label: {k: statistics.median(run[label][k] for run in doc["runs"]) for k in ratios} for label in ("old", "new")
    }


if __name__ == "__main__":
    main()

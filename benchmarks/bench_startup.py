"""Start-up of ``python -m hpcml.cv`` at 2, 8 and 64 ranks: per-phase times and files touched per rank.

    python benchmarks/bench_startup.py [--ranks 2,8,64] [--no-strace] [--label after]
                                       [--plot FILE.png] [--json FILE.json]

For every rank count N, a tiny search (200 rows of digits, SVC with 2 candidates,
2 folds: start-up dominates) runs twice:

* ``mpiexec -n N python -m hpcml.cv CONFIG`` with ``HPCML_STARTUP_FILES=1``:
  run.json's ``startup`` (per rank: interpreter, mpi_init, layout, imports,
  config, data, plan; ``sys.modules`` counts; the audited ``open``/``listdir``/
  ``import`` events of each rank) -> median and max over ranks;
* the same under ``strace -f -c -e trace=%file`` (every file-system system call
  of mpiexec, its proxies and every rank: openat, newfstatat, statx, access,
  readlink, ...) -> calls per rank (total / N) and failed calls per rank (the
  misses of ``sys.path`` searches).  Times of this run are not used (ptrace);
  only for N <= ``--strace-max`` (default 8: tracing 64 ranks on 2 cores takes
  longer than 13 minutes, and the calls per rank do not depend on N).

``--label`` names the code state (``before``/``after``) in the JSON, so two
runs can be compared; the machine is shared, so ``os.getloadavg()`` is recorded.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

CONFIG = """\
[data]
path = "digits.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [1, 10] }

[cv]
splitter = "KFold"
n_splits = 2
"""
PHASES = ("interpreter", "mpi_init", "layout", "imports", "config", "data", "plan", "total")


def _setup(folder: str) -> str:
    from sklearn.datasets import load_digits

    from hpcml.data import write_dataset

    X, y = load_digits(return_X_y=True)
    write_dataset(os.path.join(folder, "digits.h5"), X[:200], y[:200])
    path = os.path.join(folder, "search.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(CONFIG)
    return path


def _launch(n: int, cfg: str, out: str, timeout: float, strace: str | None = None) -> float:
    cmd = [C.mpiexec(), "-n", str(n), sys.executable, "-m", "hpcml.cv", cfg, "--out", out, "--quiet", "--overwrite"]
    if strace:
        cmd = ["strace", "-f", "-c", "-e", "trace=%file", "-o", strace, *cmd]
    env = {**os.environ, "HPCML_STARTUP_FILES": "1", "MPIR_CVAR_POLLS_BEFORE_YIELD": "1"}
    wall, _, _ = C.run(cmd, env=env, timeout=timeout)
    return wall


def _strace_counts(path: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] not in ("total", "syscall"):
                errors = int(parts[4]) if len(parts) == 6 else 0
                counts[parts[-1]] = {"calls": int(parts[3]), "errors": errors}
    return counts


def measure(n: int, cfg: str, tmp: str, strace: bool, timeout: float, strace_max: int = 8) -> dict:
    out = os.path.join(tmp, f"out{n}")
    load0 = os.getloadavg()
    wall = _launch(n, cfg, out, timeout)
    with open(os.path.join(out, "run.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    st = report["startup"]
    per_rank = st["per_rank"]
    files = [r.get("files", {}) for r in per_rank]
    row = {
        "ranks": n,
        "process_wall": wall,
        "loadavg_before": load0,
        "median": {p: st["median"].get(p) for p in PHASES},
        "max": {p: st["max"].get(p) for p in PHASES},
        "modules_after_plan": sorted({r["modules"]["plan"] for r in per_rank}),
        "audited_per_rank": {k: sorted({f.get(k) for f in files}) for k in ("open", "listdir", "import")},
        "command": f"HPCML_STARTUP_FILES=1 mpiexec -n {n} python -m hpcml.cv search.toml --quiet",
    }
    if strace and shutil.which("strace") and n <= strace_max:
        trace = os.path.join(tmp, f"strace{n}.txt")
        _launch(n, cfg, out, timeout * 3, strace=trace)
        counts = _strace_counts(trace)
        calls = sum(c["calls"] for c in counts.values())
        errors = sum(c["errors"] for c in counts.values())
        row["strace"] = {
            "per_rank_calls": calls / n,
            "per_rank_failed": errors / n,
            "per_rank_by_call": {k: round(v["calls"] / n, 1) for k, v in sorted(counts.items())},
            "command": f"strace -f -c -e trace=%file mpiexec -n {n} python -m hpcml.cv search.toml --quiet",
        }
    return row


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bottom = [0.0] * len(rows)
    labels = [str(r["ranks"]) for r in rows]
    for phase in PHASES[:-1]:
        vals = [r["median"].get(phase) or 0.0 for r in rows]
        axes[0].bar(labels, vals, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, vals)]
    axes[0].set(xlabel="ranks", ylabel="seconds (median rank)", title=f"start-up by phase ({doc['label']})")
    axes[0].legend(fontsize=8)
    calls = [r.get("strace", {}).get("per_rank_calls", 0) for r in rows]
    failed = [r.get("strace", {}).get("per_rank_failed", 0) for r in rows]
    axes[1].bar(labels, calls, label="file-system calls")
    axes[1].bar(labels, failed, label="of which failed (path misses)")
    axes[1].set(xlabel="ranks", ylabel="calls per rank (strace -f -c)", title="metadata load per rank")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="2,8,64")
    p.add_argument("--no-strace", action="store_true")
    p.add_argument("--strace-max", type=int, default=8, help="strace only runs of at most this many ranks")
    p.add_argument("--label", default="current")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    args = p.parse_args()
    doc = {"benchmark": "startup", "label": args.label, "environment": C.environment(), "results": []}
    with tempfile.TemporaryDirectory(prefix="hpcml-startup-") as tmp:
        cfg = _setup(tmp)
        for n in (int(x) for x in args.ranks.split(",")):
            doc["results"].append(measure(n, cfg, tmp, not args.no_strace, args.timeout, args.strace_max))
            print(json.dumps(doc["results"][-1]), file=sys.stderr, flush=True)
    C.finish(doc, args, plot)


if __name__ == "__main__":
    main()

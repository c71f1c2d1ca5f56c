"""Peak memory (total PSS of all ranks) of a search over a large dense set.

    python benchmarks/bench_memory.py --gb 2 [--ranks 2 4] [--plot memory.png] [--json memory.json]

Runs ``mpiexec -n N python -m hpcml.cv search.toml --out DIR --quiet`` in three
layouts, and scikit-learn's ``GridSearchCV`` with ``n_jobs=1`` and ``n_jobs=2``
on the same data, with a cheap estimator (``DummyClassifier``, 4 candidates x
3-fold ``KFold``):

* ``default``: what a user gets -- X in the node-shared window, fold copies
  chosen by ``fold_copies = "auto"`` (reported: ``node`` or ``rank``);
* ``node-folds``: X shared, one node-shared fold (``HPCML_FOLD_COPIES=node``);
* ``rank-folds``: X shared, a fold copy per rank (``HPCML_FOLD_COPIES=rank``);
* ``per-rank``: X read by every rank (``HPCML_SHARED_MEMORY=0``), fold per rank.

A monitor samples ``psutil.Process.memory_full_info().pss`` of the launcher and
all its descendants every 50 ms and keeps the peak of the sum.  Prints JSON
(GB, seconds) with the ratios of the issue's goal: hpcml at 2 ranks over
scikit-learn ``n_jobs=1``, and the growth per added rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

LAYOUTS = {
    "default": {},
    "node-folds": {"HPCML_FOLD_COPIES": "node"},
    "rank-folds": {"HPCML_FOLD_COPIES": "rank"},
    "per-rank": {"HPCML_SHARED_MEMORY": "0", "HPCML_FOLD_COPIES": "rank"},
}

CONFIG = """\
[data]
path = "{path}"
X = "X"
y = "y"

[[model]]
name = "dummy"
estimator = "sklearn.dummy.DummyClassifier"
grid = {{ strategy = ["prior", "most_frequent", "stratified", "uniform"] }}

[cv]
splitter = "KFold"
n_splits = 3

[scoring]
metrics = ["accuracy"]
"""

SKLEARN = """\
import sys, h5py, numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV, KFold
with h5py.File(sys.argv[1], "r") as fh:
    X = fh["X"][...]
    y = fh["y"][...]
grid = {"strategy": ["prior", "most_frequent", "stratified", "uniform"]}
GridSearchCV(DummyClassifier(), grid, cv=KFold(3), n_jobs=int(sys.argv[2])).fit(X, y)
"""


def tree_pss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(ps))
        time.sleep(0.05)
        if time.perf_counter() - t > timeout:
            os.killpg(proc.pid, 9)
            raise TimeoutError(" ".join(cmd))
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()[-500:]}")
    return {"peak_pss_gb": peak / 1e9, "seconds": time.perf_counter() - t}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=2.0, help="size of X in GB (float64)")
    p.add_argument("--n-features", type=int, default=100)
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated subset of " + ", ".join(LAYOUTS))
    p.add_argument("--sklearn-jobs", type=int, nargs="*", default=[1, 2])
    p.add_argument("--dir", default=None)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--json", default=None, metavar="FILE.json")
    args = p.parse_args()

    doc: dict = {"benchmark": "memory", "environment": C.environment(), "params": vars(args).copy()}
    mpiexec = C.mpiexec()
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1")
    for key in ("HPCML_FOLD_COPIES", "HPCML_SHARED_MEMORY"):
        env.pop(key, None)
    tmp = tempfile.mkdtemp(dir=args.dir)
    data = os.path.join(tmp, "data.h5")
    n = int(args.gb * 1e9 / (8 * args.n_features))
    synth = ["-m", "hpcml.data", "synth", data, "--n-samples", str(n), "--n-features", str(args.n_features)]
    subprocess.run([mpiexec, "-n", "2", sys.executable, *synth, "--kind", "classification"], env=env, check=True)
    config = os.path.join(tmp, "search.toml")
    with open(config, "w") as fh:
        fh.write(CONFIG.format(path=data))
    results: dict[str, dict] = {}
    for ranks in args.ranks:
        for layout in args.layouts.split(","):
            out = os.path.join(tmp, f"out-{ranks}-{layout}")
            label = f"hpcml -n {ranks} {layout}"
            cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "hpcml.cv", config, "--out", out, "--quiet"]
            results[label] = measure(cmd, dict(env, **LAYOUTS[layout]), args.timeout)
            with open(os.path.join(out, "run.json")) as fh:
                report = json.load(fh)
            results[label]["data"] = report["data"]["method"]
            results[label]["folds"] = report["folds"]["copies"]
            results[label]["schedule_seconds"] = report["schedule_seconds"]
            print(label, results[label], file=sys.stderr)
            shutil.rmtree(out)
    script = os.path.join(tmp, "sk.py")
    with open(script, "w") as fh:
        fh.write(SKLEARN)
    for jobs in args.sklearn_jobs:
        label = f"sklearn n_jobs={jobs}"
        results[label] = measure([sys.executable, script, data, str(jobs)], env, args.timeout)
        print(label, results[label], file=sys.stderr)
    shutil.rmtree(tmp)

    x_gb = n * args.n_features * 8 / 1e9
    peak = {label: r["peak_pss_gb"] for label, r in results.items()}
    ratios: dict[str, float] = {}
    base = peak.get("sklearn n_jobs=1")
    for label, value in peak.items():
        ratios[f"{label} / data"] = value / x_gb
        if base and label.startswith("hpcml"):
            ratios[f"{label} / sklearn n_jobs=1"] = value / base
    lo, hi = min(args.ranks), max(args.ranks)
    for layout in args.layouts.split(","):
        a, b = peak.get(f"hpcml -n {lo} {layout}"), peak.get(f"hpcml -n {hi} {layout}")
        if a is not None and b is not None and hi > lo:
            ratios[f"{layout}: GB per added rank ({lo}->{hi})"] = (b - a) / (hi - lo)
    doc.update({"x_gb": x_gb, "rows": n, "features": args.n_features, "results": results, "ratios": ratios})
    default2 = peak.get("hpcml -n 2 default")
    doc["goals"] = {
        "hpcml_2_ranks_le_1.1x_sklearn_j1": (default2 / base <= 1.1) if default2 and base else None,
    }

    def plot(doc: dict, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        labels = list(doc["results"])
        ax.barh(labels, [doc["results"][k]["peak_pss_gb"] for k in labels], color="tab:blue")
        ax.axvline(doc["x_gb"], color="k", ls=":", label="size of X")
        if base:
            ax.axvline(1.1 * base, color="tab:red", ls="--", label="goal: 1.1 x sklearn n_jobs=1")
        ax.invert_yaxis()
        ax.set_xlabel("peak total PSS of all processes (GB)")
        ax.legend(loc="lower right")
        C.save_figure(fig, doc, f"Memory: {doc['x_gb']:.2f} GB dense X, DummyClassifier grid", path)

    C.finish(doc, args, plot)


if __name__ == "__main__":
    main()

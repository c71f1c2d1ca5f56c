"""Peak memory (total PSS of all ranks) of a search over a large dense set.

    python benchmarks/bench_memory.py --gb 2 [--ranks 2 4] [--plot memory.png]

Runs ``mpiexec -n N python -m hpcml.cv search.toml --out DIR --quiet`` with the
node-shared window (default) and with per-rank reads (``HPCML_SHARED_MEMORY=0``),
and scikit-learn's ``GridSearchCV`` with ``n_jobs=1`` and ``n_jobs=2`` on the same
data, with a cheap estimator (``DummyClassifier``).  A monitor samples
``psutil.Process.memory_full_info().pss`` of the launcher and all its
descendants every 50 ms and keeps the peak of the sum.  Prints JSON (GB).
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
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gb", type=float, default=2.0, help="size of X in GB (float64)")
    p.add_argument("--n-features", type=int, default=100)
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    p.add_argument("--sklearn-jobs", type=int, nargs="*", default=[1, 2])
    p.add_argument("--dir", default=None)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--plot", default=None)
    args = p.parse_args()

    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1")
    tmp = tempfile.mkdtemp(dir=args.dir)
    data = os.path.join(tmp, "data.h5")
    n = int(args.gb * 1e9 / (8 * args.n_features))
    subprocess.run(
        [
            mpiexec,
            "-n",
            "2",
            sys.executable,
            "-m",
            "hpcml.data",
            "synth",
            data,
            "--n-samples",
            str(n),
            "--n-features",
            str(args.n_features),
            "--kind",
            "classification",
        ],
        env=env,
        check=True,
    )
    config = os.path.join(tmp, "search.toml")
    with open(config, "w") as fh:
        fh.write(CONFIG.format(path=data))
    results: dict[str, dict[str, float]] = {}
    for ranks in args.ranks:
        for shared in ("1", "0"):
            out = os.path.join(tmp, f"out-{ranks}-{shared}")
            label = f"hpcml.cv -n {ranks} {'shared-window' if shared == '1' else 'per-rank'}"
            results[label] = measure(
                [mpiexec, "-n", str(ranks), sys.executable, "-m", "hpcml.cv", config, "--out", out, "--quiet"],
                dict(env, HPCML_SHARED_MEMORY=shared),
                args.timeout,
            )
            print(label, results[label], file=sys.stderr)
    script = os.path.join(tmp, "sk.py")
    with open(script, "w") as fh:
        fh.write(SKLEARN)
    for jobs in args.sklearn_jobs:
        label = f"sklearn GridSearchCV n_jobs={jobs}"
        results[label] = measure([sys.executable, script, data, str(jobs)], env, args.timeout)
        print(label, results[label], file=sys.stderr)
    shutil.rmtree(tmp)
    print(
        json.dumps(
            {"x_gb": n * args.n_features * 8 / 1e9, "rows": n, "features": args.n_features, "results": results},
            indent=2,
        )
    )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh(list(results), [r["peak_pss_gb"] for r in results.values()])
        ax.set_xlabel("peak total PSS (GB)")
        fig.tight_layout()
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()

"""Thread limits: the same 2-rank MPI grid with hpcml's per-rank thread limits vs without.

    python benchmarks/bench_pinning.py [--grid demo|demo+hgb] [--repeats 2] [--plot FILE.png] [--json FILE.json]

The grid is hpcml's demo (digits; SVC 12 candidates + StandardScaler/LogisticRegression
4 candidates; 5 folds; accuracy + f1_macro; 80 units); ``--grid demo+hgb`` adds
HistGradientBoostingClassifier (OpenMP) candidates.  Contenders, all ``mpiexec -n 2``:

* ``hpcml``: ``python -m hpcml.cv CONFIG --quiet`` with its default layout
  (threads = CPUs / ranks = 1, pinned to disjoint cores); run.json
  ``layout[*].pools[*].num_threads`` is checked on every rank;
* ``hpcml_t<cores>``: the same with ``--threads-per-rank <cores>`` (ranks x threads >
  cores: hpcml neither pins nor limits below the requested count) -- the nearest
  thing to "hpcml without limits" the CLI offers;
* ``plain_unlimited``: a plain mpi4py + scikit-learn script (``--worker plain``):
  the same config parsed with ``hpcml.cv.config.load_config`` (estimators, grid,
  splitter, metrics), units split statically (round-robin), results gathered with
  a blocking ``comm.gather`` (MPICH busy-polls in it), ``OMP_NUM_THREADS`` =
  ``OPENBLAS_NUM_THREADS`` = cores, no threadpoolctl, no affinity -- what a
  user without hpcml's limits gets;
* ``plain_limited``: the same script with every thread variable = 1 and
  ``threadpool_limits(1)`` (isolates the effect of the limits from static vs
  dynamic scheduling).

Walls are the whole ``mpiexec`` process wall (start-up included) and the search
wall (hpcml: run.json ``schedule_seconds``; plain: first unit -> gather done).
A run that exceeds ``--timeout`` is killed and reported as ``>= timeout``.
Prints one JSON document.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SCRIPT = os.path.abspath(__file__)

HGB = """
[[model]]
name = "hgb"
estimator = "sklearn.ensemble.HistGradientBoostingClassifier"
params = { max_iter = 50, random_state = 0, early_stopping = false }
grid = { learning_rate = [0.05, 0.1, 0.2] }
"""


def write_config(work: str, grid: str) -> str:
    from hpcml.cv.demo import DEMO_CONFIG

    data = C.write_digits(work)
    text = DEMO_CONFIG.replace('path = "digits.h5"', f'path = "{data}"')
    if grid == "demo+hgb":
        text = text.replace("[cv]", HGB.lstrip() + "\n[cv]")
    path = os.path.join(work, f"{grid}.toml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


# --------------------------------------------------------------------------- plain mpi4py + sklearn worker
def worker_plain(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    import h5py
    import numpy as np
    from mpi4py import MPI
    from sklearn.base import clone
    from sklearn.metrics import get_scorer
    from threadpoolctl import threadpool_info, threadpool_limits

    from hpcml.cv.config import load_config

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.limited:
        threadpool_limits(1)
    with open(args.config, "rb") as fh:
        config = load_config(fh.read(), args.config)
    with h5py.File(config.data.path, "r") as fh:
        X, y = fh["X"][...], fh["y"][...]
    cands = [(m.estimator, p) for m in config.models for p in m.candidates()]
    splits = list(config.cv.split(X, y))
    metrics = config.scoring if isinstance(config.scoring, list | tuple) else [config.scoring]
    scorers = {name: get_scorer(name) for name in metrics}
    units = [(c, s) for c in range(len(cands)) for s in range(len(splits))]
    comm.Barrier()
    t0 = time.perf_counter()
    mine = []
    busy = 0.0
    for c, s in units[rank::size]:
        u0 = time.perf_counter()
        est, params = cands[c]
        train, test = splits[s]
        model = clone(est).set_params(**params).fit(X[train], y[train])
        scores = {name: float(sc(model, X[test], y[test])) for name, sc in scorers.items()}
        busy += time.perf_counter() - u0
        mine.append((c, s, scores))
    every = comm.gather(
        (mine, busy, [{k: p.get(k) for k in ("internal_api", "num_threads")} for p in threadpool_info()]), root=0
    )
    wall = time.perf_counter() - t0
    if rank == 0:
        results = sorted(r for part in every for r in part[0])
        first = metrics[0]
        mean = [float(np.mean([sc[first] for c, s, sc in results if c == cand])) for cand in range(len(cands))]
        print(
            json.dumps(
                {
                    "search_wall": wall,
                    "startup": t0 - t_start,
                    "busy_seconds": [e[1] for e in every],
                    "pools": [e[2] for e in every],
                    "units": len(results),
                    "mean_test_first": mean,
                }
            ),
            flush=True,
        )


# --------------------------------------------------------------------------- driver
def run_cmd(cmd: list[str], env: dict, timeout: float) -> tuple[float | None, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # our own process group (mpiexec and its ranks)
        proc.communicate()
        return None, ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{err[-3000:]}")
    return time.perf_counter() - t0, out


def run_contender(args: argparse.Namespace, name: str, config: str, work: str, cores: int) -> dict:
    mpi = [C.mpiexec(), "-n", "2", C.PYTHON]
    if name.startswith("hpcml"):
        out = os.path.join(work, f"out-{name}")
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--threads-per-rank", str(cores)] if name != "hpcml" else []
        cmd = mpi + ["-m", "hpcml.cv", config, "--out", out, "--quiet"] + extra
        env = C.child_env(drop=tuple(C.pin_blas_env()))
        wall, _ = run_cmd(cmd, env, args.timeout)
        row = {
            "contender": name,
            "command": " ".join(["mpiexec -n 2 python -m hpcml.cv CONFIG.toml --out DIR --quiet"] + extra),
            "process_wall": wall,
            "timed_out": wall is None,
        }
        if wall is not None:
            with open(os.path.join(out, "run.json"), encoding="utf-8") as fh:
                info = json.load(fh)
            with open(os.path.join(out, "cv_results.json"), encoding="utf-8") as fh:
                res = json.load(fh)
            row.update(
                {
                    "search_wall": info["schedule_seconds"],
                    "run_wall_seconds": info["wall_seconds"],
                    "busy_seconds": info["busy_seconds"],
                    "load_balance": info["load_balance"],
                    "layout": [
                        {
                            "rank": lay["rank"],
                            "threads": lay["threads"],
                            "pinned": lay["pinned"],
                            "cpus": lay["cpus"],
                            "env_applied": lay["env_applied"],
                            "pools": {
                                f"{p['internal_api']}:{os.path.basename(p['filepath'] or '')}": p["num_threads"]
                                for p in lay["pools"]
                            },
                        }
                        for lay in info["layout"]
                    ],
                    "mean_test_first": res[next(k for k in res if k.startswith("mean_test_"))],
                }
            )
        return row
    limited = name == "plain_limited"
    threads = 1 if limited else cores
    env = C.child_env(C.pin_blas_env(1 if limited else cores))
    cmd = mpi + [SCRIPT, "--worker", "plain", "--config", config] + (["--limited"] if limited else [])
    wall, stdout = run_cmd(cmd, env, args.timeout)
    row = {
        "contender": name,
        "process_wall": wall,
        "timed_out": wall is None,
        "command": f"OMP_NUM_THREADS={threads} OPENBLAS_NUM_THREADS={threads} "
        f"mpiexec -n 2 python benchmarks/bench_pinning.py --worker plain --config CONFIG.toml"
        + (" --limited" if limited else ""),
    }
    if wall is not None:
        row.update(C.last_json(stdout))
    return row


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    C.bar_walls(ax, doc["results"])
    r = doc["ratios"]
    ax.set_title(
        f"{doc['params']['grid']} grid, mpiexec -n 2 on {doc['environment']['nproc']} cores; "
        f"unlimited/hpcml search {r['search_plain_unlimited_over_hpcml']['median']:.2f}x",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    C.save_figure(fig, doc, f"bench_pinning, median of {doc['params']['repeats']}", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=["demo", "demo+hgb"], default="demo")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--contenders", default="hpcml,hpcml_tN,plain_unlimited,plain_limited")
    p.add_argument("--timeout", type=float, default=240, help="per run; slower runs are killed (default 240 s)")
    p.add_argument("--workdir")
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    p.add_argument("--worker", choices=["plain"], help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--limited", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker_plain(args)
        return
    cores = os.cpu_count() or 1
    doc = {
        "benchmark": "pinning",
        "environment": C.environment(),
        "params": {"grid": args.grid, "repeats": args.repeats, "cores": cores, "timeout": args.timeout},
    }
    work = args.workdir or tempfile.mkdtemp(prefix="hpcml-bench-pinning-")
    os.makedirs(work, exist_ok=True)
    config = write_config(work, args.grid)
    doc["config"] = open(config, encoding="utf-8").read()
    names = [c.replace("hpcml_tN", f"hpcml_t{cores}") for c in args.contenders.split(",")]
    raw: dict[str, list[dict]] = {n: [] for n in names}
    for rep in range(args.repeats):
        for n in names:
            r = run_contender(args, n, config, work, cores)
            print(
                f"[rep {rep}] {n}: process {r['process_wall']}, search {r.get('search_wall')}",
                file=sys.stderr,
                flush=True,
            )
            raw[n].append(r)

    def med(vals: list) -> dict:
        v = [x if x is not None else float("inf") for x in vals]
        s = C.summary(v)
        s["timed_out"] = sum(x is None for x in vals)
        return s

    results = {
        n: {
            "process_wall": med([r["process_wall"] for r in raw[n]]),
            "search_wall": med([r.get("search_wall") if not r["timed_out"] else None for r in raw[n]]),
            "command": raw[n][0]["command"],
        }
        for n in names
    }
    reps = range(args.repeats)

    def ratio(a: str, b: str, key: str) -> dict | None:
        if a not in raw or b not in raw:
            return None
        vals = []
        for i in reps:
            x = raw[a][i].get(key) if not raw[a][i]["timed_out"] else args.timeout
            y = raw[b][i].get(key)
            vals.append(x / y if x and y else float("nan"))
        s = C.summary(vals)
        s["lower_bound"] = any(raw[a][i]["timed_out"] for i in reps)
        return s

    ratios = {}
    for other in names:
        if other != "hpcml":
            ratios[f"search_{other}_over_hpcml"] = ratio(other, "hpcml", "search_wall")
            ratios[f"process_{other}_over_hpcml"] = ratio(other, "hpcml", "process_wall")
    doc["results"] = results
    doc["ratios"] = {k: v for k, v in ratios.items() if v}
    # did the limits take effect on every rank?
    checks = []
    for r in raw.get("hpcml", []):
        if r["timed_out"]:
            continue
        checks.append(
            all(
                lay["threads"] == 1 and all(n == 1 for n in lay["pools"].values()) and lay["pools"]
                for lay in r["layout"]
            )
        )
    doc["limits_effective_every_rank"] = bool(checks) and all(checks)
    if raw.get("hpcml"):
        doc["hpcml_layout"] = raw["hpcml"][0].get("layout")
    if raw.get(f"hpcml_t{cores}"):
        doc[f"hpcml_t{cores}_layout"] = raw[f"hpcml_t{cores}"][0].get("layout")
    if raw.get("plain_unlimited") and not raw["plain_unlimited"][0]["timed_out"]:
        doc["plain_unlimited_pools"] = raw["plain_unlimited"][0].get("pools")
    import numpy as np

    ref = [r for r in raw.get("hpcml", []) if not r["timed_out"]]
    if ref:
        a = np.array(ref[0]["mean_test_first"])
        doc["scores_agree"] = {
            n: all(np.allclose(np.array(r["mean_test_first"]), a) for r in raw[n] if not r["timed_out"]) for n in names
        }
    doc["raw"] = {
        n: [{k: v for k, v in r.items() if k not in ("mean_test_first", "layout")} for r in raw[n]] for n in names
    }
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    C.finish(doc, args, plot=plot)


if __name__ == "__main__":
    main()

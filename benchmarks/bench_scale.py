"""Scale: the built-in demo (``python -m hpcml.cv --demo``) at 1, 2, 4 (and 64) ranks.

    python benchmarks/bench_scale.py [--ranks 1,2,4] [--with-64] [--repeats 1] [--plot FILE.png] [--json FILE.json]

For every rank count the demo (digits, SVC 12 + LogisticRegression 4 candidates,
5 folds = 80 units) runs as

    mpiexec -n N python benchmarks/bench_scale.py --worker cli -- --demo --out DIR --quiet

``--worker cli`` is ``python -m hpcml.cv`` (it calls ``hpcml.cv.__main__.main``)
with timestamps taken through wrappers around hpcml's own functions, so that
every rank reports where its start-up went:

* ``boot``: process creation (psutil) -> ``plan_layout`` entered (interpreter,
  ``import mpi4py``, ``MPI_Init``);
* ``layout``: ``plan_layout`` (collective: also waits for the slowest rank);
* ``imports``: ``plan_layout`` done -> ``run`` entered (NumPy, SciPy, scikit-learn, h5py);
* ``config``: ``run`` entered -> ``load_arrays`` entered (rank 0 writes the demo
  files and reads the config, every rank parses it);
* ``data``: ``load_arrays`` (collective HDF5 read / shared window);
* ``ready``: process creation -> data loaded.

Reported per N: process wall (the whole ``mpiexec``), run.json ``wall_seconds``
and ``schedule_seconds``, load balance, the per-rank start-up breakdown
(median/max over ranks), and whether every score column of ``cv_results.json``
equals the 2-rank run's exactly.  ``--with-64`` adds N=64 (64 processes on this
machine's cores; takes minutes).  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

T_WRAPPER = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SCRIPT = os.path.abspath(__file__)


# --------------------------------------------------------------------------- worker: the CLI with timestamps
def worker_cli(argv: list[str], timings_path: str) -> int:
    import psutil

    stamps: dict[str, float] = {"create": psutil.Process().create_time(), "wrapper": T_WRAPPER}
    import hpcml.threads as threads

    orig_plan, orig_limit = threads.plan_layout, threads.limit_loaded_pools

    def plan_layout(comm, threads_per_rank=None):  # noqa: ANN001, ANN202
        stamps["plan_in"] = time.time()
        out = orig_plan(comm, threads_per_rank)
        stamps["plan_out"] = time.time()
        return out

    def limit_loaded_pools(layout):  # noqa: ANN001, ANN202
        stamps["run_in"] = time.time()
        import hpcml.data.shared as shared  # NumPy is loaded by now

        orig_load = shared.load_arrays

        def load_arrays(*a, **k):  # noqa: ANN002, ANN003, ANN202
            stamps["load_in"] = time.time()
            out = orig_load(*a, **k)
            stamps["load_out"] = time.time()
            return out

        shared.load_arrays = load_arrays
        return orig_limit(layout)

    threads.plan_layout = plan_layout
    threads.limit_loaded_pools = limit_loaded_pools
    from hpcml.cv.__main__ import main

    code = main(argv)
    stamps["end"] = time.time()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    every = comm.gather(stamps, root=0)
    if comm.Get_rank() == 0:
        with open(timings_path, "w", encoding="utf-8") as fh:
            json.dump(every, fh)
    return code


# --------------------------------------------------------------------------- driver
SCORE_PREFIXES = ("split", "mean_test_", "std_test_", "rank_test_")


def compare(ref: dict, other: dict) -> dict:
    import numpy as np

    cols = [k for k in ref if k.startswith(SCORE_PREFIXES) and ("_test_" in k)]
    equal, worst = True, 0.0
    for k in cols:
        a, b = np.array(ref[k], dtype=float), np.array(other.get(k, []), dtype=float)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            equal = False
            if a.shape == b.shape:
                worst = max(worst, float(np.nanmax(np.abs(a - b))))
            else:
                worst = float("inf")
    return {"columns": len(cols), "identical": equal, "max_abs_diff": worst}


def breakdown(stamps: list[dict]) -> dict:
    import numpy as np

    t0 = min(s["create"] for s in stamps)
    parts = {
        "boot": [s["plan_in"] - s["create"] for s in stamps],
        "layout": [s["plan_out"] - s["plan_in"] for s in stamps],
        "imports": [s["run_in"] - s["plan_out"] for s in stamps],
        "config": [s["load_in"] - s["run_in"] for s in stamps],
        "data": [s["load_out"] - s["load_in"] for s in stamps],
        "ready": [s["load_out"] - s["create"] for s in stamps],
    }
    out = {
        k: {"median": float(np.median(v)), "max": float(np.max(v)), "min": float(np.min(v))} for k, v in parts.items()
    }
    out["all_ranks_ready_after_first_create"] = max(s["load_out"] for s in stamps) - t0
    out["process_creation_spread"] = max(s["create"] for s in stamps) - t0
    return out


def run_one(args: argparse.Namespace, n: int, work: str, rep: int) -> dict:
    out = os.path.join(work, f"n{n}-r{rep}")
    shutil.rmtree(out, ignore_errors=True)
    timings = os.path.join(work, f"timings-n{n}-r{rep}.json")
    cmd = [
        C.mpiexec(),
        "-n",
        str(n),
        C.PYTHON,
        SCRIPT,
        "--worker",
        "cli",
        "--timings",
        timings,
        "--",
        "--demo",
        "--out",
        out,
        "--quiet",
    ]
    wall, _, _ = C.run(cmd, env=C.child_env(), timeout=args.timeout)
    with open(os.path.join(out, "run.json"), encoding="utf-8") as fh:
        info = json.load(fh)
    with open(os.path.join(out, "cv_results.json"), encoding="utf-8") as fh:
        res = json.load(fh)
    with open(timings, encoding="utf-8") as fh:
        stamps = json.load(fh)
    return {
        "ranks": n,
        "process_wall": wall,
        "run_wall_seconds": info["wall_seconds"],
        "schedule_seconds": info["schedule_seconds"],
        "load_seconds_rank0": info["data"]["load_seconds"],
        "data_method": info["data"].get("method"),
        "load_balance": info["load_balance"],
        "busy_seconds_sum": sum(info["busy_seconds"]),
        "messages": info["messages"],
        "threads": sorted({lay["threads"] for lay in info["layout"]}),
        "pinned": sorted({lay["pinned"] for lay in info["layout"]}),
        "pool_threads": sorted({p["num_threads"] for lay in info["layout"] for p in lay["pools"]}),
        "startup": breakdown(stamps),
        "cv_results": res,
        "command": f"mpiexec -n {n} python benchmarks/bench_scale.py --worker cli -- --demo --out DIR --quiet",
    }


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    ns = [r["ranks"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    lab = [str(n) for n in ns]
    a1.plot(lab, [r["process_wall"] for r in rows], "o-", label="process wall (mpiexec)")
    a1.plot(lab, [r["run_wall_seconds"] for r in rows], "s-", label="run.json wall_seconds")
    a1.plot(lab, [r["schedule_seconds"] for r in rows], "^-", label="run.json schedule_seconds")
    a1.set_xlabel("ranks (on %s cores)" % doc["environment"]["nproc"])
    a1.set_ylabel("seconds")
    a1.set_title("demo (80 units)")
    a1.legend(fontsize=8)
    parts = [p for p in ["boot", "layout", "imports", "config", "data"] if p in rows[0]["startup"]]
    bottom = [0.0] * len(rows)
    for part in parts:
        vals = [r["startup"][part]["median"] for r in rows]
        a2.bar(lab, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    a2.plot(lab, [r["startup"]["ready"]["max"] for r in rows], "kx", label="ready (slowest rank)")
    a2.set_xlabel("ranks")
    a2.set_ylabel("seconds per rank (median)")
    a2.set_title("start-up per rank")
    a2.legend(fontsize=8)
    C.save_figure(fig, doc, "bench_scale", path)


def main() -> None:
    if "--worker" in sys.argv:
        i = sys.argv.index("--")
        p = argparse.ArgumentParser()
        p.add_argument("--worker", choices=["cli"])
        p.add_argument("--timings", required=True)
        a = p.parse_args(sys.argv[1:i])
        from hpcml.comm import run_guarded

        run_guarded(lambda: worker_cli(sys.argv[i + 1 :], a.timings))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2,4", help="comma-separated rank counts (default 1,2,4)")
    p.add_argument("--with-64", action="store_true", help="also run 64 ranks (minutes on 2 cores)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--workdir", help="keep outputs here (default: a temporary folder)")
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    args = p.parse_args()
    ranks = [int(x) for x in args.ranks.split(",")]
    if args.with_64 and 64 not in ranks:
        ranks.append(64)
    if 2 not in ranks:
        ranks.insert(0, 2)  # the reference for the equality check
    doc = {"benchmark": "scale", "environment": C.environment(), "params": {"ranks": ranks, "repeats": args.repeats}}
    work = args.workdir or tempfile.mkdtemp(prefix="hpcml-bench-scale-")
    os.makedirs(work, exist_ok=True)
    runs: dict[int, list[dict]] = {}
    for rep in range(args.repeats):
        for n in ranks:
            r = run_one(args, n, work, rep)
            print(
                f"[rep {rep}] n={n}: process {r['process_wall']:.1f} s, run {r['run_wall_seconds']:.1f} s, "
                f"schedule {r['schedule_seconds']:.1f} s, ready(max) {r['startup']['ready']['max']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            runs.setdefault(n, []).append(r)
    ref = runs[2][0]["cv_results"]
    results = []
    for n in ranks:
        best = sorted(runs[n], key=lambda r: r["process_wall"])[len(runs[n]) // 2]  # median by process wall
        row = {k: v for k, v in best.items() if k != "cv_results"}
        row["equal_to_2_ranks"] = compare(ref, best["cv_results"])
        row["all_repeats_equal_to_2_ranks"] = all(compare(ref, r["cv_results"])["identical"] for r in runs[n])
        row["process_wall_all"] = [r["process_wall"] for r in runs[n]]
        results.append(row)
    doc["results"] = results
    doc["goals"] = {"all_equal_to_2_ranks": all(r["all_repeats_equal_to_2_ranks"] for r in results)}
    if 64 in ranks:
        doc["goals"]["64_ranks_completed_and_equal"] = next(r for r in results if r["ranks"] == 64)[
            "all_repeats_equal_to_2_ranks"
        ]
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    C.finish(doc, args, plot=plot)


if __name__ == "__main__":
    main()

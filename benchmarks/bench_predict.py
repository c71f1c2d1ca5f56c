"""``cross_val_predict`` on a large dense set: hpcml at 2 ranks against scikit-learn, side by side.

    python benchmarks/bench_predict.py --rows 2500000 --features 50 [--repeats 2] \\
        --json benchmarks/results/predict.json --plot benchmarks/results/predict.png

The brief's "prediction on large data" case.  One HDF5 file (``python -m
hpcml.data synth --kind regression``) is predicted out of fold by ``Ridge``
(``copy_X=False``: the fold copy made by indexing is the only copy) with 5-fold
``KFold``, by four peers, each a whole process (interpreter start, data load,
cross-validation, result written):

* ``hpcml -n 2 h5``: ``hpcml.cross_val_predict(est, hpcml.H5Dataset(file))`` at 2
  ranks (X read once per node into shared memory);
* ``hpcml -n 2 memory``: every rank reads X and y with h5py and passes arrays;
* ``sklearn n_jobs=1`` and ``sklearn n_jobs=2``: scikit-learn's
  ``cross_val_predict`` on arrays read with h5py (joblib's loky backend).

Peers run interleaved, ``--repeats`` rounds.  Wall is the whole process's (best of
the rounds); peak memory is the peak of the summed PSS of the process tree
(sampled every 50 ms, as in bench_memory.py).  Every peer's predictions are
compared with scikit-learn ``n_jobs=1``'s and ``n_jobs=2``'s (exact equality, the
largest absolute and relative difference).  The machine's load average is recorded: only the ratios
of peers run in one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

#: the worker run by every peer: ``MODE DATA OUT.npy SPLITS``
WORKER = """\
import json, sys, time
import h5py, numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
mode, data, out, splits = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
est, cv = Ridge(alpha=1.0, copy_X=False), KFold(splits)
t0 = time.perf_counter()
if mode == "hpcml-h5":
    import hpcml
    from mpi4py import MPI
    pred = hpcml.cross_val_predict(est, hpcml.H5Dataset(data), cv=cv)
    rank = MPI.COMM_WORLD.Get_rank()
else:
    with h5py.File(data, "r") as fh:
        X, y = fh["X"][...], fh["y"][...]
    if mode == "hpcml-memory":
        import hpcml
        from mpi4py import MPI
        pred = hpcml.cross_val_predict(est, X, y, cv=cv)
        rank = MPI.COMM_WORLD.Get_rank()
    else:
        from sklearn.model_selection import cross_val_predict
        pred = cross_val_predict(est, X, y, cv=cv, n_jobs=int(mode.split("=")[1]))
        rank = 0
if rank == 0:
    np.save(out, pred)
    print(json.dumps({"inner_seconds": time.perf_counter() - t0}))
"""

PEERS = ("hpcml -n 2 h5", "hpcml -n 2 memory", "sklearn n_jobs=1", "sklearn n_jobs=2")


def tree_pss(proc: psutil.Process) -> int:
    """Summed PSS (bytes) of ``proc`` and all its descendants."""
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
    """Whole-process wall, peak tree PSS and the worker's own seconds of one launch of ``cmd``."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(ps))
        time.sleep(0.05)
        if time.perf_counter() - t > timeout:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise TimeoutError(" ".join(cmd))
    wall = time.perf_counter() - t
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()[-800:]}")
    return {"seconds": wall, "peak_pss_gb": peak / 1e9, **C.last_json(out)}


def command(peer: str, script: str, data: str, out: str, splits: int) -> list[str]:
    """The launch of one peer."""
    if peer.startswith("hpcml"):
        mode = "hpcml-h5" if peer.endswith("h5") else "hpcml-memory"
        return [C.mpiexec(), "-n", "2", sys.executable, script, mode, data, out, str(splits)]
    return [sys.executable, script, peer.split()[1], data, out, str(splits)]


def compare(files: dict[str, str], references: tuple[str, ...]) -> dict[str, dict[str, dict[str, float | bool]]]:
    """Each peer's predictions against each reference's: exact equality, largest absolute and relative difference.

    scikit-learn ``n_jobs=1`` runs BLAS on every core, its ``n_jobs=2`` workers and
    hpcml's 2 ranks on one thread each: sums in another order differ in the last bits.
    """
    import numpy as np

    out: dict[str, dict[str, dict[str, float | bool]]] = {}
    for reference in references:
        ref = np.load(files[reference])
        scale = float(np.max(np.abs(ref)))
        out[reference] = {}
        for peer, path in files.items():
            pred = np.load(path)
            same = pred.shape == ref.shape
            diff = float(np.max(np.abs(pred - ref))) if same else float("inf")
            out[reference][peer] = {
                "equal": bool(same and np.array_equal(pred, ref)),
                "max_abs_diff": diff,
                "max_abs_diff_over_max_abs": diff / scale if scale else diff,
                "allclose_atol_1e-12": bool(same and np.allclose(pred, ref, rtol=0, atol=1e-12)),
            }
    return out


def plot(doc: dict, path: str) -> None:
    """Wall and peak PSS of every peer, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = list(doc["best"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.barh(peers, [doc["best"][p]["seconds"] for p in peers], color="tab:blue")
    a.set_xlabel("whole-process wall (s), best of the rounds")
    b.barh(peers, [doc["best"][p]["peak_pss_gb"] for p in peers], color="tab:orange")
    b.axvline(doc["x_gb"], color="k", ls=":", label="size of X")
    b.set_xlabel("peak total PSS (GB)")
    b.legend(loc="lower right")
    for ax in (a, b):
        ax.invert_yaxis()
    b.set_yticklabels([])
    title = f"cross_val_predict, Ridge, {doc['rows']:,} x {doc['features']} float64 ({doc['x_gb']:.2f} GB), 5-fold"
    C.save_figure(fig, doc, title, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_500_000)
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds of all peers")
    p.add_argument("--dir", default=None, help="where the data file goes (default: the temp dir)")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", default=None, metavar="FILE.json")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    args = p.parse_args()

    doc: dict = {"benchmark": "predict", "environment": C.environment(), "params": vars(args).copy()}
    env = C.child_env({"MPIR_CVAR_POLLS_BEFORE_YIELD": "1"})
    tmp = tempfile.mkdtemp(dir=args.dir)
    try:
        data, script = os.path.join(tmp, "data.h5"), os.path.join(tmp, "worker.py")
        synth = ["-m", "hpcml.data", "synth", data, "--n-samples", str(args.rows), "--n-features", str(args.features)]
        subprocess.run([C.mpiexec(), "-n", "2", sys.executable, *synth, "--kind", "regression"], env=env, check=True)
        with open(script, "w") as fh:
            fh.write(WORKER)
        rounds: list[dict] = []
        files = {}
        for r in range(args.repeats):
            row = {}
            for i, peer in enumerate(PEERS):
                files[peer] = os.path.join(tmp, f"pred-{i}.npy")
                row[peer] = measure(command(peer, script, data, files[peer], args.splits), env, args.timeout)
                row[peer]["loadavg"] = C.loadavg()
                print(r, peer, row[peer], file=sys.stderr, flush=True)
            rounds.append(row)
        doc["predictions_vs"] = compare(files, ("sklearn n_jobs=1", "sklearn n_jobs=2"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {peer: min((row[peer] for row in rounds), key=lambda m: m["seconds"]) for peer in PEERS}
    peak = {peer: max(row[peer]["peak_pss_gb"] for row in rounds) for peer in PEERS}
    for peer in PEERS:
        best[peer] = dict(best[peer], peak_pss_gb=peak[peer])
    doc.update({"rows": args.rows, "features": args.features, "x_gb": args.rows * args.features * 8 / 1e9})
    doc.update({"rounds": rounds, "best": best})
    ratios = {}
    for peer in PEERS[:2]:
        for ref in PEERS[2:]:
            ratios[f"wall {peer} / {ref}"] = best[peer]["seconds"] / best[ref]["seconds"]
            ratios[f"peak PSS {peer} / {ref}"] = best[peer]["peak_pss_gb"] / best[ref]["peak_pss_gb"]
    doc["ratios"] = ratios
    C.finish(doc, args, plot)


if __name__ == "__main__":
    main()

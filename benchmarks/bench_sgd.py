"""Benchmarks of hpcml.sgd; prints one JSON document.

    python benchmarks/bench_sgd.py [--parts step,throughput,accuracy,memory] [--rows 1000000] [--plot out.png]

The driver (this script without ``--worker``) launches ``mpiexec -n N python
benchmarks/bench_sgd.py --worker PART ...`` for each measurement and collects
the JSON that rank 0 of each worker prints.

Parts
-----
step        time per step split into compute and Allreduce at 1, 2, 4 ranks, and hpcml's
            gradient exchange vs a bare ``comm.Allreduce`` of the same buffer
throughput  samples/s per epoch on an ``rows x 100`` float32 HDF5 set, 1 vs 2 ranks
            (sampling="local"), and hpcml at 1 rank vs sklearn.linear_model.SGDClassifier
accuracy    time to test accuracy 0.938 on make_classification(500000 x 100, random_state=0)
            split 400k/100k: hpcml at 2 ranks vs sklearn SGDClassifier(loss="log_loss")
memory      peak RSS per rank when 4 ranks train on a set 4x one rank's share
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
MARK = "BENCH_JSON "


def mpiexec() -> str:
    here = Path(PY).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def launch(n: int, args: list[str], timeout: float = 1800) -> dict:
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1", PYTHONUNBUFFERED="1")
    cmd = [mpiexec(), "-n", str(n), PY, str(Path(__file__).resolve()), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in res.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise RuntimeError(f"worker {args} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")


# --------------------------------------------------------------------------- workers
def _setup(threads: int | None = None):
    from mpi4py import MPI

    from hpcml.threads import apply_layout, limit_loaded_pools, plan_layout

    layout = apply_layout(plan_layout(MPI.COMM_WORLD, threads))
    import numpy  # noqa: F401

    limit_loaded_pools(layout)
    return MPI.COMM_WORLD, layout


def _emit(comm, payload: dict) -> None:
    if comm.Get_rank() == 0:
        print(MARK + json.dumps(payload), flush=True)


def worker_step(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    import numpy as np
    from mpi4py import MPI

    from hpcml.sgd import GradientExchange, SGDClassifier

    rank, size = comm.Get_rank(), comm.Get_size()
    d, n_local, B = 100, 20000, a.batch
    rng = np.random.default_rng(rank)
    X = rng.normal(size=(n_local * size, d))
    w = rng.normal(size=d)
    y = (X @ w + rng.normal(size=len(X)) > 0).astype(int)
    X = comm.bcast(X if rank == 0 else None)
    y = comm.bcast(y if rank == 0 else None)
    est = SGDClassifier(comm=comm, batch_size=B, max_iter=2, tol=None, sampling="local").fit(X, y)
    t = est.timing_
    steps = t["steps"]
    timings = comm.gather({"compute_us": 1e6 * t["compute_s"] / steps, "allreduce_us": 1e6 * t["comm_s"] / steps})
    # exchange vs bare Allreduce of the same buffer, interleaved rounds
    ex = GradientExchange(comm, d, 1, n_extra=2)
    bare = np.zeros_like(ex.buf)
    reps = a.reps
    hp = bb = 0.0
    for _ in range(5):
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            ex.allreduce()
        hp += time.perf_counter() - t0
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(reps):
            if size > 1:
                comm.Allreduce(MPI.IN_PLACE, bare, op=MPI.SUM)
        bb += time.perf_counter() - t0
    hp_us = comm.allreduce(hp, op=MPI.MAX) / (5 * reps) * 1e6
    bare_us = comm.allreduce(bb, op=MPI.MAX) / (5 * reps) * 1e6
    _emit(
        comm,
        {
            "ranks": size,
            "global_batch": B,
            "buffer_bytes": int(ex.buf.nbytes),
            "per_rank": timings,
            "exchange_us": hp_us,
            "bare_allreduce_us": bare_us,
            "exchange_over_bare": hp_us / bare_us if bare_us > 0 else None,
        },
    )


def worker_throughput(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    from mpi4py import MPI

    from hpcml.data.h5 import H5Dataset
    from hpcml.sgd import SGDClassifier

    ds = H5Dataset(a.data)
    est = SGDClassifier(comm=comm, batch_size=a.batch, max_iter=a.epochs, tol=None, sampling=a.sampling, eta0=0.05)
    est.fit(ds)
    walls = [h["wall_s"] for h in est.history_]
    wall = comm.allreduce(min(walls), op=MPI.MAX)
    n = est.n_samples_seen_
    _emit(
        comm,
        {
            "ranks": comm.Get_size(),
            "sampling": a.sampling,
            "rows": n,
            "epoch_wall_s": [comm.allreduce(w, op=MPI.MAX) for w in walls],
            "samples_per_s": n / wall,
            "compute_s": est.timing_["compute_s"],
            "comm_s": est.timing_["comm_s"],
        },
    )


def worker_sklearn_throughput(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    from sklearn.linear_model import SGDClassifier

    from hpcml.data.h5 import H5Dataset

    ds = H5Dataset(a.data)
    X, y = ds.read("X"), ds.read("y")
    est = SGDClassifier(loss="log_loss", max_iter=a.epochs, tol=None, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        est.fit(X, y)
        wall = time.perf_counter() - t0
    _emit(comm, {"ranks": 1, "rows": len(y), "epochs": a.epochs, "samples_per_s": a.epochs * len(y) / wall})


def worker_accuracy(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    import numpy as np
    from mpi4py import MPI

    from hpcml.data.h5 import H5Dataset
    from hpcml.sgd import SGDClassifier

    test = H5Dataset(a.test)
    Xt, yt = test.read("X"), test.read("y")
    out = []
    for epochs in range(1, 6):
        est = SGDClassifier(
            comm=comm, max_iter=epochs, tol=None, batch_size=a.batch, eta0=a.eta0, sampling="local",
            alpha=1e-5, learning_rate="cosine", random_state=0,
        )
        comm.Barrier()
        t0 = time.perf_counter()
        est.fit(H5Dataset(a.data))
        wall = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        acc = float(np.mean(est.predict(Xt) == yt))
        out.append({"epochs": epochs, "fit_s": wall, "test_accuracy": acc})
        if acc >= a.target:
            break
    _emit(comm, {"ranks": comm.Get_size(), "runs": out})


def worker_sklearn_accuracy(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    from hpcml.data.h5 import H5Dataset

    ds, test = H5Dataset(a.data), H5Dataset(a.test)
    X, y, Xt, yt = ds.read("X"), ds.read("y"), test.read("X"), test.read("y")
    res = {}
    for name, est in (
        ("sklearn_SGDClassifier_log_loss", SGDClassifier(loss="log_loss", random_state=0)),
        ("sklearn_LogisticRegression_lbfgs", LogisticRegression()),
    ):
        t0 = time.perf_counter()
        est.fit(X, y)
        res[name] = {"fit_s": time.perf_counter() - t0, "test_accuracy": float(est.score(Xt, yt))}
    _emit(comm, res)


def worker_memory(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    import resource

    import psutil

    from hpcml.data.h5 import H5Dataset
    from hpcml.sgd import SGDClassifier

    before = psutil.Process().memory_info().rss
    ds = H5Dataset(a.data)
    SGDClassifier(comm=comm, max_iter=1, tol=None, batch_size=1024, sampling="local").fit(ds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n, d = ds.shape
    dset_bytes = n * d * 4
    _emit(
        comm,
        {"ranks": comm.Get_size(), "dataset_MiB": dset_bytes / 2**20, "shard_MiB": dset_bytes / comm.Get_size() / 2**20,
         "rss_before_fit_MiB": comm.gather(before / 2**20),
         "peak_rss_MiB": comm.gather(peak / 2**20)},
    )


# --------------------------------------------------------------------------- data
def ensure_throughput_data(rows: int, path: Path) -> Path:
    if path.exists():
        return path
    import numpy as np

    from hpcml.data.h5 import write_dataset

    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, 100), dtype=np.float32)
    w = rng.standard_normal(100).astype(np.float32)
    y = (X @ w + rng.standard_normal(rows, dtype=np.float32) > 0).astype(np.int8)
    write_dataset(path, X, y)
    return path


def ensure_accuracy_data(folder: Path) -> tuple[Path, Path]:
    train, test = folder / "mc500k-train.h5", folder / "mc500k-test.h5"
    if train.exists() and test.exists():
        return train, test
    from sklearn.datasets import make_classification

    from hpcml.data.h5 import write_dataset

    X, y = make_classification(500000, 100, random_state=0)
    write_dataset(train, X[:400000], y[:400000])
    write_dataset(test, X[400000:], y[400000:])
    return train, test


# --------------------------------------------------------------------------- driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="step,throughput,accuracy,memory")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--data-dir", default=str(HERE / "results"))
    p.add_argument("--plot")
    p.add_argument("--worker")
    p.add_argument("--data")
    p.add_argument("--test")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--eta0", type=float, default=0.5)
    p.add_argument("--target", type=float, default=0.938)
    p.add_argument("--sampling", default="local")
    p.add_argument("--reps", type=int, default=500)
    a = p.parse_args()
    if a.worker:
        globals()[f"worker_{a.worker}"](a)
        return
    parts = a.parts.split(",")
    folder = Path(a.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {"cpus": os.cpu_count()}
    if "step" in parts:
        report["step"] = [launch(n, ["--worker", "step", "--batch", "256"]) for n in (1, 2, 4)]
    if "throughput" in parts or "memory" in parts:
        data = ensure_throughput_data(a.rows, folder / f"tp-{a.rows}x100-f32.h5")
    if "throughput" in parts:
        args = ["--data", str(data), "--epochs", "2", "--batch", str(a.batch)]
        report["throughput"] = {
            "hpcml_1": launch(1, ["--worker", "throughput", *args]),
            "hpcml_2": launch(2, ["--worker", "throughput", *args]),
            "sklearn_1": launch(1, ["--worker", "sklearn_throughput", "--data", str(data), "--epochs", "1"]),
        }
        t = report["throughput"]
        t["speedup_2_vs_1"] = t["hpcml_2"]["samples_per_s"] / t["hpcml_1"]["samples_per_s"]
        t["hpcml_1_vs_sklearn"] = t["hpcml_1"]["samples_per_s"] / t["sklearn_1"]["samples_per_s"]
    if "accuracy" in parts:
        train, test = ensure_accuracy_data(folder)
        args = ["--data", str(train), "--test", str(test)]
        report["accuracy"] = {
            "sklearn": launch(1, ["--worker", "sklearn_accuracy", *args]),
            "hpcml_2": launch(2, ["--worker", "accuracy", *args, "--batch", str(a.batch), "--eta0", str(a.eta0)]),
        }
        runs = report["accuracy"]["hpcml_2"]["runs"]
        hit = [r for r in runs if r["test_accuracy"] >= a.target]
        sk = report["accuracy"]["sklearn"]["sklearn_SGDClassifier_log_loss"]["fit_s"]
        report["accuracy"]["hpcml_2_time_to_target_s"] = hit[0]["fit_s"] if hit else None
        report["accuracy"]["ratio_to_sklearn_sgd"] = hit[0]["fit_s"] / sk if hit else None
    if "memory" in parts:
        report["memory"] = launch(4, ["--worker", "memory", "--data", str(data)])
    print(json.dumps(report, indent=2))
    if a.plot and "step" in report:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ranks = [s["ranks"] for s in report["step"]]
        comp = [max(r["compute_us"] for r in s["per_rank"]) for s in report["step"]]
        comm_ = [max(r["allreduce_us"] for r in s["per_rank"]) for s in report["step"]]
        ax.bar([str(r) for r in ranks], comp, label="compute")
        ax.bar([str(r) for r in ranks], comm_, bottom=comp, label="allreduce")
        ax.set_xlabel("ranks")
        ax.set_ylabel("µs per step")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot)


if __name__ == "__main__":
    main()

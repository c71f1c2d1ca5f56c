"""Benchmarks of hpcml.sgd; prints one JSON document (and writes it with ``--out``).

    python benchmarks/bench_sgd.py --data-dir /tmp/bench [--parts step,throughput,accuracy,memory]
        [--rows 1000000] [--tp-batches 8192,16384,32768] [--repeats 3] [--baseline-rev REV]
        [--out benchmarks/results/sgd.json] [--plot benchmarks/results/sgd.png]

The driver (this script without ``--worker``) launches ``mpiexec -n N python
benchmarks/bench_sgd.py --worker PART ...`` for each measurement and collects
the JSON that rank 0 of each worker prints.  The machine may be shared, so
every comparison is measured side by side in one run, in interleaved
repetitions, and reported as the median of the per-repetition ratios.

``--baseline-rev REV`` exports ``hpcml/sgd`` as it was at git revision REV into
a temporary package (``hpcml_sgd_baseline``) and measures it next to the
working tree's ``hpcml.sgd`` in the same repetitions ("before" / "after").

Parts
-----
step        per step: compute, waiting for the slower rank and the Allreduce itself (a
            Barrier before each Allreduce, in this benchmark only, absorbs the wait) at 1, 2, 4
            ranks; and hpcml's ``GradientExchange.allreduce()`` vs a bare
            ``comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)`` of the same buffer: per call,
            Barrier before each call, the two alternated, medians of ``--reps`` calls
throughput  samples/s per epoch (rows / fastest epoch wall, max over ranks) on a ``rows x 100``
            float32 HDF5 set, 1 vs 2 ranks, sampling="local", for each ``--tp-batches``
            global batch; and hpcml at 1 rank vs sklearn.linear_model.SGDClassifier
            (log_loss, per-sample loop): per-epoch time (sklearn: (fit 3 epochs - fit 1 epoch)/2
            on float64 X, its compute type) and whole 3-epoch fits
accuracy    time to test accuracy 0.938 on make_classification(500000 x 100, random_state=0)
            split 400k/100k: hpcml at 2 ranks vs sklearn SGDClassifier(loss="log_loss")
memory      peak RSS per rank when 4 ranks train on a set 4x one rank's share
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
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


def _sgd(a: argparse.Namespace):
    """The hpcml.sgd package under test: the working tree's, or the exported baseline."""
    if getattr(a, "impl", "current") == "baseline":
        sys.path.insert(0, a.impl_path)
        import hpcml_sgd_baseline as sgd

        return sgd
    import hpcml.sgd as sgd

    return sgd


def worker_step(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    import numpy as np
    from mpi4py import MPI

    sgd = _sgd(a)
    est_mod = importlib.import_module(sgd.__name__ + ".estimators")
    GradientExchange, SGDClassifier = sgd.GradientExchange, sgd.SGDClassifier

    rank, size = comm.Get_rank(), comm.Get_size()
    d, n_local, B = 100, 20000, a.batch
    rng = np.random.default_rng(rank)
    X = rng.normal(size=(n_local * size, d))
    w = rng.normal(size=d)
    y = (X @ w + rng.normal(size=len(X)) > 0).astype(int)
    X = comm.bcast(X if rank == 0 else None)
    y = comm.bcast(y if rank == 0 else None)
    kw = dict(comm=comm, batch_size=B, max_iter=2, tol=None, sampling="local")
    est = SGDClassifier(**kw).fit(X, y)
    t = est.timing_
    steps = t["steps"]
    timings = {"compute_us": 1e6 * t["compute_s"] / steps, "allreduce_incl_wait_us": 1e6 * t["comm_s"] / steps}

    # Same fit again with a Barrier before every Allreduce (benchmark only): the barrier
    # absorbs the wait for the slower rank, so what remains is the Allreduce itself.
    class SplitExchange(GradientExchange):
        wait_time = 0.0

        def allreduce(self) -> None:
            t0 = time.perf_counter()
            if self.size > 1:
                self.comm.Barrier()
            self.wait_time += time.perf_counter() - t0
            super().allreduce()

    made: list = []

    def factory(*args, **kwargs):
        ex = SplitExchange(*args, **kwargs)
        made.append(ex)
        return ex

    real = est_mod.GradientExchange
    est_mod.GradientExchange = factory
    try:
        est2 = SGDClassifier(**kw).fit(X, y)
    finally:
        est_mod.GradientExchange = real
    steps2 = est2.timing_["steps"]
    timings["split_compute_us"] = 1e6 * est2.timing_["compute_s"] / steps2
    timings["split_wait_us"] = 1e6 * made[0].wait_time / steps2
    timings["split_allreduce_us"] = 1e6 * made[0].comm_time / steps2

    # hpcml's exchange vs a bare Allreduce of the same buffer: per call, a Barrier before
    # each call, the two alternated (which one goes first flips every iteration), medians.
    ex = GradientExchange(comm, d, 1, n_extra=2)
    bare = np.zeros_like(ex.buf)
    in_place, op_sum = MPI.IN_PLACE, MPI.SUM
    hp, bb, bar = [], [], []
    pc = time.perf_counter
    for i in range(a.reps + 50):
        for which in (0, 1) if i % 2 == 0 else (1, 0):
            t0 = pc()
            comm.Barrier()
            t1 = pc()
            if which == 0:
                ex.allreduce()
            else:
                comm.Allreduce(in_place, bare, op=op_sum)
            t2 = pc()
            if i >= 50:  # warm-up
                (hp if which == 0 else bb).append(t2 - t1)
                bar.append(t1 - t0)
    med = statistics.median
    # per-rank medians, then the slowest rank
    hp_us = comm.allreduce(med(hp), op=MPI.MAX) * 1e6
    bare_us = comm.allreduce(med(bb), op=MPI.MAX) * 1e6
    bar_us = comm.allreduce(med(bar), op=MPI.MAX) * 1e6
    _emit(
        comm,
        {
            "ranks": size,
            "impl": getattr(a, "impl", "current"),
            "global_batch": B,
            "buffer_bytes": int(ex.buf.nbytes),
            "per_rank": comm.gather(timings),
            "exchange_us": hp_us,
            "bare_allreduce_us": bare_us,
            "barrier_us": bar_us,
            "exchange_over_bare": hp_us / bare_us if size > 1 and bare_us > 0 else None,
            "reps": a.reps,
        },
    )


def worker_throughput(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    from mpi4py import MPI

    from hpcml.data.h5 import H5Dataset

    sgd = _sgd(a)
    ds = H5Dataset(a.data)
    est = sgd.SGDClassifier(comm=comm, batch_size=a.batch, max_iter=a.epochs, tol=None, sampling=a.sampling, eta0=0.05)
    comm.Barrier()
    t0 = time.perf_counter()
    est.fit(ds)
    fit_s = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    walls = [comm.allreduce(h["wall_s"], op=MPI.MAX) for h in est.history_]
    n = est.n_samples_seen_
    _emit(
        comm,
        {
            "impl": a.impl,
            "ranks": comm.Get_size(),
            "sampling": a.sampling,
            "global_batch": a.batch,
            "rows": n,
            "epoch_wall_s": walls,
            "samples_per_s": n / min(walls),
            "fit_s": fit_s,
            "compute_s": comm.gather(est.timing_["compute_s"]),
            "comm_s": comm.gather(est.timing_["comm_s"]),
            "loss_curve": [float(v) for v in est.loss_curve_],
        },
    )


def worker_sklearn_throughput(a: argparse.Namespace) -> None:
    comm, layout = _setup(1)
    import warnings

    import numpy as np
    from sklearn.linear_model import SGDClassifier

    from hpcml.data.h5 import H5Dataset

    ds = H5Dataset(a.data)
    X32, y = ds.read("X"), ds.read("y")
    t0 = time.perf_counter()
    X = np.ascontiguousarray(X32, dtype=np.float64)  # sklearn's SGD computes in float64
    convert_s = time.perf_counter() - t0
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epochs in (1, a.epochs):
            est = SGDClassifier(loss="log_loss", max_iter=epochs, tol=None, random_state=0)
            t0 = time.perf_counter()
            est.fit(X, y)
            fits[epochs] = time.perf_counter() - t0
    per_epoch = (fits[a.epochs] - fits[1]) / (a.epochs - 1)
    _emit(
        comm,
        {
            "ranks": 1,
            "rows": len(y),
            "epochs": a.epochs,
            "float64_conversion_s": convert_s,
            "fit_1_epoch_s": fits[1],
            f"fit_{a.epochs}_epochs_s": fits[a.epochs],
            "epoch_s": per_epoch,
            "samples_per_s": len(y) / per_epoch,
            "fit_from_float32_s": fits[a.epochs] + convert_s,
        },
    )


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
            comm=comm,
            max_iter=epochs,
            tol=None,
            batch_size=a.batch,
            eta0=a.eta0,
            sampling="local",
            alpha=1e-5,
            learning_rate="cosine",
            random_state=0,
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
        {
            "ranks": comm.Get_size(),
            "dataset_MiB": dset_bytes / 2**20,
            "shard_MiB": dset_bytes / comm.Get_size() / 2**20,
            "rss_before_fit_MiB": comm.gather(before / 2**20),
            "peak_rss_MiB": comm.gather(peak / 2**20),
        },
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
def export_baseline(rev: str, dest: Path) -> Path:
    """Write ``hpcml/sgd`` at git revision ``rev`` as package ``hpcml_sgd_baseline`` under ``dest``."""
    root = HERE.parent
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", rev, "hpcml/sgd/"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    pkg = dest / "hpcml_sgd_baseline"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not name.endswith(".py"):
            continue
        src = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=root, capture_output=True, text=True, check=True)
        (pkg / Path(name).name).write_text(re.sub(r"\bhpcml\.sgd\b", "hpcml_sgd_baseline", src.stdout))
    return dest


def _ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(num, den))


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("throughput", "step") if k in report]
    fig, axes = plt.subplots(1, len(panels) + ("step" in report), figsize=(5.2 * (len(panels) + 1), 4))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    i = 0
    if "throughput" in report:
        ax = axes[i]
        i += 1
        tp = report["throughput"]
        # grouped bars: one group per global batch, one bar per implementation x ranks
        cells: dict[tuple[str, str], dict[str, float]] = {}
        for key, cell in tp["runs"].items():
            impl, ranks, batch = key.split("/")
            cells.setdefault((impl, ranks), {})[batch] = statistics.median(r["samples_per_s"] for r in cell) / 1e6
        batches = sorted({b for series in cells.values() for b in series}, key=int)
        styles = {
            ("baseline", "1"): "tab:gray",
            ("baseline", "2"): "silver",
            ("current", "1"): "tab:blue",
            ("current", "2"): "tab:orange",
        }
        width = 0.8 / max(len(cells), 1)
        for j, (series_key, series) in enumerate(sorted(cells.items())):
            xs = [batches.index(b) + (j - (len(cells) - 1) / 2) * width for b in series]
            label = f"{series_key[0]}, {series_key[1]} rank(s)"
            ax.bar(xs, list(series.values()), width=width, color=styles.get(series_key), label=label)
        order = sorted(cells)
        summary = tp.get("summary", {})
        for bi, b in enumerate(batches):
            speedup = summary.get(f"current/B={b}", {}).get("speedup_2_vs_1")
            two = cells.get(("current", "2"), {}).get(b)
            if speedup and two and ("current", "2") in order:
                x = bi + (order.index(("current", "2")) - (len(cells) - 1) / 2) * width
                ax.annotate(f"x{speedup:.2f}", (x, two), ha="center", va="bottom", fontsize=8)
        top = max(v for series in cells.values() for v in series.values())
        ax.set_ylim(0, top * 1.35)
        if "sklearn" in tp:
            ax.axhline(tp["sklearn"]["samples_per_s"] / 1e6, color="tab:green", ls="--", label="sklearn SGDClassifier")
        ax.set_xticks(range(len(batches)), [f"B={b}" for b in batches], fontsize=8)
        ax.set_ylabel("M samples/s per epoch (median of repeats)")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        ax.set_title(f"{tp['rows']:,} x 100 float32, sampling=local (x: 2 ranks / 1 rank)", fontsize=9)
    if "step" in report:
        ax = axes[i]
        i += 1
        steps = [s for s in report["step"] if s["impl"] == "current"]
        ranks = [str(s["ranks"]) for s in steps]
        comp = [max(r["split_compute_us"] for r in s["per_rank"]) for s in steps]
        wait = [max(r["split_wait_us"] for r in s["per_rank"]) for s in steps]
        ar = [max(r["split_allreduce_us"] for r in s["per_rank"]) for s in steps]
        ax.bar(ranks, comp, label="compute")
        ax.bar(ranks, wait, bottom=comp, label="wait for slower rank (barrier)")
        ax.bar(ranks, ar, bottom=[c + w for c, w in zip(comp, wait)], label="Allreduce")
        ax.set_xlabel("ranks")
        ax.set_ylabel("µs per step (slowest rank)")
        ax.set_title(f"per step, global batch {steps[0]['global_batch']}", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[i]
        xs = [s for s in report["step"] if s["ranks"] > 1]
        lab = [f"{s['impl']}\n{s['ranks']} ranks" for s in xs]
        xpos = range(len(xs))
        ax.bar([x - 0.2 for x in xpos], [s["exchange_us"] for s in xs], width=0.4, label="GradientExchange.allreduce()")
        ax.bar([x + 0.2 for x in xpos], [s["bare_allreduce_us"] for s in xs], width=0.4, label="bare comm.Allreduce")
        ax.set_xticks(list(xpos), lab, fontsize=8)
        ax.set_ylabel("µs per call (median)")
        ax.set_title(f"{xs[0]['buffer_bytes']} B buffer, barrier before each call", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="step,throughput,accuracy,memory")
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--data-dir", default=str(HERE / "results"))
    p.add_argument("--json", "--out", dest="out", metavar="FILE.json", help="also write the JSON report here")
    p.add_argument("--plot")
    p.add_argument("--baseline-rev", help="git revision whose hpcml/sgd is measured alongside (before/after)")
    p.add_argument("--tp-batches", default="8192,16384,32768", help="global batch sizes of the throughput part")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of the throughput part")
    p.add_argument("--worker")
    p.add_argument("--impl", default="current", choices=("current", "baseline"))
    p.add_argument("--impl-path")
    p.add_argument("--data")
    p.add_argument("--test")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eta0", type=float, default=0.5)
    p.add_argument("--target", type=float, default=0.938)
    p.add_argument("--sampling", default="local")
    p.add_argument("--reps", type=int, default=2000)
    a = p.parse_args()
    if a.worker:
        globals()[f"worker_{a.worker}"](a)
        return
    parts = a.parts.split(",")
    folder = Path(a.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    impls: list[tuple[str, list[str]]] = [("current", [])]
    tmp = None
    if a.baseline_rev:
        tmp = tempfile.TemporaryDirectory(prefix="hpcml-sgd-baseline-")
        path = export_baseline(a.baseline_rev, Path(tmp.name))
        impls.insert(0, ("baseline", ["--impl", "baseline", "--impl-path", str(path)]))
    report: dict = {
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:],
        "baseline_rev": a.baseline_rev,
        "loadavg_start": list(os.getloadavg()),
    }
    if "step" in parts:
        report["step"] = [
            launch(n, ["--worker", "step", "--batch", "256", "--reps", str(a.reps), *extra])
            for name, extra in impls
            for n in (1, 2, 4)
        ]
    if "throughput" in parts or "memory" in parts:
        data = ensure_throughput_data(a.rows, folder / f"tp-{a.rows}x100-f32.h5")
    if "throughput" in parts:
        batches = [int(b) for b in a.tp_batches.split(",")]
        runs: dict[str, list[dict]] = {}
        for _ in range(a.repeats):  # interleaved: every configuration once per repetition
            for batch in batches:
                for name, extra in impls:
                    for n in (1, 2):
                        args = ["--worker", "throughput", "--data", str(data), "--epochs", str(a.epochs)]
                        res = launch(n, [*args, "--batch", str(batch), *extra])
                        runs.setdefault(f"{name}/{n}/{batch}", []).append(res)
        tp: dict = {"rows": a.rows, "repeats": a.repeats, "epochs": a.epochs, "runs": runs}
        tp["sklearn"] = launch(1, ["--worker", "sklearn_throughput", "--data", str(data), "--epochs", str(a.epochs)])
        summary: dict = {}
        for batch in batches:
            for name, _ in impls:
                one = [r["samples_per_s"] for r in runs[f"{name}/1/{batch}"]]
                two = [r["samples_per_s"] for r in runs[f"{name}/2/{batch}"]]
                sk = tp["sklearn"]
                cell = {
                    "samples_per_s_1": statistics.median(one),
                    "samples_per_s_2": statistics.median(two),
                    "speedup_2_vs_1": _ratio(two, one),
                    "vs_sklearn_epoch": statistics.median(one) / sk["samples_per_s"],
                    "vs_sklearn_fit": sk["fit_from_float32_s"]
                    / statistics.median(r["fit_s"] for r in runs[f"{name}/1/{batch}"]),
                }
                summary[f"{name}/B={batch}"] = cell
            if a.baseline_rev:
                cur = [r["samples_per_s"] for r in runs[f"current/1/{batch}"]]
                base = [r["samples_per_s"] for r in runs[f"baseline/1/{batch}"]]
                summary[f"current_over_baseline_1rank/B={batch}"] = _ratio(cur, base)
        tp["summary"] = summary
        report["throughput"] = tp
    if "accuracy" in parts:
        train, test = ensure_accuracy_data(folder)
        args = ["--data", str(train), "--test", str(test)]
        report["accuracy"] = {
            "sklearn": launch(1, ["--worker", "sklearn_accuracy", *args]),
            "hpcml_2": launch(2, ["--worker", "accuracy", *args, "--batch", str(a.batch), "--eta0", str(a.eta0)]),
        }
        runs_acc = report["accuracy"]["hpcml_2"]["runs"]
        hit = [r for r in runs_acc if r["test_accuracy"] >= a.target]
        sk_s = report["accuracy"]["sklearn"]["sklearn_SGDClassifier_log_loss"]["fit_s"]
        report["accuracy"]["hpcml_2_time_to_target_s"] = hit[0]["fit_s"] if hit else None
        report["accuracy"]["ratio_to_sklearn_sgd"] = hit[0]["fit_s"] / sk_s if hit else None
    if "memory" in parts:
        report["memory"] = launch(4, ["--worker", "memory", "--data", str(data)])
    report["loadavg_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    if a.plot:
        plot(report, a.plot)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

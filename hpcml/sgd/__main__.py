"""``mpiexec -n N python -m hpcml.sgd CONFIG.toml [--out DIR] [--demo]``.

Trains an :class:`hpcml.sgd.SGDClassifier` or :class:`hpcml.sgd.SGDRegressor`
on an HDF5 data set (each rank reads only its shard) and writes, from rank 0
only and atomically, ``model.npz``, ``model.joblib``, ``history.json`` and
``loss.png`` (when matplotlib is installed) into the output directory.

Nothing heavy is imported before the thread layout is applied: the config is
read with the standard library, then :func:`hpcml.threads.apply_layout` pins
the BLAS/OpenMP threads, then NumPy is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

from hpcml.atomicio import atomic_path, atomic_write
from hpcml.cliargs import Parser, check_out, launch_rank, make_out_dir, parse_once
from hpcml.errors import ConfigError, UsageError

PROG = "python -m hpcml.sgd"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = Parser(
        prog=PROG,
        description="Synchronous data-parallel SGD (allreduce) on HDF5 shards; run under mpiexec.",
    )
    p.add_argument("config", nargs="?", help="TOML config (optional with --demo)")
    p.add_argument("--out", help="output directory (overrides [output] dir)")
    p.add_argument("--demo", action="store_true", help="train on a synthetic classification set written to OUT")
    p.add_argument(
        "--threads-per-rank",
        type=int,
        metavar="T",
        help="BLAS/OpenMP threads per rank (overrides [run] threads_per_rank; docs/cli.md)",
    )
    return p


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (mode: 0666 less the umask)."""
    atomic_write(path, data)


def _write_with(path: str, writer: Any) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def make_demo(out_dir: str, n_samples: int = 20000, n_features: int = 20) -> tuple[str, str]:
    """Write a standardised synthetic classification set (train 80 % / test 20 %) as HDF5."""
    import numpy as np
    from sklearn.datasets import make_classification

    from hpcml.data.h5 import write_dataset

    X, y = make_classification(
        n_samples=n_samples, n_features=n_features, n_informative=10, n_redundant=4, random_state=0
    )
    n_train = int(0.8 * n_samples)
    mean, std = X[:n_train].mean(axis=0), X[:n_train].std(axis=0)
    X = (X - mean) / np.where(std > 0, std, 1.0)
    paths = []
    for name, sl in (("demo-train.h5", slice(0, n_train)), ("demo-test.h5", slice(n_train, None))):
        path = os.path.join(out_dir, name)
        _write_with(path, lambda tmp, sl=sl: write_dataset(tmp, X[sl], y[sl], source="hpcml.sgd --demo"))
        paths.append(path)
    return paths[0], paths[1]


def check_data(train: Any, test: Any | None) -> None:
    """Validate the training set and the test set (same number of features) before training."""
    from hpcml.errors import DataError
    from hpcml.sgd._io import dataset_rows

    dataset_rows(train)
    if test is None:
        return
    dataset_rows(test)
    d_train = int(train.validate()["X"][0][1])
    d_test = int(test.validate()["X"][0][1])
    if d_train != d_test:
        raise DataError(f"{test.path}: X has {d_test} features but the training set {train.path} has {d_train}")


def save_model(est: Any, out_dir: str) -> None:
    """``model.npz`` (coef, intercept, classes) and ``model.joblib``, each written atomically."""
    import joblib
    import numpy as np

    model = {"coef": est.coef_, "intercept": est.intercept_}
    if hasattr(est, "classes_"):
        model["classes"] = est.classes_
    _write_with(os.path.join(out_dir, "model.npz"), lambda tmp: np.savez(tmp, **model))
    _write_with(os.path.join(out_dir, "model.joblib"), lambda tmp: joblib.dump(est, tmp))


def distributed_score(est: Any, ds: Any, comm: Any) -> dict[str, float]:
    """Accuracy (classifier) or R^2 (regressor) of ``est`` on ``ds``; each rank scores its shard."""
    import numpy as np
    from mpi4py import MPI

    from hpcml.sgd._io import dataset_rows, read_rows
    from hpcml.sgd.sampling import shard_range

    n = dataset_rows(ds)
    start, stop = shard_range(n, comm.Get_rank(), comm.Get_size())
    X, y, _ = read_rows(ds, start, stop)
    sums = np.zeros(4)
    if X.shape[0]:
        pred = est.predict(X)
        sums[0] = X.shape[0]
        if hasattr(est, "classes_"):
            sums[1] = np.count_nonzero(pred == y)
        else:
            yf = y.astype(np.float64)
            sums[1] = float(np.sum((pred - yf) ** 2))
            sums[2] = float(yf.sum())
            sums[3] = float(np.dot(yf, yf))
    comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
    if hasattr(est, "classes_"):
        return {"n": int(sums[0]), "accuracy": float(sums[1] / sums[0])}
    ss_tot = sums[3] - sums[2] ** 2 / sums[0]
    return {"n": int(sums[0]), "r2": float(1.0 - sums[1] / ss_tot) if ss_tot > 0 else 0.0}


def plot_history(history: list[dict[str, Any]], path: str) -> str | None:
    """PNG of the loss curves; returns a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; loss.png skipped"
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="training loss")
    if history and "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], marker="s", label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("hpcml.sgd")
    ax.legend()
    fig.tight_layout()
    _write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see :mod:`hpcml.errors`)."""
    args = parse_once(build_parser(), argv)
    try:
        check_out(args.out)
        if args.threads_per_rank is not None and args.threads_per_rank < 1:
            raise UsageError("--threads-per-rank must be at least 1")
    except UsageError:
        if launch_rank() != 0:  # printed once, by rank 0
            raise SystemExit(2) from None
        raise
    from mpi4py import MPI

    from hpcml.comm import idle_barrier, raise_if_any
    from hpcml.sgd.config import load_config
    from hpcml.threads import apply_layout, limit_loaded_pools, plan_layout

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    t_start = time.perf_counter()
    cfg = None
    err: BaseException | None = None
    try:
        cfg = load_config(args.config, demo=args.demo)
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
    assert cfg is not None
    layout = apply_layout(plan_layout(comm, args.threads_per_rank or cfg.threads_per_rank))

    import numpy as np  # noqa: F401 - loaded only now, after the thread limits

    limit_loaded_pools(layout)
    from sklearn.exceptions import ConvergenceWarning

    from hpcml.data.h5 import H5Dataset
    from hpcml.sgd.estimators import SGDClassifier, SGDRegressor

    out_dir = args.out or cfg.out_dir
    err = None
    try:
        if rank == 0:
            make_out_dir(out_dir)
            if args.demo:
                cfg.data_path, cfg.test_path = make_demo(out_dir)
                cfg.X, cfg.y = "X", "y"
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
    if args.demo:
        cfg.data_path, cfg.test_path = comm.bcast((cfg.data_path, cfg.test_path), root=0)
    idle_barrier(comm)
    if cfg.data_path is None:
        raise ConfigError(f"{cfg.source}: [data] path is required")

    cls = SGDClassifier if cfg.model_type == "classifier" else SGDRegressor
    est = cls(**cfg.estimator_params, verbose=int(cfg.verbose), comm=comm)
    train = H5Dataset(cfg.data_path, X=cfg.X, y=cfg.y, sample_weight=cfg.sample_weight)
    test_ds = H5Dataset(cfg.test_path, X=cfg.X, y=cfg.y) if cfg.test_path else None
    err = None
    try:  # check both files before any training: a bad test set must not cost a fit
        check_data(train, test_ds)
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
    if rank != 0:  # one ConvergenceWarning per run, not one per rank
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
    t_fit = time.perf_counter()
    est.fit(train)
    fit_s = time.perf_counter() - t_fit
    err = None
    try:  # the model first: it is kept even if scoring fails
        if rank == 0:
            save_model(est, out_dir)
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
    test = None
    if test_ds is not None:
        err = None
        try:
            test = distributed_score(est, test_ds, comm)
        except Exception as exc:  # noqa: BLE001 - agreed below
            err = exc
        raise_if_any(comm, err)

    per_rank = comm.gather(
        {
            **est.timing_,
            "host": layout.host,
            "node": layout.node,
            "local_rank": layout.local_rank,
            "threads": layout.threads,
            "pinned": layout.pinned,
            "cpus": layout.cpus,
            "epochs_compute_s": [h["compute_s"] for h in est.history_],
            "epochs_comm_s": [h["comm_s"] for h in est.history_],
            "fit_s": fit_s,
        },
        root=0,
    )
    if rank != 0:
        return 0
    assert per_rank is not None
    epochs = []
    for i, h in enumerate(est.history_):
        rec = {k: v for k, v in h.items() if k not in ("compute_s", "comm_s")}
        rec["compute_s"] = [r["epochs_compute_s"][i] for r in per_rank]
        rec["comm_s"] = [r["epochs_comm_s"][i] for r in per_rank]
        epochs.append(rec)
    params = {k: v for k, v in est.get_params().items() if k != "comm"}
    summary: dict[str, Any] = {
        "tool": "hpcml.sgd",
        "config": cfg.source,
        "data": cfg.data_path,
        "test_data": cfg.test_path,
        "ranks": size,
        "estimator": type(est).__name__,
        "params": params,
        "n_samples": int(est.n_samples_seen_),
        "n_features": int(est.n_features_in_),
        "n_iter": int(est.n_iter_),
        "steps": int(est.t_),
        "fit_s": fit_s,
        "epochs": epochs,
        "per_rank": [{k: v for k, v in r.items() if not k.startswith("epochs_")} for r in per_rank],
        "test": test,
    }
    note = plot_history(summary["epochs"], os.path.join(out_dir, "loss.png")) if cfg.plot else None
    summary["plot"] = "loss.png" if cfg.plot and not note else None
    if note:
        summary["plot_note"] = note
        print(f"hpcml.sgd: note: {note}", file=sys.stderr)
    summary["total_s"] = time.perf_counter() - t_start
    atomic_write_bytes(os.path.join(out_dir, "history.json"), (json.dumps(summary, indent=2) + "\n").encode())
    last = est.loss_curve_[-1]
    scored = ""
    if test:
        scored = ", test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k != "n")
    print(
        f"hpcml.sgd: {type(est).__name__} on {est.n_samples_seen_} rows x {est.n_features_in_} features, "
        f"{size} rank(s): {est.n_iter_} epochs, loss {last:.5f}{scored}, fit {fit_s:.2f} s; wrote {out_dir}"
    )
    return 0


if __name__ == "__main__":
    from hpcml.comm import run_guarded

    run_guarded(main)

"""``mpiexec -n N python -m hpcml.sgd CONFIG.toml [--out DIR] [--dry-run] [--overwrite] [--demo]``.

Trains an :class:`hpcml.sgd.SGDClassifier` or :class:`hpcml.sgd.SGDRegressor`
on an HDF5 data set (each rank reads only its shard) and writes, from rank 0
only and atomically, ``model.npz``, ``model.joblib``, ``run.json`` (and its
deprecated copy ``history.json``, kept for one release) and ``loss.png`` (when
matplotlib is installed) into the output directory.  The conventions shared
with the other tools (``--out``, ``--overwrite``, ``--dry-run``, one-line
errors, ``run.json``) are in docs/cli.md.

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
from dataclasses import dataclass
from typing import Any

from hpcml.atomicio import atomic_path, atomic_write
from hpcml.cliargs import Parser, claim_out, parse_tool_args
from hpcml.errors import ConfigError

PROG = "python -m hpcml.sgd"
#: The files of a finished run (``--overwrite`` replaces them; without it a folder holding one is refused).
RESULT_FILES = ("model.npz", "model.joblib", "run.json", "history.json", "loss.png")
#: ``history.json``: the report's name before 0.x; the same document as run.json, written for one more release.
LEGACY_REPORT = "history.json"
#: Shape of the ``--demo`` set (training part: 80 %).
DEMO_SHAPE = (20000, 20)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = Parser(
        prog=PROG,
        description="Synchronous data-parallel SGD (allreduce) on HDF5 shards; run under mpiexec.",
        epilog="Exit status: 0 done, 2 bad usage/config/data, 1 anything else (docs/cli.md).",
    )
    p.add_argument("config", nargs="?", help="TOML config (optional with --demo)")
    p.add_argument("--out", help="output directory (default: [output] dir, relative to the config file)")
    p.add_argument("--demo", action="store_true", help="train on a synthetic classification set written to OUT")
    p.add_argument(
        "--threads-per-rank",
        type=int,
        metavar="T",
        help="BLAS/OpenMP threads per rank (overrides [run] threads_per_rank; docs/cli.md)",
    )
    p.add_argument("--dry-run", action="store_true", help="check config and data, print the plan, train nothing")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in the directory")
    return p


def _write_with(path: str, writer: Any) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def make_demo(out_dir: str, n_samples: int = DEMO_SHAPE[0], n_features: int = DEMO_SHAPE[1]) -> tuple[str, str]:
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line; bad usage is one line printed by rank 0 (exit 2)."""
    return parse_tool_args(build_parser(), argv)


@dataclass
class Inputs:
    """The checked inputs of a run: config, output folder, training and test sets."""

    cfg: Any
    out_dir: str
    train: Any
    test: Any | None


def _open_outputs(cfg: Any, args: argparse.Namespace) -> str:
    """Rank 0: claim the output folder (refusal, ``--overwrite``) and write the demo set; the folder."""
    out_dir = args.out or cfg.out_dir
    claim_out(out_dir, RESULT_FILES, args.overwrite, create=not args.dry_run)
    if args.demo and not args.dry_run:
        cfg.data_path, cfg.test_path = make_demo(out_dir)
        cfg.X, cfg.y = "X", "y"
    return out_dir


def prepare(args: argparse.Namespace, comm: Any) -> tuple[Inputs, Any]:
    """Config, thread layout, output folder and data sets, every step agreed by all ranks.  Collective."""
    from hpcml.comm import agree
    from hpcml.sgd.config import load_config
    from hpcml.threads import apply_layout, limit_loaded_pools, plan_layout

    cfg = agree(comm, load_config, args.config, demo=args.demo)
    layout = apply_layout(plan_layout(comm, args.threads_per_rank or cfg.threads_per_rank))
    import numpy as np  # noqa: F401 - loaded only now, after the thread limits

    limit_loaded_pools(layout)
    from hpcml.data.h5 import H5Dataset

    out_dir = agree(comm, _open_outputs if comm.Get_rank() == 0 else None, cfg, args)
    out_dir, cfg.data_path, cfg.test_path = comm.bcast((out_dir, cfg.data_path, cfg.test_path), root=0)
    if args.demo and args.dry_run:
        return Inputs(cfg, out_dir, None, None), layout
    if cfg.data_path is None:
        raise ConfigError(f"{cfg.source}: [data] path is required")
    train = H5Dataset(cfg.data_path, X=cfg.X, y=cfg.y, sample_weight=cfg.sample_weight)
    test = H5Dataset(cfg.test_path, X=cfg.X, y=cfg.y) if cfg.test_path else None
    agree(comm, check_data, train, test)  # both files before any training: a bad test set must not cost a fit
    return Inputs(cfg, out_dir, train, test), layout


def plan_text(inputs: Inputs, size: int, threads: int) -> str:
    """The ``--dry-run`` plan: rows and shards, batch size, steps per epoch, epochs, outputs."""
    from hpcml.sgd.estimators import auto_batch_size
    from hpcml.sgd.sampling import shard_range

    cfg, p = inputs.cfg, inputs.cfg.estimator_params
    if inputs.train is None:
        n, d, name = int(0.8 * DEMO_SHAPE[0]), DEMO_SHAPE[1], "the --demo set (not written)"
    else:
        (n, d), _ = inputs.train.validate()["X"]
        name = f"{cfg.data_path} '{cfg.X}'"
    shards = [stop - start for start, stop in (shard_range(n, r, size) for r in range(size))]
    n_val = round(float(p.get("validation_fraction", 0.1)) * n) if p.get("early_stopping") else 0
    batch = p.get("batch_size", "auto")
    B = auto_batch_size(n - n_val) if isinstance(batch, str) else int(batch)
    sampling = p.get("sampling", "global")
    per_step = f"{B} rows per step" + (f" ({B // size} per rank)" if sampling == "local" else "")
    held = f", about {n_val} held out for validation" if n_val else ""
    kind = "SGDClassifier" if cfg.model_type == "classifier" else "SGDRegressor"
    outputs = ", ".join(f for f in RESULT_FILES if f != "loss.png" or cfg.plot)
    return (
        f"{PROG}: dry run: {kind}(loss={p.get('loss')!r}, batch_size={batch!r}, max_iter={p.get('max_iter', 1000)}) "
        f"on {name} ({n} x {d}{held}); {size} rank(s), shards of {min(shards)}-{max(shards)} rows, "
        f"{threads} thread(s) per rank; batch {per_step}, {sampling} sampling, "
        f"{-(-(n - n_val) // B)} steps per epoch, at most {p.get('max_iter', 1000)} epochs; "
        f"would write {inputs.out_dir}: {outputs}"
    )


def train(inputs: Inputs, comm: Any) -> tuple[Any, float]:
    """Fit the configured estimator on the training set; the estimator and the fit's seconds.  Collective."""
    from sklearn.exceptions import ConvergenceWarning

    from hpcml.sgd.estimators import SGDClassifier, SGDRegressor

    cfg = inputs.cfg
    cls = SGDClassifier if cfg.model_type == "classifier" else SGDRegressor
    est = cls(**cfg.estimator_params, verbose=int(cfg.verbose), comm=comm)
    if comm.Get_rank() != 0:  # one ConvergenceWarning per run, not one per rank
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
    t_fit = time.perf_counter()
    est.fit(inputs.train)
    return est, time.perf_counter() - t_fit


def _per_rank(est: Any, layout: Any, fit_s: float) -> dict[str, Any]:
    """Timings and placement of this rank (gathered into run.json's ``per_rank``)."""
    return {
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
    }


def build_report(
    inputs: Inputs, est: Any, gathered: list[tuple[dict[str, Any], dict[str, Any]]], fit_s: float, test: Any
) -> dict[str, Any]:
    """run.json: the shared sections (:mod:`hpcml.runreport`) and the training's own (epochs, per rank, test)."""
    from hpcml.runreport import common_sections

    per_rank = [r for r, _ in gathered]
    epochs = []
    for i, h in enumerate(est.history_):
        rec = {k: v for k, v in h.items() if k not in ("compute_s", "comm_s")}
        rec["compute_s"] = [r["epochs_compute_s"][i] for r in per_rank]
        rec["comm_s"] = [r["epochs_comm_s"][i] for r in per_rank]
        epochs.append(rec)
    cfg = inputs.cfg
    return {
        **common_sections("hpcml.sgd", cfg.source, [lay for _, lay in gathered]),
        "data": cfg.data_path,
        "test_data": cfg.test_path,
        "ranks": len(per_rank),
        "estimator": type(est).__name__,
        "params": {k: v for k, v in est.get_params().items() if k != "comm"},
        "n_samples": int(est.n_samples_seen_),
        "n_features": int(est.n_features_in_),
        "n_iter": int(est.n_iter_),
        "steps": int(est.t_),
        "fit_s": fit_s,
        "epochs": epochs,
        "per_rank": [{k: v for k, v in r.items() if not k.startswith("epochs_")} for r in per_rank],
        "test": test,
    }


def write_report(summary: dict[str, Any], inputs: Inputs, started: float) -> None:
    """Rank 0: loss.png (optional), then run.json and its legacy copy history.json, atomically."""
    from hpcml.runreport import RUN_JSON, timing

    out_dir, plot = inputs.out_dir, inputs.cfg.plot
    note = plot_history(summary["epochs"], os.path.join(out_dir, "loss.png")) if plot else None
    summary["plot"] = "loss.png" if plot and not note else None
    if note:
        summary["plot_note"] = note
        print(f"hpcml.sgd: note: {note}", file=sys.stderr)
    summary["total_s"] = time.time() - started
    summary.update(timing(started))
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(os.path.join(out_dir, RUN_JSON), text)
    atomic_write(os.path.join(out_dir, LEGACY_REPORT), text)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see :mod:`hpcml.errors`)."""
    args = parse_args(argv)
    from mpi4py import MPI

    from hpcml.comm import agree

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    started = time.time()
    inputs, layout = prepare(args, comm)
    if args.dry_run:
        if rank == 0:
            print(plan_text(inputs, size, layout.threads))
        return 0
    est, fit_s = train(inputs, comm)
    agree(comm, save_model if rank == 0 else None, est, inputs.out_dir)  # the model first: kept if scoring fails
    test = agree(comm, distributed_score, est, inputs.test, comm) if inputs.test is not None else None
    gathered = comm.gather((_per_rank(est, layout, fit_s), layout.as_dict()), root=0)
    if rank != 0:
        return 0
    assert gathered is not None
    summary = build_report(inputs, est, gathered, fit_s, test)
    write_report(summary, inputs, started)
    scored = ", test " + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if k != "n") if test else ""
    print(
        f"hpcml.sgd: {type(est).__name__} on {est.n_samples_seen_} rows x {est.n_features_in_} features, "
        f"{size} rank(s): {est.n_iter_} epochs, loss {est.loss_curve_[-1]:.5f}{scored}, fit {fit_s:.2f} s; "
        f"wrote {inputs.out_dir}"
    )
    return 0


if __name__ == "__main__":
    from hpcml.comm import run_guarded

    run_guarded(main)

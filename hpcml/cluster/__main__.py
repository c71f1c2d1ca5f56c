"""``mpiexec -n N python -m hpcml.cluster CONFIG.toml [--out DIR] [--threads-per-rank T] [--dry-run] [--overwrite]``.

Fits an :class:`hpcml.cluster.KMeans` on an HDF5 data set (each rank reads only
its shard) and writes ``model.h5``, ``model.joblib`` (rank 0, atomically),
``labels.h5`` (one int32 label per row, every rank writing its rows) and
``run.json`` into the output directory.  Nothing heavy is imported before the
thread layout is applied.  The conventions shared with the other tools are in
docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from typing import Any

from hpcml.atomicio import atomic_write
from hpcml.cliargs import Parser, claim_out, parse_tool_args
from hpcml.errors import ConfigError, DataError

PROG = "python -m hpcml.cluster"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = Parser(
        prog=PROG,
        description="Distributed KMeans on HDF5 shards; run under mpiexec.",
        epilog="Exit status: 0 done, 2 bad usage/config/data, 1 anything else (docs/cli.md).",
    )
    p.add_argument("config", help="TOML config (docs/kmeans.md)")
    p.add_argument("--out", help="output directory (default: [output] dir, relative to the config file)")
    p.add_argument(
        "--threads-per-rank",
        type=int,
        metavar="T",
        help="BLAS/OpenMP threads per rank (overrides [run] threads_per_rank; docs/cli.md)",
    )
    p.add_argument("--dry-run", action="store_true", help="check the config and the data, print the plan, fit nothing")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in the directory")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check the command line; bad usage is one line printed by rank 0 (exit 2)."""
    return parse_tool_args(build_parser(), argv)


def _load_init(cfg: Any, n_features: int) -> Any:
    """The ``[model] init_centers`` array, checked against ``(n_clusters, n_features)``."""
    import numpy as np

    where = f"{cfg.source} [model] init_centers"
    try:
        init = np.load(cfg.init_centers, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {cfg.init_centers} ({exc})") from None
    k = cfg.params["n_clusters"]
    if init.shape != (k, n_features):
        raise ConfigError(f"{where}: {cfg.init_centers} has shape {init.shape}, expected ({k}, {n_features})")
    if not np.issubdtype(init.dtype, np.number) or not np.isfinite(init).all():
        raise ConfigError(f"{where}: {cfg.init_centers} must hold finite numbers (it has NaN, infinity or non-numbers)")
    return init


def _check_inputs(cfg: Any, comm: Any) -> tuple[Any, Any]:
    """The data set and the estimator, checked (every rank; agreed by the caller)."""
    import numpy as np

    from hpcml.cluster.kmeans import KMeans
    from hpcml.data.h5 import H5Dataset

    ds = H5Dataset(cfg.data_path, X=cfg.X, y=None, sample_weight=cfg.sample_weight)
    info = ds.validate()
    if info.get("sparse"):
        raise ConfigError(f"{cfg.data_path}: X '{cfg.X}' is sparse (CSR); hpcml.cluster needs dense X")
    if info.get("text") or not np.issubdtype(info["X"][1], np.number):
        raise DataError(f"{cfg.data_path}: X '{cfg.X}' holds {info['X'][1]} values; hpcml.cluster needs numbers")
    params = dict(cfg.params)
    (n, d), _ = info["X"]
    if cfg.init_centers:
        params["init"] = _load_init(cfg, d)
    if n < params["n_clusters"]:
        raise DataError(f"{cfg.data_path}: n_samples={n} should be >= n_clusters={params['n_clusters']}.")
    return KMeans(**params, verbose=int(cfg.verbose and comm.Get_rank() == 0), comm=comm), ds


def _prepare(cfg: Any, args: Any, comm: Any) -> tuple[Any, Any, str]:
    """Estimator, data set and output directory, checked on every rank.  Collective."""
    from hpcml.cluster._output import RESULT_FILES
    from hpcml.comm import agree

    out_dir = args.out or cfg.out_dir
    est, ds = agree(comm, _check_inputs, cfg, comm)
    claim = claim_out if comm.Get_rank() == 0 else None
    agree(comm, claim, out_dir, RESULT_FILES, args.overwrite, create=not args.dry_run)
    return est, ds, out_dir


def _dry_run(cfg: Any, ds: Any, out_dir: str, layout: Any, size: int) -> None:
    info = ds.validate()
    (n, d), dtype = info["X"]
    per = -(-n // size)
    mb = per * d * dtype.itemsize / 1e6
    init = "init_centers " + str(cfg.init_centers) if cfg.init_centers else f"init={cfg.params['init']!r}"
    print(
        f"{PROG}: dry run: KMeans(n_clusters={cfg.params['n_clusters']}, {init}, n_init={cfg.params['n_init']!r}, "
        f"max_iter={cfg.params['max_iter']}, tol={cfg.params['tol']}) on {cfg.data_path} '{cfg.X}' "
        f"({n} x {d} {dtype.name}); {size} rank(s), up to {per} rows ({mb:.1f} MB) each, "
        f"{layout.threads} thread(s) per rank; would write {out_dir}: model.h5, model.joblib"
        f"{', labels.h5' if cfg.labels else ''}, run.json"
    )


def _write_outputs(cfg: Any, est: Any, comm: Any, out_dir: str, layout: Any, fit_s: float, started: float) -> None:
    """model.h5/model.joblib (rank 0), labels.h5 (every rank), then run.json (rank 0).  Collective."""
    import resource

    from hpcml.cluster._output import save_model, write_labels
    from hpcml.comm import agree
    from hpcml.runreport import common_sections, timing

    agree(comm, save_model if comm.Get_rank() == 0 else None, est, out_dir)  # the model first: kept if labels fail
    start, stop = est.shard_
    if cfg.labels:
        write_labels(comm, os.path.join(out_dir, "labels.h5"), est.labels_, start, est.n_samples_)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_rank = comm.gather(
        {
            **{k: v for k, v in est.timing_.items()},
            "rows": stop - start,
            "host": layout.host,
            "threads": layout.threads,
            "cpus": layout.cpus,
            "peak_rss_mb": peak_mb,
        },
        root=0,
    )
    layouts = comm.gather(layout.as_dict(), root=0)
    if comm.Get_rank() != 0:
        return
    params = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in est.get_params().items() if k != "comm"}
    summary = {
        **common_sections("hpcml.cluster", cfg.source, layouts),
        "data": cfg.data_path,
        "ranks": comm.Get_size(),
        "params": params,
        "n_samples": est.n_samples_,
        "n_features": int(est.n_features_in_),
        "inertia": est.inertia_,
        "n_iter": est.n_iter_,
        "fit_s": fit_s,
        "per_rank": per_rank,
        "outputs": ["model.h5", "model.joblib"] + (["labels.h5"] if cfg.labels else []),
        "total_s": time.time() - started,
        **timing(started),
    }
    atomic_write(os.path.join(out_dir, "run.json"), json.dumps(summary, indent=2) + "\n")
    print(
        f"{PROG}: KMeans(n_clusters={est.n_clusters}) on {est.n_samples_} rows x {est.n_features_in_} features, "
        f"{comm.Get_size()} rank(s): {est.n_iter_} iterations, inertia {est.inertia_:.6g}, fit {fit_s:.2f} s; "
        f"wrote {out_dir}"
    )


def _stop_on_sigterm() -> None:
    """SIGTERM (``scancel``, a walltime warning) ends the run as Ctrl-C does: one line, exit 130, no partial file.

    Python's default for SIGTERM is to die silently; raised as ``KeyboardInterrupt``
    it goes through :func:`hpcml.comm.guard.run_guarded` (a rank still inside a
    collective is ended by ``MPI_Abort``).  A fit has no partial result to keep:
    the outputs are written to temporary files and renamed at the end.
    """
    import signal

    from hpcml.signals import _announce_ready

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    _announce_ready()  # tests only ($HPCML_READY_FILE): the handler is in place


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see :mod:`hpcml.errors`)."""
    args = parse_args(argv)
    from mpi4py import MPI

    from hpcml.cluster.config import load_config
    from hpcml.comm import agree
    from hpcml.threads import apply_layout, limit_loaded_pools, plan_layout

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    _stop_on_sigterm()
    started = time.time()
    cfg = agree(comm, load_config, args.config)
    layout = apply_layout(plan_layout(comm, args.threads_per_rank or cfg.threads_per_rank))
    import numpy as np  # noqa: F401 - loaded only now, after the thread limits

    limit_loaded_pools(layout)
    from sklearn.exceptions import ConvergenceWarning

    est, ds, out_dir = _prepare(cfg, args, comm)
    if args.dry_run:
        if rank == 0:
            _dry_run(cfg, ds, out_dir, layout, size)
        return 0
    if rank != 0:  # one ConvergenceWarning per run, not one per rank
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
    t_fit = time.perf_counter()
    est.fit(ds)
    fit_s = time.perf_counter() - t_fit
    import signal

    # a signal while the results are written is held until they all are (then it ends the run, exit 130):
    # never a model without its labels or run.json
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        _write_outputs(cfg, est, comm, out_dir, layout, fit_s, started)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return 0


if __name__ == "__main__":
    from hpcml.comm import run_guarded

    run_guarded(main)

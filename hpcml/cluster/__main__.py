"""``mpiexec -n N python -m hpcml.cluster CONFIG.toml [--out DIR] [--dry-run] [--overwrite]``.

Fits an :class:`hpcml.cluster.KMeans` on an HDF5 data set (each rank reads only
its shard) and writes ``model.h5``, ``model.joblib`` (rank 0, atomically),
``labels.h5`` (one int32 label per row, every rank writing its rows) and
``run.json`` into the output directory.  Nothing heavy is imported before the
thread layout is applied.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

from hpcml.errors import ConfigError, DataError, UsageError

PROG = "python -m hpcml.cluster"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = _Parser(prog=PROG, description="Distributed KMeans on HDF5 shards; run under mpiexec.")
    p.add_argument("config", help="TOML config (docs/kmeans.md)")
    p.add_argument("--out", help="output directory (overrides [output] dir)")
    p.add_argument("--dry-run", action="store_true", help="check the config and the data, print the plan, fit nothing")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in the directory")
    return p


def _check_out(out_dir: str, overwrite: bool) -> None:
    from hpcml.cluster._output import RESULT_FILES

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"{out_dir}: exists and is not a directory")
    held = [f for f in RESULT_FILES if os.path.exists(os.path.join(out_dir, f))]
    if held and not overwrite:
        raise ConfigError(
            f"{out_dir} holds results of an earlier run ({', '.join(held)}); use --overwrite or another --out"
        )


def _prepare(cfg: Any, args: Any, comm: Any) -> tuple[Any, Any, str]:
    """Estimator, data set and output directory, checked on every rank.  Collective."""
    import numpy as np

    from hpcml.cluster.kmeans import KMeans
    from hpcml.comm import raise_if_any
    from hpcml.data.h5 import H5Dataset

    out_dir = args.out or cfg.out_dir
    err: BaseException | None = None
    est = ds = None
    try:
        ds = H5Dataset(cfg.data_path, X=cfg.X, y=None, sample_weight=cfg.sample_weight)
        info = ds.validate()
        if info.get("sparse"):
            raise ConfigError(f"{cfg.data_path}: X '{cfg.X}' is sparse (CSR); hpcml.cluster needs dense X")
        if info.get("text") or not np.issubdtype(info["X"][1], np.number):
            raise DataError(f"{cfg.data_path}: X '{cfg.X}' holds {info['X'][1]} values; hpcml.cluster needs numbers")
        params = dict(cfg.params)
        if cfg.init_centers:
            try:
                params["init"] = np.load(cfg.init_centers, allow_pickle=False)
            except (OSError, ValueError) as exc:
                where = f"{cfg.source} [model] init_centers"
                raise ConfigError(f"{where}: cannot read {cfg.init_centers} ({exc})") from None
            k, d = params["n_clusters"], info["X"][0][1]
            if params["init"].shape != (k, d):
                raise ConfigError(
                    f"{cfg.source} [model] init_centers: {cfg.init_centers} has shape "
                    f"{params['init'].shape}, expected ({k}, {d})"
                )
            if not np.issubdtype(params["init"].dtype, np.number) or not np.isfinite(params["init"]).all():
                raise ConfigError(
                    f"{cfg.source} [model] init_centers: {cfg.init_centers} must hold finite numbers "
                    "(it has NaN, infinity or non-numbers)"
                )
        if info["X"][0][0] < params["n_clusters"]:
            raise DataError(
                f"{cfg.data_path}: n_samples={info['X'][0][0]} should be >= n_clusters={params['n_clusters']}."
            )
        est = KMeans(**params, verbose=int(cfg.verbose), comm=comm)
        if comm.Get_rank() == 0:
            _check_out(out_dir, args.overwrite)
            if not args.dry_run:
                os.makedirs(out_dir, exist_ok=True)
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
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


def _write_outputs(cfg: Any, est: Any, comm: Any, out_dir: str, layout: Any, fit_s: float, t_start: float) -> None:
    """model.h5/model.joblib (rank 0), labels.h5 (every rank), then run.json (rank 0).  Collective."""
    import resource

    from hpcml.cluster._output import save_model, write_labels
    from hpcml.comm import raise_if_any
    from hpcml.sgd.__main__ import atomic_write_bytes

    err: BaseException | None = None
    try:  # the model first: it is kept even if writing the labels fails
        if comm.Get_rank() == 0:
            save_model(est, out_dir)
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
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
    if comm.Get_rank() != 0:
        return
    params = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in est.get_params().items() if k != "comm"}
    summary = {
        "tool": "hpcml.cluster",
        "config": cfg.source,
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
        "total_s": time.perf_counter() - t_start,
    }
    atomic_write_bytes(os.path.join(out_dir, "run.json"), (json.dumps(summary, indent=2) + "\n").encode())
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
    from mpi4py import MPI

    from hpcml.comm import raise_if_any
    from hpcml.threads import apply_layout, limit_loaded_pools, plan_layout

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    _stop_on_sigterm()
    t_start = time.perf_counter()
    cfg = err = args = None
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        from hpcml.cluster.config import load_config

        cfg = load_config(args.config)
    except Exception as exc:  # noqa: BLE001 - agreed below
        err = exc
    raise_if_any(comm, err)
    assert cfg is not None and args is not None
    layout = apply_layout(plan_layout(comm, cfg.threads_per_rank))
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
        _write_outputs(cfg, est, comm, out_dir, layout, fit_s, t_start)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return 0


if __name__ == "__main__":
    from hpcml.comm import run_guarded

    run_guarded(main)

"""Cost of the resume fingerprint (every byte, SHA-256, shared by the ranks) next to loading the data.

    python benchmarks/bench_fingerprint.py [--mib 256] [--repeats 3] [--plot F.png] [--json F.json]

One HDF5 file of ``--mib`` MiB of float64 X (plus y) is written once.  Contenders,
interleaved ``--repeats`` times in this one run, each in ``mpiexec -n N``:

* ``load``: ``hpcml.data.shared.load_arrays`` (what every CLI run does anyway);
* ``full_sha256``: :func:`hpcml.data.fingerprint.fingerprints` over the loaded arrays
  (the scheme of docs/reliability.md) at 1 and 2 ranks;
* ``sampled_rows``: the former scheme (names, shapes, dtypes and 5 sampled rows per
  dataset, ``H5Dataset.fingerprint``), which missed in-place edits.

The ratio that matters is ``full_sha256 / load``: what the check adds to a run's start.
The machine is shared: ``os.getloadavg()`` is recorded at start and end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SCRIPT = os.path.abspath(__file__)


def _worker(path: str) -> None:
    """Inside mpiexec: time load, full fingerprint and the sampled scheme; rank 0 prints JSON."""
    import json

    from mpi4py import MPI

    from hpcml.data.fingerprint import fingerprints
    from hpcml.data.h5 import H5Dataset
    from hpcml.data.shared import load_arrays

    comm = MPI.COMM_WORLD
    ds = H5Dataset(path)
    comm.Barrier()
    t0 = time.perf_counter()
    arrays, _ = load_arrays(ds, comm)
    comm.Barrier()
    t1 = time.perf_counter()
    fingerprints(dict(arrays), comm)
    comm.Barrier()
    t2 = time.perf_counter()
    if comm.Get_rank() == 0:
        ds.fingerprint()
    t3 = time.perf_counter()
    if comm.Get_rank() == 0:
        print(json.dumps({"load": t1 - t0, "full_sha256": t2 - t1, "sampled_rows": t3 - t2}))
    arrays.close()


def _write(folder: str, mib: int) -> str:
    import numpy as np

    from hpcml.data.h5 import write_dataset

    n_features = 64
    rows = (mib << 20) // (8 * n_features)
    X = np.random.default_rng(0).normal(size=(rows, n_features))
    path = os.path.join(folder, "fp.h5")
    write_dataset(path, X, (X[:, 0] > 0).astype(np.int64))
    return path


def main() -> None:
    """Run the benchmark; print one JSON document."""
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--plot")
    p.add_argument("--json")
    p.add_argument("--worker")
    args = p.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    doc = {"benchmark": "fingerprint", "environment": C.environment(), "mib": args.mib, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, args.mib)
        env = C.child_env(C.pin_blas_env(1))
        for rep in range(args.repeats):
            for n in (1, 2):
                _, out, _ = C.run([C.mpiexec(), "-n", str(n), C.PYTHON, SCRIPT, "--worker", path], env=env, timeout=600)
                doc["runs"].append({"repeat": rep, "ranks": n, **C.last_json(out)})
    for n in (1, 2):
        rows = [r for r in doc["runs"] if r["ranks"] == n]
        doc[f"ranks_{n}"] = {key: C.summary([r[key] for r in rows]) for key in ("load", "full_sha256", "sampled_rows")}
        doc[f"ranks_{n}"]["full_over_load"] = C.summary([r["full_sha256"] / r["load"] for r in rows])
        doc[f"ranks_{n}"]["gb_per_s_full"] = C.summary([args.mib / 1024 / r["full_sha256"] for r in rows])
    C.finish(doc, args, _plot)


def _plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    keys = ("load", "full_sha256", "sampled_rows")
    for i, n in enumerate((1, 2)):
        vals = [doc[f"ranks_{n}"][k]["median"] for k in keys]
        ax.bar([j + 0.4 * i for j in range(3)], vals, width=0.4, label=f"{n} rank(s)")
    ax.set_xticks([j + 0.2 for j in range(3)], keys)
    ax.set_ylabel("seconds (median)")
    ax.legend()
    C.save_figure(fig, doc, f"fingerprint of {doc['mib']} MiB", path)


if __name__ == "__main__":
    main()

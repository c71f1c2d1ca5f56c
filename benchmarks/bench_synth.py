"""Synthetic data generation: GB/s written by `python -m hpcml.data synth` at 1 and 2 ranks.

    python benchmarks/bench_synth.py --n-samples 1000000 --n-features 100 --ranks 1 2 [--plot synth.png]

Compared with an in-memory copy of the same number of bytes.  Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def mpiexec() -> str:
    cand = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return cand if os.path.exists(cand) else "mpiexec"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-samples", type=int, default=1_000_000)
    p.add_argument("--n-features", type=int, default=100)
    p.add_argument("--kind", default="classification")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dir", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args()

    tmp = tempfile.mkdtemp(dir=args.dir)
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    runs = {}
    digests = set()
    for n in args.ranks:
        out = os.path.join(tmp, f"synth-{n}.h5")
        t = time.perf_counter()
        res = subprocess.run(
            [
                mpiexec(),
                "-n",
                str(n),
                sys.executable,
                "-m",
                "hpcml.data",
                "synth",
                out,
                "--n-samples",
                str(args.n_samples),
                "--n-features",
                str(args.n_features),
                "--kind",
                args.kind,
                "--dtype",
                args.dtype,
                "--json",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        wall = time.perf_counter() - t
        info = json.loads(res.stdout)
        runs[str(n)] = {
            "gb": info["bytes"] / 1e9,
            "seconds": info["seconds"],
            "gb_per_s": info["bytes"] / info["seconds"] / 1e9,
            "wall_seconds_with_startup": wall,
        }
        import hashlib

        h = hashlib.sha256()
        with open(out, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
        digests.add(h.hexdigest())
        os.unlink(out)
    os.rmdir(tmp)
    nbytes = args.n_samples * args.n_features * np.dtype(args.dtype).itemsize
    a = np.ones(nbytes // 8)
    b = np.empty_like(a)
    t = time.perf_counter()
    np.copyto(b, a)
    copy = nbytes / (time.perf_counter() - t) / 1e9
    report = {
        "n_samples": args.n_samples,
        "n_features": args.n_features,
        "kind": args.kind,
        "dtype": args.dtype,
        "ranks": runs,
        "memory_copy_gb_per_s": copy,
        "byte_identical_across_rank_counts": len(digests) == 1,
    }
    print(json.dumps(report, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        labels = [f"synth {k} rank(s)" for k in runs] + ["memory copy"]
        ax.barh(labels, [r["gb_per_s"] for r in runs.values()] + [copy])
        ax.set_xlabel("GB/s")
        fig.tight_layout()
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()

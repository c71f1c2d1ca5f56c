"""Read bandwidth: H5Dataset full and fold reads vs np.load vs an in-memory copy, warm and cold cache.

    python benchmarks/bench_io.py --rows 500000 --features 100 [--plot io.png]

Cold-cache numbers drop the files from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)`` before every read (Linux).  Prints JSON (GB/s).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from hpcml.data.h5 import H5Dataset, write_dataset


def drop_cache(path: str) -> bool:
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def best(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--features", type=int, default=100)
    p.add_argument("--dtype", default="float64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fold-fraction", type=float, default=0.8, help="share of rows in a random (train) fold")
    p.add_argument("--dir", default=None, help="where to write the files (default: a temp dir)")
    p.add_argument("--plot", default=None)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.rows, args.features)).astype(args.dtype)
    y = rng.integers(0, 2, args.rows)
    gb = X.nbytes / 1e9
    tmp = tempfile.mkdtemp(dir=args.dir)
    npy, h5 = os.path.join(tmp, "X.npy"), os.path.join(tmp, "X.h5")
    np.save(npy, X)
    write_dataset(h5, X, y)
    ds = H5Dataset(h5)
    idx = np.sort(rng.choice(args.rows, int(args.fold_fraction * args.rows), replace=False))
    fold_gb = idx.size * X.shape[1] * X.itemsize / 1e9
    assert np.array_equal(ds.read("X"), X) and np.array_equal(ds.read_indices(idx), X[idx])

    out = np.empty_like(X)
    results: dict[str, float] = {}
    for cache in ("warm", "cold"):
        before = (lambda: (drop_cache(npy), drop_cache(h5))) if cache == "cold" else None
        if cache == "warm":
            np.load(npy)
            ds.read("X")
        results[f"h5_full_{cache}"] = gb / best(lambda: ds.read("X"), args.repeats, before)
        results[f"h5_full_prealloc_{cache}"] = gb / best(lambda: ds.read("X", out=out), args.repeats, before)
        results[f"npload_full_{cache}"] = gb / best(lambda: np.load(npy), args.repeats, before)
        results[f"h5_fold_{cache}"] = fold_gb / best(lambda: ds.read_indices(idx), args.repeats, before)
        results[f"npy_mmap_fold_{cache}"] = fold_gb / best(
            lambda: np.load(npy, mmap_mode="r")[idx], args.repeats, before
        )
    results["memory_copy"] = gb / best(lambda: np.copyto(out, X), args.repeats)
    results["memory_fold_take"] = fold_gb / best(lambda: X[idx], args.repeats)
    report = {
        "rows": args.rows,
        "features": args.features,
        "dtype": args.dtype,
        "gb": gb,
        "fold_fraction": args.fold_fraction,
        "gb_per_s": results,
        "full_read_vs_npload_warm": results["h5_full_warm"] / results["npload_full_warm"],
        "full_read_vs_npload_cold": results["h5_full_cold"] / results["npload_full_cold"],
    }
    print(json.dumps(report, indent=2))
    for f in (npy, h5):
        os.unlink(f)
    os.rmdir(tmp)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh(list(results), list(results.values()))
        ax.set_xlabel("GB/s")
        ax.set_title(f"read bandwidth, {gb:.2f} GB {args.dtype}")
        fig.tight_layout()
        fig.savefig(args.plot)


if __name__ == "__main__":
    main()

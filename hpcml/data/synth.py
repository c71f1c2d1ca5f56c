"""Parallel synthetic data sets, byte-identical for any number of ranks.

Design
------
The rows are cut into fixed-size blocks of ``block_rows`` rows (about 4 MiB of
X each, a function of the number of features and the dtype only).  Block ``b``
is generated from its own random stream ``SeedSequence(seed, spawn_key=(1, b))``
and the model shared by all blocks (cluster centres, class means, regression
coefficients) from ``SeedSequence(seed, spawn_key=(0,))``, so the content of
every block depends only on ``(seed, b)`` and the parameters.

Rank 0 creates the output file with every chunk allocated up front (HDF5
``ALLOC_TIME_EARLY``, one chunk per block, no fill, no filters) and broadcasts
the byte offset of each chunk.  The ranks then generate disjoint, contiguous
ranges of blocks in parallel and ``pwrite`` each block's raw bytes straight
into its chunk -- no HDF5 call is made while data are written, so there is no
concurrent HDF5 access at all.  The result is one ordinary HDF5 file whose bytes
are the same whatever the rank count.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml.comm import agree, resolve_comm
from hpcml.data.h5 import default_chunk_rows, set_file_attrs, shard_bounds
from hpcml.errors import DataError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

KINDS = ("blobs", "classification", "regression")


class Model:
    """The parameters shared by every block of one synthetic data set.

    Parameters
    ----------
    kind : {"blobs", "classification", "regression"}
        ``blobs``: isotropic Gaussian clusters around uniform centres in
        ``[-10, 10]``; ``classification``: unit Gaussian features, the first
        ``n_informative`` shifted by ``+-class_sep`` per class, 1 % of labels
        flipped; ``regression``: unit Gaussian features, ``y = X @ coef + noise``
        with ``n_informative`` non-zero coefficients.
    n_features : int
        Columns of X.
    seed : int
        Root seed.
    n_classes : int, optional
        Classes (blobs: 3, classification: 2 by default).
    dtype : numpy dtype
        Float type of X.
    centers : ndarray of shape (n_classes, n_features), optional
        blobs: the cluster centres (``make_blobs(centers=...)``) instead of uniform ones.
    cluster_std : float, default 1.0
        blobs: standard deviation of every cluster.
    """

    def __init__(
        self,
        kind: str,
        n_features: int,
        seed: int,
        n_classes: int | None = None,
        dtype: Any = np.float64,
        centers: Any = None,
        cluster_std: float = 1.0,
    ) -> None:
        if kind not in KINDS:
            raise UsageError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
        self.kind = kind
        self.n_features = int(n_features)
        self.seed = int(seed)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))
        self.cluster_std = float(cluster_std)
        if centers is not None:
            centers = np.asarray(centers, dtype=np.float64)
            if kind != "blobs" or centers.ndim != 2 or centers.shape[1] != self.n_features or not len(centers):
                raise UsageError(
                    f"--centers must be a (n_clusters, {self.n_features}) array for --kind blobs, "
                    f"got shape {centers.shape} for --kind {kind}"
                )
            if not np.isfinite(centers).all():
                raise UsageError("--centers contains NaN or infinity")
            if n_classes is not None and n_classes != len(centers):
                raise UsageError(f"--n-classes {n_classes} does not match the {len(centers)} centres of --centers")
            n_classes = len(centers)
        if not (self.cluster_std >= 0 and np.isfinite(self.cluster_std)):
            raise UsageError(f"--cluster-std must be a finite number >= 0, got {cluster_std}")
        self.n_classes = int(n_classes or (3 if kind == "blobs" else 2))
        if kind != "regression" and self.n_classes < 2:
            raise UsageError(f"--n-classes must be at least 2, got {self.n_classes}")
        self.n_informative = max(1, min(self.n_features, max(2, self.n_features // 2)))
        if kind == "blobs":
            self.centers = (
                centers if centers is not None else rng.uniform(-10.0, 10.0, size=(self.n_classes, self.n_features))
            )
        elif kind == "classification":
            signs = rng.choice(np.array([-1.0, 1.0]), size=(self.n_classes, self.n_informative))
            self.means = signs * 1.0
        else:
            self.coef = np.zeros(self.n_features)
            self.coef[: self.n_informative] = 100.0 * rng.uniform(size=self.n_informative)
            self.bias = 0.0
            self.noise = 1.0

    @property
    def y_dtype(self) -> np.dtype:
        """int64 labels for classification, float64 targets for regression."""
        return np.dtype(np.float64) if self.kind == "regression" else np.dtype(np.int64)

    def block(self, index: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of block ``index`` (``rows`` of them), a function of ``(seed, index)`` only."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1, int(index))))
        F = self.n_features
        gen_dtype = self.dtype if self.dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.float64
        if self.kind == "regression":
            X = rng.standard_normal((rows, F), dtype=gen_dtype)
            y = X.astype(np.float64, copy=False) @ self.coef + self.bias + self.noise * rng.standard_normal(rows)
            return X.astype(self.dtype, copy=False), y
        y = rng.integers(0, self.n_classes, size=rows, dtype=np.int64)
        X = rng.standard_normal((rows, F), dtype=gen_dtype)
        if self.kind == "blobs":
            if self.cluster_std != 1.0:
                X *= self.cluster_std
            X += self.centers[y].astype(gen_dtype, copy=False)
        else:
            X[:, : self.n_informative] += self.means[y].astype(gen_dtype, copy=False)
            flip = rng.random(rows) < 0.01
            y[flip] = rng.integers(0, self.n_classes, size=int(flip.sum()), dtype=np.int64)
        return X.astype(self.dtype, copy=False), y


def _create(path: str, n_samples: int, model: Model, block_rows: int, source: str) -> list[tuple[int, int]]:
    """Create the file with every chunk allocated; return ``[(x_offset, y_offset)]`` per block."""
    import h5py

    F = model.n_features
    n_blocks = -(-n_samples // block_rows)
    with h5py.File(path, "w") as fh:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dcpl.set_chunk((block_rows, F))
        X = fh.create_dataset("X", shape=(n_samples, F), dtype=model.dtype, dcpl=dcpl)
        dcpl_y = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl_y.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl_y.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        dcpl_y.set_chunk((block_rows,))
        y = fh.create_dataset("y", shape=(n_samples,), dtype=model.y_dtype, dcpl=dcpl_y)
        offsets = []
        for b in range(n_blocks):
            xi = X.id.get_chunk_info_by_coord((b * block_rows, 0))
            yi = y.id.get_chunk_info_by_coord((b * block_rows,))
            if xi.byte_offset is None or yi.byte_offset is None:
                raise RuntimeError(f"chunk {b} was not allocated")
            offsets.append((int(xi.byte_offset), int(yi.byte_offset)))
        set_file_attrs(fh, n_samples, source)
        fh.attrs["synth_kind"] = model.kind
        fh.attrs["synth_seed"] = model.seed
        fh.attrs["synth_block_rows"] = block_rows
        fh.attrs["synth_n_classes"] = model.n_classes
        if model.kind == "blobs":
            fh.create_dataset("centers", data=model.centers)
    return offsets


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def synth(
    path: str,
    n_samples: int,
    n_features: int,
    *,
    kind: str = "classification",
    seed: int = 0,
    n_classes: int | None = None,
    dtype: Any = np.float64,
    block_rows: int | None = None,
    comm: MPI.Intracomm | None = None,
    centers: Any = None,
    cluster_std: float = 1.0,
    overwrite: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Generate a synthetic data set into ``path`` in parallel.  Collective over ``comm``.

    Parameters
    ----------
    path : str
        Output HDF5 file (replaced if it exists, unless ``overwrite=False``).
    n_samples, n_features : int
        Shape of X.
    kind : {"blobs", "classification", "regression"}
        Generator (see :class:`Model`).
    seed : int
        Root seed; the file is a function of the parameters only.
    n_classes : int, optional
        Classes for blobs/classification.
    dtype : numpy dtype
        float32 or float64.
    block_rows : int, optional
        Rows per block and per chunk (default about 4 MiB of X).
    comm : mpi4py.MPI.Intracomm, optional
        Ranks that generate; default ``MPI.COMM_WORLD``.
    centers : array of shape (n_classes, n_features), optional
        blobs: the cluster centres (default: uniform in ``[-10, 10]``).
    cluster_std : float, default 1.0
        blobs: standard deviation of the clusters.
    overwrite : bool, default True
        ``False`` (the command line without ``--overwrite``): an existing
        ``path`` is refused (:class:`UsageError`) instead of replaced.
    dry_run : bool, default False
        Check everything, write nothing; ``bytes`` is then what would be written.

    Returns
    -------
    dict
        ``rows``, ``features``, ``blocks``, ``bytes`` (of X and y), ``seconds``
        (wall time, agreed maximum) and ``ranks`` (and ``dry_run``).
    """
    from mpi4py import MPI

    comm = resolve_comm(comm)
    t0 = time.perf_counter()
    path = os.fspath(path)
    create = comm.Get_rank() == 0
    params = (n_samples, n_features, kind, seed, n_classes, dtype, block_rows)
    agree(comm, _check_path if create else None, path, overwrite)
    if dry_run:
        model, rows, _ = agree(comm, _prepare, path, *params, False, centers, cluster_std)
        return _plan(model, n_samples, rows, comm.Get_size())
    model, rows, offsets = agree(comm, _prepare, path, *params, create, centers, cluster_std)
    offsets = comm.bcast(offsets, root=0)
    n_blocks = len(offsets)
    lo, hi = shard_bounds(n_blocks, comm.Get_rank(), comm.Get_size())
    written = agree(comm, _write_blocks, path, model, offsets[lo:hi], range(lo, hi), rows, n_samples)
    total = comm.allreduce(written, op=MPI.SUM)
    seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    return {
        "rows": n_samples,
        "features": n_features,
        "blocks": n_blocks,
        "block_rows": rows,
        "bytes": int(total),
        "seconds": seconds,
        "ranks": comm.Get_size(),
    }


def _plan(model: Model, n_samples: int, rows: int, ranks: int) -> dict[str, Any]:
    """What :func:`synth` would write (``dry_run``): the shape, the blocks and the bytes of X and y."""
    per_row = model.n_features * model.dtype.itemsize + model.y_dtype.itemsize
    return {
        "rows": n_samples,
        "features": model.n_features,
        "blocks": -(-n_samples // rows),
        "block_rows": rows,
        "bytes": n_samples * per_row,
        "seconds": 0.0,
        "ranks": ranks,
        "dry_run": True,
    }


def _check_path(path: str, overwrite: bool) -> None:
    """Rank 0: the output's folder exists; an existing file is refused unless ``overwrite``."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"{path}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{path}: output is a directory; give a file name such as {os.path.join(path, 'data.h5')}")
    if not overwrite and os.path.exists(path):
        raise UsageError(f"{path}: output file already exists; use --overwrite to replace it or another output name")


def _prepare(
    path: str,
    n_samples: int,
    n_features: int,
    kind: str,
    seed: int,
    n_classes: int | None,
    dtype: Any,
    block_rows: int | None,
    create: bool,
    centers: Any = None,
    cluster_std: float = 1.0,
) -> tuple[Model, int, list[tuple[int, int]] | None]:
    """Check the parameters; with ``create``, create the file.  Returns (model, rows per block, chunk offsets)."""
    if n_samples < 1 or n_features < 1:
        raise UsageError(f"--n-samples and --n-features must be positive, got {n_samples} x {n_features}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise UsageError(f"--dtype must be a float type, got {dtype}")
    model = Model(kind, n_features, seed, n_classes, dtype, centers=centers, cluster_std=cluster_std)
    rows = int(block_rows or default_chunk_rows(n_features, dtype.itemsize))
    if rows < 1:
        raise UsageError(f"--block-rows must be positive, got {rows}")
    rows = min(rows, n_samples)
    if not create:
        return model, rows, None
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DataError(f"{path}: directory {parent} does not exist")
    source = (
        f"hpcml.data synth --kind {kind} --n-samples {n_samples} --n-features {n_features} "
        f"--seed {seed} --dtype {dtype.name}"
    )
    if centers is not None or cluster_std != 1.0:
        source += f" --cluster-std {cluster_std}" + (" --centers (given)" if centers is not None else "")
    try:
        return model, rows, _create(path, n_samples, model, rows, source)
    except OSError as exc:
        raise DataError(f"{path}: cannot create ({exc})") from None


def _write_blocks(
    path: str, model: Model, offsets: list[tuple[int, int]], blocks: range, rows: int, n_samples: int
) -> int:
    """Generate ``blocks`` and ``pwrite`` each into its chunk (``offsets``: theirs).  Returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY)
    try:
        for b, (x_at, y_at) in zip(blocks, offsets):
            m = min(rows, n_samples - b * rows)
            X, y = model.block(b, m)
            _pwrite_all(fd, X, x_at)
            _pwrite_all(fd, y, y_at)
            written += X.nbytes + y.nbytes
    finally:
        os.close(fd)
    return written

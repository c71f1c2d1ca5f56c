"""Outputs of ``python -m hpcml.cluster``: the model (rank 0) and the per-row labels (every rank, in parallel)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hpcml.comm import agree

RESULT_FILES = ("model.h5", "model.joblib", "labels.h5", "run.json")


def save_model(est: Any, out_dir: str) -> None:
    """``model.h5`` (``cluster_centers``; inertia, n_iter as attributes) and ``model.joblib``, atomically.

    The pickled estimator keeps no ``labels_`` (they are per rank; labels.h5 holds all of them).
    """
    import copy

    import h5py
    import joblib

    from hpcml.atomicio import atomic_path

    def write_h5(tmp: str) -> None:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("cluster_centers", data=est.cluster_centers_)
            fh.attrs["inertia"] = est.inertia_
            fh.attrs["n_iter"] = est.n_iter_
            fh.attrs["n_clusters"] = est.n_clusters
            fh.attrs["source"] = "hpcml.cluster"

    with atomic_path(os.path.join(out_dir, "model.h5")) as tmp:
        write_h5(tmp)
    model = copy.copy(est)
    for attr in ("labels_", "shard_"):
        model.__dict__.pop(attr, None)
    with atomic_path(os.path.join(out_dir, "model.joblib")) as tmp:
        joblib.dump(model, tmp)


def write_labels(comm: Any, path: str, labels: np.ndarray, start: int, n: int) -> None:
    """Write every rank's labels into one int32 dataset ``labels`` of ``path``.  Collective.

    Rank 0 creates a temporary file with the dataset allocated contiguously up
    front; each rank ``pwrite``s its rows at their byte offset (no concurrent
    HDF5 calls, as ``hpcml.data synth``), then rank 0 renames the file into place.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    offset = agree(comm, _create_labels if comm.Get_rank() == 0 else None, tmp, n)
    tmp, offset = comm.bcast((tmp, offset), root=0)
    try:
        agree(comm, _write_rows if labels.size else None, tmp, labels, offset + 4 * start)
    except BaseException:
        if comm.Get_rank() == 0 and os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if comm.Get_rank() == 0:
        os.replace(tmp, path)


def _create_labels(tmp: str, n: int) -> int:
    """Rank 0: the labels file with ``n`` int32 allocated contiguously up front; the data's byte offset."""
    import h5py

    with h5py.File(tmp, "w") as fh:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        space = h5py.h5s.create_simple((n,))
        dsid = h5py.h5d.create(fh.id, b"labels", h5py.h5t.NATIVE_INT32, space, dcpl=dcpl)
        fh.attrs["source"] = "hpcml.cluster"
        return int(dsid.get_offset())


def _write_rows(tmp: str, labels: np.ndarray, offset: int) -> None:
    """``pwrite`` this rank's labels at their byte offset (no concurrent HDF5 calls)."""
    from hpcml.data.synth import _pwrite_all

    fd = os.open(tmp, os.O_WRONLY)
    try:
        _pwrite_all(fd, np.ascontiguousarray(labels, dtype=np.int32), offset)
    finally:
        os.close(fd)

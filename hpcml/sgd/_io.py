"""Private HDF5 shard reader for :mod:`hpcml.sgd`.

Uses ``H5Dataset.read_rows`` (one hyperslab read of rows ``[start, stop)``):
a rank only ever reads its own rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcml.errors import DataError


def dataset_rows(ds: Any) -> int:
    """Number of rows of an :class:`hpcml.data.H5Dataset` (validated, dense X and a target required)."""
    info = ds.validate()
    if ds.names.get("y") is None:
        raise DataError(f"{ds.path}: training needs a target dataset (y)")
    if info.get("sparse"):
        raise DataError(f"{ds.path}: X '{ds.names['X']}' is sparse (CSR); hpcml.sgd needs dense X")
    return int(info["X"][0][0])


def read_rows(ds: Any, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows ``[start, stop)`` of X, y and the sample weights (if named) of an :class:`hpcml.data.H5Dataset`.

    Parameters
    ----------
    ds : hpcml.data.H5Dataset
        The dataset.
    start, stop : int
        Row range.

    Returns
    -------
    X : ndarray of shape (stop - start, n_features)
        Float32 data stays float32; any other type becomes float64.
    y : ndarray of shape (stop - start,)
    w : ndarray of shape (stop - start,) or None
        ``None`` when the dataset names no ``sample_weight``.
    """
    X = np.asarray(ds.read_rows(start, stop, role="X"))
    y = np.asarray(ds.read_rows(start, stop, role="y"))
    w = None
    if ds.names.get("sample_weight") is not None:
        w = np.asarray(ds.read_rows(start, stop, role="sample_weight"), dtype=np.float64)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    return X, y, w

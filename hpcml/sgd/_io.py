"""Private HDF5 shard reader for :mod:`hpcml.sgd`.

Uses ``H5Dataset.read_rows`` (one hyperslab read of rows ``[start, stop)``)
when the dataset class provides it, and h5py directly otherwise; either way a
rank only ever reads its own rows.
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


def _float_type(dtype: np.dtype) -> type:
    return np.float32 if dtype == np.float32 else np.float64


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
    if hasattr(ds, "read_rows"):
        X = np.asarray(ds.read_rows(start, stop, role="X"))
        y = np.asarray(ds.read_rows(start, stop, role="y"))
        w = None
        if ds.names.get("sample_weight") is not None:
            w = np.asarray(ds.read_rows(start, stop, role="sample_weight"), dtype=np.float64)
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        return X, y, w
    import h5py  # pragma: no cover - older H5Dataset without read_rows

    try:  # pragma: no cover
        with h5py.File(ds.path, "r") as fh:
            xd = fh[ds.names["X"]]
            X = np.asarray(xd[start:stop], dtype=_float_type(xd.dtype))
            y = np.asarray(fh[ds.names["y"]][start:stop])
            wname = ds.names.get("sample_weight")
            w = None if wname is None else np.asarray(fh[wname][start:stop], dtype=np.float64)
    except (OSError, KeyError) as exc:  # pragma: no cover
        raise DataError(f"{ds.path}: cannot read rows {start}:{stop} ({exc})") from None
    return X, y, w  # pragma: no cover

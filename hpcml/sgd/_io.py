"""Private HDF5 shard reader.

``hpcml.data.H5Dataset`` does not offer ``read_rows``/``shard`` yet, so this
reads rows ``[start, stop)`` of the named datasets with h5py directly (a
hyperslab read: only those rows are ever read from the file).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcml.errors import DataError


def dataset_rows(ds: Any) -> int:
    """Number of rows of an :class:`hpcml.data.H5Dataset` (validated)."""
    info = ds.validate()
    if ds.names.get("y") is None:
        raise DataError(f"{ds.path}: training needs a target dataset (y)")
    return int(info["X"][0][0])


def read_rows(ds: Any, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` of X and y of an :class:`hpcml.data.H5Dataset`.

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
    """
    import h5py

    try:
        with h5py.File(ds.path, "r") as fh:
            xd = fh[ds.names["X"]]
            dtype = np.float32 if xd.dtype == np.float32 else np.float64
            X = np.empty((stop - start, xd.shape[1]), dtype=dtype)
            if stop > start:
                if xd.dtype == dtype:
                    xd.read_direct(X, np.s_[start:stop], np.s_[:])
                else:
                    X[...] = xd[start:stop]
            y = np.asarray(fh[ds.names["y"]][start:stop])
    except (OSError, KeyError) as exc:
        raise DataError(f"{ds.path}: cannot read rows {start}:{stop} ({exc})") from None
    return X, y

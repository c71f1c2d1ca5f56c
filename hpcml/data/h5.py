"""H5Dataset: a lazy handle on X/y (and optional groups, sample_weight) in one HDF5 file.

The on-disk layout is described in ``docs/data.md``:

* ``X``: a 2-D float32/float64 dataset chunked by rows, or a CSR group with the
  datasets ``data``, ``indices``, ``indptr`` and the attribute ``shape``, or a
  1-D variable-length string dataset (text: one document per row, read as a
  NumPy array of ``str`` objects, e.g. for ``CountVectorizer``);
* ``y``, ``groups``, ``sample_weight``: 1-D datasets with one value per row;
* ``feature_names``: optional 1-D string dataset;
* file attributes ``hpcml_format_version``, ``n_samples`` and ``created_by``.

Reads bypass HDF5's chunk cache (``rdcc_nbytes=0``) so that whole chunks go
straight from the file into the caller's preallocated buffer (``read_direct``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import h5py
import numpy as np

from hpcml.errors import DataError

FORMAT_VERSION = 1

#: Roles a dataset can play, in the order they are read.
ROLES = ("X", "y", "groups", "sample_weight")

#: Target chunk size in bytes for row-chunked datasets (a few MiB read well everywhere).
CHUNK_BYTES = 4 << 20

#: ``read_indices`` reads the gap between two wanted rows instead of issuing a new
#: hyperslab read when the gap is at most this many bytes.
GAP_BYTES = 256 << 10

#: Largest temporary span (bytes) that ``read_indices`` reads in one piece.
SPAN_BYTES = 8 << 20


def default_chunk_rows(n_features: int, itemsize: int, n_rows: int | None = None) -> int:
    """Rows per chunk so that one chunk holds about :data:`CHUNK_BYTES`.

    Parameters
    ----------
    n_features : int
        Columns per row.
    itemsize : int
        Bytes per value.
    n_rows : int, optional
        Rows in the dataset; the chunk never exceeds it (but is at least 1).
    """
    rows = max(1, CHUNK_BYTES // max(1, n_features * itemsize))
    if n_rows is not None:
        rows = max(1, min(rows, n_rows))
    return int(rows)


def is_text(node: Any) -> bool:
    """Whether ``node`` is a 1-D string dataset (text X)."""
    return isinstance(node, h5py.Dataset) and node.ndim == 1 and h5py.check_string_dtype(node.dtype) is not None


def read_text(ds: h5py.Dataset, sel: Any) -> np.ndarray:
    """Rows of a string dataset as a 1-D NumPy array of ``str`` (UTF-8 decoded)."""
    values = ds.asstr()[sel]
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def is_sparse_group(obj: Any) -> bool:
    """True if ``obj`` is an HDF5 group holding a CSR matrix in hpcml's layout."""
    return isinstance(obj, h5py.Group) and all(k in obj for k in ("data", "indices", "indptr"))


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Balanced contiguous range ``[start, stop)`` of ``n`` items for ``rank`` of ``size``.

    The ranges of ranks ``0..size-1`` partition ``range(n)`` exactly, in order,
    and their lengths differ by at most one.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"need 0 <= rank < size, got rank={rank} size={size}")
    return (rank * n) // size, ((rank + 1) * n) // size


class H5Dataset:
    """Named datasets in one HDF5 file, opened lazily and validated.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    X, y : str
        Dataset names of the features (2-D, or a CSR group) and the target (1-D);
        ``y=None`` for unsupervised data.
    groups, sample_weight : str, optional
        Dataset names of group labels and sample weights.

    Notes
    -----
    The handle is cheap and picklable: every method opens the file, reads and
    closes it again, so a handle can be sent to other ranks.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        X: str = "X",
        y: str | None = "y",
        groups: str | None = None,
        sample_weight: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.names: dict[str, str | None] = {"X": X, "y": y, "groups": groups, "sample_weight": sample_weight}

    def __repr__(self) -> str:
        names = ", ".join(f"{k}={v!r}" for k, v in self.names.items() if v is not None)
        return f"H5Dataset({self.path!r}, {names})"

    # ------------------------------------------------------------------ opening
    def _open(self) -> h5py.File:
        if not os.path.exists(self.path):
            raise DataError(f"{self.path}: data file not found")
        if os.path.isdir(self.path):
            raise DataError(f"{self.path}: is a directory, not an HDF5 file")
        try:
            if not h5py.is_hdf5(self.path):
                raise DataError(f"{self.path}: not an HDF5 file")
            # No chunk cache: full-chunk reads go straight into the caller's buffer.
            return h5py.File(self.path, "r", rdcc_nbytes=0)
        except DataError:
            raise
        except OSError as exc:
            raise DataError(f"{self.path}: not a readable HDF5 file ({_first_line(exc)})") from None

    def _node(self, fh: h5py.File, role: str) -> Any:
        name = self.names[role]
        if name is None:
            raise DataError(f"{self.path}: no dataset named for role {role}")
        try:
            present = name in fh
            node = fh[name] if present else None
        except (KeyError, OSError, RuntimeError, ValueError) as exc:  # dangling external link, soft-link loop
            raise DataError(f"{self.path}: dataset '{name}' ({role}) cannot be opened ({_first_line(exc)})") from None
        if node is None:
            link = fh.get(name, getlink=True)
            what = f" (a {type(link).__name__} to a missing target)" if link is not None else ""
            raise DataError(f"{self.path}: dataset '{name}' ({role}) not found{what}")
        if role == "X" and is_sparse_group(node):
            return node
        if not isinstance(node, h5py.Dataset):
            raise DataError(f"{self.path}: '{name}' ({role}) is not a dataset")
        return node

    # --------------------------------------------------------------- metadata
    def validate(self, check_nan_y: bool = False) -> dict[str, Any]:
        """Check every named dataset; return ``{role: (shape, dtype)}`` plus ``"sparse"``.

        Parameters
        ----------
        check_nan_y : bool, default False
            Also read ``y`` and reject NaN/inf values (the cross-validation path).

        Raises
        ------
        hpcml.errors.DataError
            Missing file or dataset, not HDF5, non-numeric dtype, X not 2-D,
            empty data, length mismatch, or (``check_nan_y``) NaN in y.
        """
        with self._open() as fh:
            info: dict[str, Any] = {}
            for role in ROLES:
                name = self.names[role]
                if name is None:
                    continue
                node = self._node(fh, role)
                if role == "X" and is_sparse_group(node):
                    shape = _sparse_shape(node, self.path, name)
                    dtype = node["data"].dtype
                    for part in ("data", "indices", "indptr"):
                        if node[part].dtype.kind not in "biuf":
                            raise DataError(
                                f"{self.path}: '{name}/{part}' (X) is not numeric (dtype {node[part].dtype})"
                            )
                    if node["indptr"].shape != (shape[0] + 1,):
                        raise DataError(
                            f"{self.path}: '{name}/indptr' has {node['indptr'].shape[0]} entries, "
                            f"expected {shape[0] + 1} for {shape[0]} rows"
                        )
                    _check_csr(node, self.path, name, shape)
                    info["sparse"] = True
                elif role == "X" and is_text(node):
                    shape, dtype = node.shape, np.dtype(object)
                    info["text"] = True
                else:
                    shape, dtype = node.shape, node.dtype
                    if dtype.kind not in "biuf":
                        raise DataError(f"{self.path}: dataset '{name}' ({role}) is not numeric (dtype {dtype})")
                    if role != "X" and len(shape) != 1:
                        raise DataError(f"{self.path}: dataset '{name}' ({role}) must be 1-D, got shape {shape}")
                info[role] = (tuple(int(s) for s in shape), np.dtype(dtype))
            info.setdefault("sparse", False)
            info.setdefault("text", False)
            xshape = info["X"][0]
            xname = self.names["X"]
            if info["text"]:
                xshape = (*xshape, 1)  # checked below as one column of documents
            if len(xshape) != 2:
                raise DataError(f"{self.path}: dataset '{xname}' (X) must be 2-D, got shape {xshape}")
            if xshape[0] == 0 or xshape[1] == 0:
                raise DataError(f"{self.path}: dataset '{xname}' (X) is empty (shape {xshape})")
            for role in ("y", "groups", "sample_weight"):
                if role in info and info[role][0][0] != xshape[0]:
                    raise DataError(
                        f"{self.path}: X has {xshape[0]} rows but {role} '{self.names[role]}' has {info[role][0][0]}"
                    )
            if check_nan_y and "y" in info and info["y"][1].kind == "f":
                y = fh[self.names["y"]][...]
                bad = int(np.count_nonzero(~np.isfinite(y)))
                if bad:
                    first = int(np.flatnonzero(~np.isfinite(y))[0])
                    raise DataError(
                        f"{self.path}: y '{self.names['y']}' has {bad} NaN/inf value(s) (first at row {first})"
                    )
            return info

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        with self._open() as fh:
            node = self._node(fh, "X")
            if is_sparse_group(node):
                return int(_sparse_shape(node, self.path, self.names["X"])[0])
            return int(node.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of X."""
        with self._open() as fh:
            node = self._node(fh, "X")
            if is_sparse_group(node):
                return _sparse_shape(node, self.path, self.names["X"])
            return tuple(int(s) for s in node.shape)

    @property
    def is_sparse(self) -> bool:
        """True if X is stored as a CSR group."""
        with self._open() as fh:
            return is_sparse_group(self._node(fh, "X"))

    def shard(self, rank: int, size: int) -> tuple[int, int]:
        """Contiguous balanced row range ``[start, stop)`` of ``rank`` out of ``size``.

        The shards of ``size`` ranks partition ``range(n_samples)`` exactly.
        """
        return shard_bounds(self.n_samples, rank, size)

    # ------------------------------------------------------------------ reads
    def read(self, role: str = "X", out: np.ndarray | None = None) -> Any:
        """Read one whole dataset by role (``"X"``, ``"y"``, ``"groups"``, ``"sample_weight"``).

        Parameters
        ----------
        role : str
            Which dataset.
        out : numpy.ndarray, optional
            Preallocated C-contiguous buffer of the right shape and dtype (dense only);
            the data are read straight into it.

        Returns
        -------
        numpy.ndarray, scipy.sparse.csr_matrix or None
            ``None`` if the role has no dataset.
        """
        if self.names[role] is None:
            return None
        with self._open() as fh:
            node = self._node(fh, role)
            if is_sparse_group(node):
                shape = _sparse_shape(node, self.path, self.names[role])
                return _read_csr_rows(node, 0, shape[0], shape[1])
            if is_text(node):
                return read_text(node, np.s_[...])
            return _read_dense(node, np.s_[...], node.shape, out)

    def read_rows(self, start: int, stop: int, role: str = "X", out: np.ndarray | None = None) -> Any:
        """Read rows ``[start, stop)`` of one dataset (one hyperslab read).

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_matrix
        """
        with self._open() as fh:
            node = self._node(fh, role)
            n = _rows_of(node, self.path, self.names[role])
            start, stop, _ = slice(start, stop).indices(n)
            stop = max(start, stop)
            if is_sparse_group(node):
                return _read_csr_rows(node, start, stop, _sparse_shape(node, self.path, self.names[role])[1])
            if is_text(node):
                return read_text(node, np.s_[start:stop])
            return _read_dense(node, np.s_[start:stop], (stop - start, *node.shape[1:]), out)

    def read_indices(self, idx: Any, role: str = "X") -> Any:
        """Read the rows ``idx`` (any order, duplicates allowed) of one dataset.

        The wanted rows are sorted and coalesced into contiguous hyperslab reads
        (small gaps are read and dropped, see :data:`GAP_BYTES`); the result is
        in the caller's order, equal to ``full[idx]``.

        Parameters
        ----------
        idx : array-like of int
            Row indices; negative values count from the end.
        role : str, default "X"
            Which dataset.

        Returns
        -------
        numpy.ndarray or scipy.sparse.csr_matrix
        """
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise TypeError(f"idx must be a 1-D array of integers, got dtype {idx.dtype} shape {idx.shape}")
        idx = idx.astype(np.int64, copy=False)
        with self._open() as fh:
            node = self._node(fh, role)
            n = _rows_of(node, self.path, self.names[role])
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"row index out of range for {n} rows")
            idx = np.where(idx < 0, idx + n, idx)
            increasing = bool(idx.size < 2 or np.all(idx[1:] > idx[:-1]))
            if increasing:
                uniq, inverse = idx, None
            else:
                uniq, inverse = np.unique(idx, return_inverse=True)
            if is_sparse_group(node):
                result = _read_csr_indices(node, uniq, _sparse_shape(node, self.path, self.names[role])[1])
            elif is_text(node):
                result = read_text(node, np.s_[...])[uniq] if uniq.size else read_text(node, np.s_[0:0])
            else:
                result = _read_dense_indices(node, uniq)
            if inverse is not None:
                result = result[inverse.ravel()]
            return result

    def fingerprint(self) -> str:
        """A cheap identity of the data: names, shapes, dtypes and a hash of sampled rows."""
        h = hashlib.sha256()
        with self._open() as fh:
            for role in ROLES:
                name = self.names[role]
                if name is None:
                    continue
                node = self._node(fh, role)
                if is_sparse_group(node):
                    shape = _sparse_shape(node, self.path, name)
                    h.update(f"{role}={name}:csr{shape}:{node['data'].dtype}:{node['data'].shape}".encode())
                    n = shape[0]
                    for i in sorted({0, n // 3, n // 2, (2 * n) // 3, max(0, n - 1)}):
                        if n:
                            row = _read_csr_rows(node, i, i + 1, shape[1])
                            h.update(row.indices.tobytes() + row.data.tobytes())
                    continue
                h.update(f"{role}={name}:{node.shape}:{node.dtype}".encode())
                n = node.shape[0] if node.shape else 0
                for i in sorted({0, n // 3, n // 2, (2 * n) // 3, max(0, n - 1)}):
                    if n and is_text(node):
                        h.update(node.asstr()[i].encode())
                    elif n:
                        h.update(np.ascontiguousarray(node[i]).tobytes())
        return h.hexdigest()


# ---------------------------------------------------------------------- helpers
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


#: Entries of ``indices``/``indptr`` checked per block by :func:`_check_csr`.
_CHECK_BLOCK = 1 << 22


def _check_csr(node: h5py.Group, path: str, name: str | None, shape: tuple[int, int]) -> None:
    """Reject a CSR group scipy/sklearn would crash on or misread: bad indptr, indices outside the columns."""
    where = f"{path}: sparse group '{name}' (X)"
    indptr_ds, indices_ds = node["indptr"], node["indices"]
    nnz = int(node["data"].shape[0])
    if indices_ds.shape != (nnz,):
        raise DataError(f"{where}: 'indices' has {indices_ds.shape[0]} entries but 'data' has {nnz}")
    last = 0
    for start in range(0, indptr_ds.shape[0], _CHECK_BLOCK):
        block = indptr_ds[start : start + _CHECK_BLOCK].astype(np.int64)
        if start == 0 and block[0] != 0:
            raise DataError(f"{where}: 'indptr' must start at 0, got {int(block[0])}")
        steps = np.diff(np.concatenate(([last], block)))
        if np.any(steps < 0):
            row = start + int(np.flatnonzero(steps < 0)[0]) - 1
            raise DataError(f"{where}: 'indptr' decreases at row {row}")
        last = int(block[-1])
    if last != nnz:
        raise DataError(f"{where}: 'indptr' ends at {last} but there are {nnz} stored values")
    for start in range(0, nnz, _CHECK_BLOCK):
        block = indices_ds[start : start + _CHECK_BLOCK]
        bad = (block < 0) | (block >= shape[1])
        if np.any(bad):
            value = int(block[np.flatnonzero(bad)[0]])
            raise DataError(
                f"{where}: column index {value} outside [0, {shape[1]}) at entry {start + int(np.flatnonzero(bad)[0])}"
            )


def _sparse_shape(node: h5py.Group, path: str, name: str | None) -> tuple[int, int]:
    shape = node.attrs.get("shape")
    if shape is None or len(shape) != 2:
        raise DataError(f"{path}: sparse group '{name}' (X) needs a 2-element 'shape' attribute")
    return int(shape[0]), int(shape[1])


def _rows_of(node: Any, path: str, name: str | None) -> int:
    if is_sparse_group(node):
        return _sparse_shape(node, path, name)[0]
    if not node.shape:
        raise DataError(f"{path}: dataset '{name}' is a scalar")
    return int(node.shape[0])


def _read_dense(ds: h5py.Dataset, sel: Any, shape: tuple[int, ...], out: np.ndarray | None) -> np.ndarray:
    if out is None:
        out = np.empty(shape, dtype=ds.dtype)
    elif out.shape != tuple(shape) or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous with shape {tuple(shape)}, got {out.shape}")
    if out.size:
        ds.read_direct(out, source_sel=sel)
    return out


def _runs(uniq: np.ndarray, gap_rows: int, span_rows: int) -> list[tuple[int, int]]:
    """Split sorted unique rows into groups ``uniq[a:b]`` that are read as one span."""
    if uniq.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(uniq) > gap_rows) + 1
    bounds = np.concatenate(([0], breaks, [uniq.size]))
    groups: list[tuple[int, int]] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        a, b = int(a), int(b)
        # Split spans longer than span_rows (bounded temporary memory).
        while a < b:
            limit = uniq[a] + span_rows
            c = a + int(np.searchsorted(uniq[a:b], limit, side="left"))
            c = max(c, a + 1)
            groups.append((a, c))
            a = c
    return groups


def _read_dense_indices(ds: h5py.Dataset, uniq: np.ndarray) -> np.ndarray:
    row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize)
    out = np.empty((uniq.size, *ds.shape[1:]), dtype=ds.dtype)
    gap_rows = max(1, GAP_BYTES // row_bytes)
    span_rows = max(1, SPAN_BYTES // row_bytes)
    runs = _runs(uniq, gap_rows, span_rows)
    spans = [int(uniq[b - 1]) + 1 - int(uniq[a]) for a, b in runs]
    widest = max((w for w, (a, b) in zip(spans, runs, strict=True) if w != b - a), default=0)
    scratch = np.empty((widest, *ds.shape[1:]), dtype=ds.dtype)  # one buffer, reused for every span
    for a, b in runs:
        lo, hi = int(uniq[a]), int(uniq[b - 1]) + 1
        if hi - lo == b - a:  # a contiguous run: straight into the output
            ds.read_direct(out[a:b], source_sel=np.s_[lo:hi])
        else:
            tmp = scratch[: hi - lo]
            ds.read_direct(tmp, source_sel=np.s_[lo:hi])
            np.take(tmp, uniq[a:b] - lo, axis=0, out=out[a:b])
    return out


def _read_csr_rows(node: h5py.Group, start: int, stop: int, n_features: int) -> Any:
    import scipy.sparse as sp

    indptr = node["indptr"][start : stop + 1].astype(np.int64)
    lo, hi = int(indptr[0]), int(indptr[-1])
    data = node["data"][lo:hi] if hi > lo else np.empty(0, node["data"].dtype)
    indices = node["indices"][lo:hi] if hi > lo else np.empty(0, node["indices"].dtype)
    return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, n_features))


def _read_csr_indices(node: h5py.Group, uniq: np.ndarray, n_features: int) -> Any:
    import scipy.sparse as sp

    if uniq.size == 0:
        return sp.csr_matrix((0, n_features), dtype=node["data"].dtype)
    indptr = node["indptr"][...].astype(np.int64)
    nnz_row = np.diff(indptr)
    avg = max(1.0, float(indptr[-1]) / max(1, len(nnz_row)))
    item = node["data"].dtype.itemsize + node["indices"].dtype.itemsize
    gap_rows = max(1, int(GAP_BYTES / (avg * item)))
    span_rows = max(1, int(SPAN_BYTES / (avg * item)))
    parts = []
    for a, b in _runs(uniq, gap_rows, span_rows):
        lo, hi = int(uniq[a]), int(uniq[b - 1]) + 1
        block = _read_csr_rows(node, lo, hi, n_features)
        parts.append(block if hi - lo == b - a else block[uniq[a:b] - lo])
    return sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0].tocsr()


# ----------------------------------------------------------------------- writing
def _target_dtype(arr: np.ndarray, dtype: Any) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    if arr.dtype.kind == "f":
        return arr.dtype
    return np.dtype(np.float64)


def write_dataset(
    path: str | os.PathLike[str],
    X: Any,
    y: Any = None,
    *,
    groups: Any = None,
    sample_weight: Any = None,
    feature_names: Any = None,
    chunk_rows: int | None = None,
    dtype: Any = None,
    source: str = "hpcml.data.write_dataset",
) -> str:
    """Write arrays to an HDF5 file in hpcml's layout (see ``docs/data.md``).

    Parameters
    ----------
    path : str or path-like
        Output file (overwritten).
    X : array-like or scipy.sparse matrix
        2-D features.  Dense X is stored as a row-chunked float dataset; sparse X
        as a CSR group (``data``, ``indices``, ``indptr``, attribute ``shape``);
        a 1-D sequence of ``str`` (documents) as a variable-length string dataset.
    y, groups, sample_weight : array-like, optional
        1-D arrays with one value per row.
    feature_names : sequence of str, optional
        Column names.
    chunk_rows : int, optional
        Rows per chunk; default about 4 MiB per chunk.
    dtype : numpy dtype, optional
        Float type of X (default: X's own float type, float64 for integer X).
    source : str
        Recorded in the ``created_by`` file attribute.

    Returns
    -------
    str
        The path written.
    """
    path = os.fspath(path)
    X, sparse = _checked_X(path, X)
    extras = _checked_columns(path, X.shape[0], {"y": y, "groups": groups, "sample_weight": sample_weight})
    # Everything is checked before the file is opened: a refused call leaves no file behind.
    with h5py.File(path, "w") as fh:
        if sparse:
            _write_csr(fh, X, _target_dtype(X.data, dtype))
        elif X.ndim == 1:  # text: one document per row, a 1-D variable-length string dataset
            rows = max(1, min(chunk_rows or 4096, X.shape[0]))
            fh.create_dataset("X", data=X, dtype=h5py.string_dtype(), chunks=(rows,))
        else:
            xdt = _target_dtype(X, dtype)
            rows = chunk_rows or default_chunk_rows(X.shape[1], xdt.itemsize, X.shape[0])
            chunks = (max(1, min(rows, X.shape[0])), X.shape[1]) if X.size else None
            fh.create_dataset("X", data=X.astype(xdt, copy=False), chunks=chunks)
        for name, arr in extras.items():
            fh.create_dataset(name, data=arr)
        if feature_names is not None:
            fh.create_dataset("feature_names", data=np.asarray(feature_names, dtype=object), dtype=h5py.string_dtype())
        set_file_attrs(fh, X.shape[0], source)
    return path


def _checked_X(path: str, X: Any) -> tuple[Any, bool]:
    """X as a 2-D numeric ndarray or a CSR matrix with sorted indices, and whether it is sparse."""
    import scipy.sparse as sp

    sparse = sp.issparse(X)
    if sparse:
        X = sp.csr_matrix(X)
        X.sort_indices()
    else:
        X = np.asarray(X)
        text = X.ndim == 1 and X.size > 0 and all(isinstance(v, str) for v in X.tolist())
        if text:
            X = X.astype(object)
        elif X.dtype.kind not in "biuf":
            raise DataError(f"{path}: X is not numeric (dtype {X.dtype})")
    if X.ndim != 2 and not (not sparse and text):
        raise DataError(f"{path}: X must be 2-D, got shape {X.shape}")
    return X, sparse


def _checked_columns(path: str, n: int, columns: dict[str, Any]) -> dict[str, np.ndarray]:
    """The given per-row columns (y, groups, sample_weight) as 1-D numeric arrays of length ``n``."""
    checked = {}
    for name, arr in columns.items():
        if arr is None:
            continue
        arr = np.asarray(arr)
        if len(arr) != n:
            raise DataError(f"{path}: X has {n} rows but {name} has {len(arr)}")
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{path}: {name} is not numeric (dtype {arr.dtype}); encode labels as integers first")
        if arr.ndim != 1:
            raise DataError(f"{path}: {name} must be 1-D, got shape {arr.shape}")
        checked[name] = arr
    return checked


def _write_csr(fh: h5py.File, X: Any, xdt: np.dtype) -> None:
    """Sparse X as the group ``X`` (``data``, ``indices``, ``indptr``; attributes ``shape``, ``format``)."""
    g = fh.create_group("X")
    g.attrs["shape"] = np.asarray(X.shape, dtype=np.int64)
    g.attrs["format"] = "csr"
    nnz = max(1, X.nnz)
    kw = {"chunks": (min(nnz, 1 << 18),), "maxshape": (None,)}
    g.create_dataset("data", data=X.data.astype(xdt, copy=False), **kw)
    g.create_dataset("indices", data=X.indices.astype(np.int32 if X.shape[1] < 2**31 else np.int64), **kw)
    g.create_dataset("indptr", data=X.indptr.astype(np.int64))


def set_file_attrs(fh: h5py.File, n_samples: int, source: str) -> None:
    """Write the file attributes of hpcml's layout (format version, row count, origin)."""
    fh.attrs["hpcml_format_version"] = FORMAT_VERSION
    fh.attrs["n_samples"] = int(n_samples)
    fh.attrs["created_by"] = source


class DatasetWriter:
    """Append row blocks to a new file in hpcml's layout with bounded memory.

    Datasets are resizable and grow with every :meth:`append`; the converters use
    this to stream inputs larger than memory.

    Parameters
    ----------
    path : str or path-like
        Output file (overwritten).
    n_features : int
        Columns of X (for sparse X, a lower bound that grows with the data).
    dtype : numpy dtype
        Float type of X.
    sparse : bool
        Store X as a CSR group.
    y_dtype : numpy dtype or None
        Type of y; ``None`` writes no y.
    chunk_rows : int, optional
        Rows per chunk of dense X and of the 1-D datasets.
    source : str
        Recorded in the ``created_by`` attribute.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_features: int,
        dtype: Any = np.float64,
        sparse: bool = False,
        y_dtype: Any = None,
        chunk_rows: int | None = None,
        source: str = "hpcml.data.DatasetWriter",
    ) -> None:
        self.path = os.fspath(path)
        self.dtype = np.dtype(dtype)
        self.sparse = sparse
        self.n_features = int(n_features)
        self.n_rows = 0
        self.nnz = 0
        self.source = source
        self.fh = h5py.File(self.path, "w")
        rows = chunk_rows or default_chunk_rows(max(1, self.n_features), self.dtype.itemsize)
        self.chunk_rows = rows
        if sparse:
            g = self.fh.create_group("X")
            g.attrs["format"] = "csr"
            self.data = g.create_dataset("data", shape=(0,), maxshape=(None,), dtype=self.dtype, chunks=(1 << 18,))
            self.indices = g.create_dataset("indices", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1 << 18,))
            self.indptr = g.create_dataset("indptr", data=np.zeros(1, np.int64), maxshape=(None,), chunks=(1 << 16,))
            self.X = g
        else:
            self.X = self.fh.create_dataset(
                "X",
                shape=(0, self.n_features),
                maxshape=(None, self.n_features),
                dtype=self.dtype,
                chunks=(rows, max(1, self.n_features)),
            )
        self.y = None
        if y_dtype is not None:
            self.y = self.fh.create_dataset(
                "y", shape=(0,), maxshape=(None,), dtype=np.dtype(y_dtype), chunks=(max(1024, rows),)
            )

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def _grow(ds: h5py.Dataset, values: np.ndarray) -> None:
        n = ds.shape[0]
        ds.resize(n + values.shape[0], axis=0)
        if values.shape[0]:
            ds[n:] = values

    def append(self, X: Any, y: Any = None) -> None:
        """Append a block of rows (dense array or scipy.sparse) and their targets."""
        if self.sparse:
            import scipy.sparse as sp

            block = sp.csr_matrix(X)
            self._grow(self.data, block.data.astype(self.dtype, copy=False))
            self._grow(self.indices, block.indices.astype(np.int64))
            self._grow(self.indptr, block.indptr[1:].astype(np.int64) + self.nnz)
            self.nnz += int(block.nnz)
            self.n_features = max(self.n_features, int(block.shape[1]))
            rows = block.shape[0]
        else:
            block = np.asarray(X, dtype=self.dtype)
            self._grow(self.X, block)
            rows = block.shape[0]
        if self.y is not None:
            if y is None or len(y) != rows:
                raise DataError(f"{self.path}: block of {rows} rows has no matching y")
            self._grow(self.y, np.asarray(y, dtype=self.y.dtype))
        self.n_rows += rows

    def close(self, feature_names: Any = None) -> None:
        """Write the file attributes (and feature names) and close the file."""
        if self.fh is None:
            return
        if self.sparse:
            self.X.attrs["shape"] = np.asarray([self.n_rows, self.n_features], dtype=np.int64)
        if feature_names is not None:
            self.fh.create_dataset(
                "feature_names", data=np.asarray(feature_names, dtype=object), dtype=h5py.string_dtype()
            )
        set_file_attrs(self.fh, self.n_rows, self.source)
        self.fh.close()
        self.fh = None

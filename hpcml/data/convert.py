"""Streaming converters from .npy, .npz, .csv and svmlight files to hpcml's HDF5 layout.

Every converter reads its input in row blocks and appends them to resizable
datasets (:class:`hpcml.data.h5.DatasetWriter`), so memory stays bounded by one
block whatever the input size (``.npz`` members are the exception: NumPy cannot
memory-map them, so one member is loaded at a time).
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import time
from typing import Any, TextIO

import numpy as np

from hpcml.atomicio import atomic_path
from hpcml.data.h5 import DatasetWriter
from hpcml.errors import DataError, UsageError

#: Input suffixes and the converter that reads them.
FORMATS = {
    ".npy": "npy",
    ".npz": "npz",
    ".csv": "csv",
    ".svm": "svmlight",
    ".svmlight": "svmlight",
    ".libsvm": "svmlight",
}

#: ``n_features`` passed to sklearn's svmlight reader (the true count is the largest index seen).
_SVM_MAX_FEATURES = 2**31 - 1

#: Bytes of svmlight text parsed per block.
_SVMLIGHT_STEP = 64 << 20

#: Rows per block when streaming text inputs.
BLOCK_ROWS = 65536


class Progress:
    """A one-line progress bar on a terminal (``stderr`` is a TTY); silent otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(1, total)
        self.label = label
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        """Show ``done`` out of ``total`` (at most ten redraws per second)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}%")
        self.stream.flush()

    def finish(self) -> None:
        """Draw 100 % and end the line."""
        if self.enabled:
            self.update(self.total, force=True)
            self.stream.write("\n")
            self.stream.flush()


def detect_format(path: str, fmt: str | None = None) -> str:
    """The input format, from ``fmt`` or the file suffix."""
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise UsageError(f"unknown input format '{fmt}' (choose from {', '.join(sorted(set(FORMATS.values())))})")
        return fmt
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise UsageError(f"{path}: cannot tell the format from the suffix '{suffix}' (use .npy, .npz, .csv, .svmlight)")
    return FORMATS[suffix]


def convert(
    src: str,
    dst: str,
    *,
    target: str | None = None,
    dtype: Any = None,
    chunk_rows: int | None = None,
    fmt: str | None = None,
    block_rows: int = BLOCK_ROWS,
    progress: bool | None = None,
    header: str = "auto",
    text: str | None = None,
    overwrite: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Convert ``src`` to an HDF5 file ``dst`` in hpcml's layout, streaming.

    Parameters
    ----------
    src : str
        Input ``.npy`` (2-D X, or a table with ``target`` as a column), ``.npz``
        (arrays ``X`` and ``y``, optionally ``groups``, ``sample_weight``,
        ``feature_names``; or ``arr_0``/``arr_1``), ``.csv`` (numbers, optional
        header line) or svmlight/libsvm text.
    dst : str
        Output HDF5 file (replaced if it exists, unless ``overwrite=False``).
    target : str, optional
        Column holding y: a header name or a 0-based index (negative counts from
        the end).  CSV default: the last column; ``.npy`` default: no y.
    dtype : numpy dtype, optional
        Float type of X; default: the input's float type (.npy/.npz), else float64.
    chunk_rows : int, optional
        Rows per HDF5 chunk (default about 4 MiB per chunk).
    fmt : str, optional
        Input format, if the suffix does not tell.
    block_rows : int
        Rows read per block (bounds memory).
    progress : bool, optional
        Force the progress bar on or off (default: only on a terminal).
    header : {"auto", "yes", "no"}
        Whether a CSV's first line names the columns.  ``"auto"``: it does if a
        field is not a number, or if the fields are exactly ``0,1,...,n-1`` (the
        column names ``pandas.DataFrame(X).to_csv(index=False)`` writes).
    text : str, optional
        CSV only: keep this column (header name or index) as string X, one
        document per row (:mod:`hpcml.data.text`); other non-target columns are dropped.
    overwrite : bool, default True
        ``False`` (the command line without ``--overwrite``): an existing
        ``dst`` is refused (:class:`UsageError`) instead of replaced.
    dry_run : bool, default False
        Check the arguments, the input's format and the output, write nothing;
        returns ``{"format": ..., "dry_run": True}``.

    Returns
    -------
    dict
        ``{"rows": ..., "features": ..., "sparse": ..., "format": ...}``.
    """
    kind, dtype, func = _plan(src, dst, fmt, dtype, header, text, overwrite)
    if dry_run:
        return {"format": kind, "dry_run": True}
    source = f"hpcml.data convert {os.path.basename(src)} ({kind})"
    # Written beside dst under a temporary name and renamed at the end: a failed
    # or killed conversion leaves an existing dst (or anything else) untouched.
    with atomic_path(dst) as tmp:
        result = func(
            src,
            tmp,
            target=target,
            dtype=dtype,
            chunk_rows=chunk_rows,
            block_rows=block_rows,
            progress=progress,
            source=source,
        )
    result["format"] = kind
    return result


def _plan(
    src: str, dst: str, fmt: str | None, dtype: Any, header: str, text: str | None, overwrite: bool
) -> tuple[str, Any, Any]:
    """Check the arguments and the output; the input's format, X's dtype and the converter to call."""
    if not os.path.exists(src):
        raise DataError(f"{src}: input file not found")
    kind = detect_format(src, fmt)
    dtype = np.dtype(dtype) if dtype is not None else None
    if dtype is not None and dtype.kind != "f":
        raise UsageError(f"--dtype must be a float type, got {dtype}")
    if header not in ("auto", "yes", "no"):
        raise UsageError(f"--header must be auto, yes or no, got '{header}'")
    if header != "auto" and kind != "csv":
        raise UsageError(f"--header applies to CSV input only, not {kind}")
    if text is not None and kind != "csv":
        raise UsageError(f"--text applies to CSV input, not {kind}")
    _check_output(src, dst)
    if not overwrite and os.path.exists(dst):
        raise UsageError(f"{dst}: output file already exists; use --overwrite to replace it or another output name")
    func = {"npy": _convert_npy, "npz": _convert_npz, "csv": _convert_csv, "svmlight": _convert_svmlight}[kind]
    if kind == "csv":
        func = functools.partial(_convert_csv, header=header)
    if text is not None:
        from hpcml.data.text import convert_text_csv

        def func(src: str, dst: str, *, target: str | None, source: str, **_: Any) -> dict[str, Any]:
            return convert_text_csv(src, dst, text=text, target=target, source=source)

    return kind, dtype, func


def _check_output(src: str, dst: str) -> None:
    """Refuse an output that is the input (by any name), a directory, or in a missing folder."""
    if os.path.isdir(dst):
        raise DataError(f"{dst}: output is a directory; give a file name such as {os.path.join(dst, 'data.h5')}")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise DataError(f"{dst}: directory {parent} does not exist")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise DataError(f"{dst}: output is the input file; convert would destroy it (choose another name)")


def _column_index(target: str, names: list[str] | None, n_cols: int, src: str) -> int:
    if names is not None and target in names:
        return names.index(target)
    try:
        col = int(target)
    except ValueError:
        raise DataError(f"{src}: target column '{target}' not found") from None
    if not -n_cols <= col < n_cols:
        raise DataError(f"{src}: target column {col} out of range for {n_cols} columns")
    return col % n_cols


def _split_target(block: np.ndarray, col: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    if col is None:
        return block, None
    keep = np.ones(block.shape[1], dtype=bool)
    keep[col] = False
    return block[:, keep], block[:, col]


#: Integral float targets are stored as int64 only inside this range (beyond it they stay float64).
_INT64_LIMIT = 2.0**63


def _y_dtype(values: np.ndarray) -> np.dtype:
    """Integers stay integers (class labels) when int64 holds them, anything else float64."""
    if values.dtype.kind in "iub":
        if values.dtype.kind == "u" and values.size and int(values.max()) >= 2**63:
            return np.dtype(np.float64)
        return np.dtype(np.int64)
    if (
        values.dtype.kind == "f"
        and values.size
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
        and np.all(np.abs(values) < _INT64_LIMIT)
    ):
        return np.dtype(np.int64)
    return np.dtype(np.float64)


def _convert_npy(
    src: str,
    dst: str,
    *,
    target: str | None,
    dtype: np.dtype,
    chunk_rows: int | None,
    block_rows: int,
    progress: bool | None,
    source: str,
) -> dict[str, Any]:
    try:
        arr = np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{src}: not a readable .npy file ({exc})") from None
    if arr.ndim != 2:
        raise DataError(f"{src}: need a 2-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{src}: array is not numeric (dtype {arr.dtype})")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{src}: array is empty (shape {arr.shape})")
    col = None if target is None else _column_index(target, None, arr.shape[1], src)
    if dtype is None:
        dtype = arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)
    n_features = arr.shape[1] - (col is not None)
    y_dtype = None
    if col is not None:
        wide_unsigned = arr.dtype.kind == "u" and arr.dtype.itemsize == 8  # may exceed int64: checked per block
        y_dtype = np.dtype(np.int64) if arr.dtype.kind in "iub" and not wide_unsigned else np.dtype(np.float64)
    rows = _block_for(n_features, dtype, block_rows)
    bar = Progress(arr.shape[0], "convert", enabled=progress)
    integral = True
    with DatasetWriter(dst, n_features, dtype, y_dtype=y_dtype, chunk_rows=chunk_rows, source=source) as w:
        for start in range(0, arr.shape[0], rows):
            X, y = _split_target(np.asarray(arr[start : start + rows]), col)
            if y is not None:
                integral &= _y_dtype(y).kind == "i"
            w.append(X, y)
            bar.update(start + X.shape[0])
        if y_dtype is not None and y_dtype.kind == "f" and integral:
            _retype_y(w)
    bar.finish()
    return {"rows": int(arr.shape[0]), "features": n_features, "sparse": False}


def _block_for(n_features: int, dtype: np.dtype, block_rows: int) -> int:
    # block_rows rows, but at most ~64 MiB of X per block.
    per = max(1, (64 << 20) // max(1, n_features * dtype.itemsize))
    return max(1, min(block_rows, per))


def _convert_npz(
    src: str,
    dst: str,
    *,
    target: str | None,
    dtype: np.dtype,
    chunk_rows: int | None,
    block_rows: int,
    progress: bool | None,
    source: str,
) -> dict[str, Any]:
    from hpcml.data.h5 import write_dataset

    try:
        npz = np.load(src, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{src}: not a readable .npz file ({exc})") from None
    with npz:
        keys = list(npz.files)
        xkey = "X" if "X" in keys else ("arr_0" if "arr_0" in keys else None)
        if xkey is None:
            raise DataError(f"{src}: no array named 'X' (or 'arr_0'); found {', '.join(keys) or 'nothing'}")
        ykey = "y" if "y" in keys else ("arr_1" if "arr_1" in keys else None)
        X = _member(npz, xkey, src)
        if X.ndim != 2:
            raise DataError(f"{src}: X must be 2-D, got shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise DataError(f"{src}: X is not numeric (dtype {X.dtype})")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise DataError(f"{src}: X is empty (shape {X.shape})")
        extras = {k: _member(npz, k, src) for k in ("groups", "sample_weight") if k in keys}
        y = _member(npz, ykey, src) if ykey is not None else None
        if y is None and target is not None:
            col = _column_index(target, None, X.shape[1], src)
            X, y = _split_target(X, col)
        names = _member(npz, "feature_names", src) if "feature_names" in keys else None
        for name, arr in (("y", y), *extras.items()):
            if arr is not None and len(arr) != X.shape[0]:
                raise DataError(f"{src}: X has {X.shape[0]} rows but {name} has {len(arr)}")
    write_dataset(dst, X, y, chunk_rows=chunk_rows, dtype=dtype, feature_names=names, source=source, **extras)
    return {"rows": int(X.shape[0]), "features": int(X.shape[1]), "sparse": False}


def _member(npz: Any, key: str, src: str) -> np.ndarray:
    """One array of an ``.npz``; object (pickled) arrays are refused, never unpickled."""
    try:
        return npz[key]
    except ValueError as exc:
        raise DataError(f"{src}: array '{key}' cannot be read without unpickling ({_short(exc)})") from None


def _parse_csv_block(lines: list[str], src: str, first_line: int, n_cols: int) -> np.ndarray:
    try:
        block = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{src}: line {first_line}+: {_short(exc)}") from None
    if block.shape[1] != n_cols:
        raise DataError(f"{src}: line {first_line}+: expected {n_cols} columns, got {block.shape[1]}")
    return block


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _looks_like_header(fields: list[str], header: str = "auto") -> bool:
    """``header`` "yes"/"no" decide; "auto": a non-number field, or exactly ``0,1,...,n-1`` (pandas' names)."""
    if header != "auto":
        return header == "yes"
    for f in fields:
        try:
            float(f)
        except ValueError:
            return f.strip() != ""
    return len(fields) > 1 and fields == [str(i) for i in range(len(fields))]


def _convert_csv(
    src: str,
    dst: str,
    *,
    target: str | None,
    dtype: np.dtype,
    chunk_rows: int | None,
    block_rows: int,
    progress: bool | None,
    source: str,
    header: str = "auto",
) -> dict[str, Any]:
    dtype = np.dtype(np.float64) if dtype is None else dtype
    size = os.path.getsize(src)
    bar = Progress(size, "convert", enabled=progress)
    with open(src, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
        while first and not first.strip():
            first = fh.readline()
        if not first:
            raise DataError(f"{src}: file is empty")
        fields = [f.strip().strip('"') for f in first.rstrip("\r\n").split(",")]
        names = fields if _looks_like_header(fields, header) else None
        pending = [] if names is not None else [first]
        n_cols = len(fields)
        if n_cols < 2 and target is not None:
            raise DataError(f"{src}: need at least 2 columns for a target, got {n_cols}")
        col = _column_index(target if target is not None else "-1", names, n_cols, src)
        n_features = n_cols - 1
        if n_features == 0:
            raise DataError(f"{src}: no feature columns besides the target")
        rows = _block_for(n_features, dtype, block_rows)
        writer: DatasetWriter | None = None
        line_no = 1 if names is None else 2
        done = 0
        integral = True
        try:
            while True:
                lines = pending + [ln for ln in itertools.islice(fh, rows - len(pending)) if ln.strip()]
                pending = []
                if not lines:
                    break
                block = _parse_csv_block(lines, src, line_no, n_cols)
                line_no += len(lines)
                X, y = _split_target(block, col)
                if writer is None:
                    writer = DatasetWriter(
                        dst, n_features, dtype, y_dtype=np.float64, chunk_rows=chunk_rows, source=source
                    )
                integral &= _y_dtype(y).kind == "i"
                writer.append(X, y)
                done += len(lines)
                bar.update(fh.buffer.tell() if hasattr(fh, "buffer") else done)
            if writer is None:
                raise DataError(f"{src}: no data rows")
            if integral:
                _retype_y(writer)
            feature_names = [n for i, n in enumerate(names) if i != col] if names is not None else None
            writer.close(feature_names=feature_names)
        finally:
            if writer is not None:
                writer.close()
    bar.finish()
    return {"rows": done, "features": n_features, "sparse": False}


def _convert_svmlight(
    src: str,
    dst: str,
    *,
    target: str | None,
    dtype: np.dtype,
    chunk_rows: int | None,
    block_rows: int,
    progress: bool | None,
    source: str,
) -> dict[str, Any]:
    from sklearn.datasets import load_svmlight_file

    size = os.path.getsize(src)
    if size == 0:
        raise DataError(f"{src}: file is empty")
    if target is not None:
        raise UsageError("--target does not apply to svmlight input (the label is the first field)")
    bar = Progress(size, "convert", enabled=progress)
    step = _SVMLIGHT_STEP
    dtype = np.dtype(np.float64) if dtype is None else dtype
    writer = DatasetWriter(dst, 0, dtype, sparse=True, y_dtype=np.float64, chunk_rows=chunk_rows, source=source)
    min_index = None
    max_index = -1
    labels_integral = True
    try:
        offset = 0
        while offset < size:
            try:
                # zero_based=True keeps the raw indices; 1-based files are shifted at the end.
                Xb, yb = load_svmlight_file(
                    src, n_features=_SVM_MAX_FEATURES, dtype=dtype, zero_based=True, offset=offset, length=step
                )
            except ValueError as exc:
                raise DataError(f"{src}: not valid svmlight near byte {offset}: {_short(exc)}") from None
            if Xb.shape[0]:
                if Xb.nnz:
                    lo = int(Xb.indices.min())
                    min_index = lo if min_index is None else min(min_index, lo)
                    max_index = max(max_index, int(Xb.indices.max()))
                labels_integral &= bool(np.all(yb == np.round(yb)))
                writer.append(Xb, yb)
            offset += step
            bar.update(min(offset, size))
        if writer.n_rows == 0:
            raise DataError(f"{src}: no data rows")
        writer.n_features = max_index + 1
        one_based = min_index is not None and min_index > 0
        if one_based:  # like sklearn's zero_based="auto": no index 0 anywhere means 1-based
            ind = writer.indices
            for start in range(0, ind.shape[0], 1 << 24):
                ind[start : start + (1 << 24)] = ind[start : start + (1 << 24)] - 1
            writer.n_features = max(0, writer.n_features - 1)
        if labels_integral:
            _retype_y(writer)
        rows, n_features = writer.n_rows, writer.n_features
        writer.close()
    finally:
        writer.close()
    bar.finish()
    return {"rows": rows, "features": n_features, "sparse": True}


def _retype_y(writer: DatasetWriter) -> None:
    """Store integral labels as int64 (class labels), copying in blocks."""
    old = writer.y
    n = old.shape[0]
    new = writer.fh.create_dataset("y_int64", shape=(n,), dtype=np.int64, chunks=(max(1, min(old.chunks[0], n)),))
    step = 1 << 22
    for start in range(0, n, step):
        new[start : start + step] = old[start : start + step].astype(np.int64)
    del writer.fh["y"]
    writer.fh.move("y_int64", "y")
    writer.y = writer.fh["y"]

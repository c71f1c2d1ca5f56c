"""Text X: a CSV column of documents kept as strings in HDF5 (``convert --text COLUMN``).

The result is hpcml's layout with ``X`` a 1-D variable-length UTF-8 string
dataset (one document per row, docs/data.md) and ``y`` from ``--target``.  The
CSV is read with the standard ``csv`` module (quoted fields may hold commas and
newlines), streamed in blocks; columns other than the text and the target are
not kept.
"""

from __future__ import annotations

import csv
import itertools
import os
from typing import Any

import h5py
import numpy as np

from hpcml.errors import DataError

#: Documents per write.
TEXT_BLOCK_ROWS = 8192


def _column(spec: str, names: list[str], src: str, what: str) -> int:
    """Index of a column given by header name or 0-based index (negative counts from the end)."""
    if spec in names:
        return names.index(spec)
    try:
        index = int(spec)
    except ValueError:
        raise DataError(f"{src}: no column {spec!r} for {what} (columns: {', '.join(names)})") from None
    if not -len(names) <= index < len(names):
        raise DataError(f"{src}: {what} column {index} out of range for {len(names)} columns")
    return index % len(names)


def _labels(values: list[str], src: str) -> np.ndarray:
    """Integer labels when every value is an integer, else floats; text labels are refused."""
    for kind in (np.int64, np.float64):
        try:
            return np.asarray([kind(v) for v in values], dtype=kind)
        except (ValueError, OverflowError):
            continue
    raise DataError(f"{src}: the target column is not numeric; encode labels as numbers first")


def convert_text_csv(src: str, dst: str, *, text: str, target: str | None, source: str) -> dict[str, Any]:
    """Write the CSV ``src``'s column ``text`` as string X (and ``target`` as y) to ``dst``.

    Parameters
    ----------
    src : str
        CSV file with a header line.
    dst : str
        HDF5 file to write.
    text : str
        The documents' column: header name or 0-based index.
    target : str, optional
        The label column (default: the last column that is not ``text``; none
        when the CSV has a single column).
    source : str
        Recorded in the ``created_by`` attribute.

    Returns
    -------
    dict
        ``{"rows": ..., "features": 1, "sparse": False, "text": True}``.
    """
    from hpcml.data.h5 import set_file_attrs

    with open(src, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        names = next(reader, None)
        if not names:
            raise DataError(f"{src}: file is empty (a header line naming the columns is needed with --text)")
        tcol = _column(text, names, src, "--text")
        if target is not None:
            ycol: int | None = _column(target, names, src, "--target")
        else:
            ycol = next((i for i in range(len(names) - 1, -1, -1) if i != tcol), None)
        if ycol == tcol:
            raise DataError(f"{src}: --text and --target name the same column")
        rows = 0
        labels: list[np.ndarray] = []
        with h5py.File(dst, "w") as out:
            X = out.create_dataset("X", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(4096,))
            line = 1
            while True:
                block = list(itertools.islice(reader, TEXT_BLOCK_ROWS))
                if not block:
                    break
                for offset, row in enumerate(block):
                    if len(row) != len(names):
                        raise DataError(
                            f"{src}: record {line + offset + 1} has {len(row)} fields, expected {len(names)}"
                        )
                X.resize((rows + len(block),))
                X[rows:] = np.asarray([row[tcol] for row in block], dtype=object)
                if ycol is not None:
                    labels.append(_labels([row[ycol] for row in block], src))
                rows += len(block)
                line += len(block)
            if rows == 0:
                raise DataError(f"{src}: no data rows")
            if ycol is not None:
                out.create_dataset("y", data=np.concatenate(labels))
            set_file_attrs(out, rows, source)
    return {"rows": rows, "features": 1, "sparse": False, "text": True, "size": os.path.getsize(dst)}


__all__ = ["convert_text_csv"]

"""Text X: 1-D variable-length string datasets in HDF5, and ``convert --text`` from CSV."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest

from hpcml.data.convert import convert
from hpcml.data.h5 import H5Dataset, write_dataset
from hpcml.errors import DataError, UsageError

DOCS = ["héllo, wörld", "multi\nline document", "", "plain text", "x y z"]


def test_text_round_trip_and_row_reads(tmp_path):
    y = np.array([0, 1, 0, 1, 1])
    path = write_dataset(tmp_path / "t.h5", DOCS, y)
    ds = H5Dataset(path)
    meta = ds.validate()
    assert meta["text"] is True and meta["X"] == ((5,), np.dtype(object))
    X = ds.read("X")
    assert X.dtype == object and X.tolist() == DOCS
    assert ds.read_rows(1, 3).tolist() == DOCS[1:3]
    assert ds.read_indices([4, 0, 4]).tolist() == [DOCS[4], DOCS[0], DOCS[4]]
    assert ds.read("y").tolist() == y.tolist()
    assert ds.shape == (5,) and ds.n_samples == 5
    other = write_dataset(tmp_path / "u.h5", [*DOCS[:-1], "x y Z"], y)
    assert H5Dataset(other).fingerprint() != ds.fingerprint()


def test_text_x_must_not_be_empty_or_mixed(tmp_path):
    with h5py.File(tmp_path / "e.h5", "w") as fh:
        fh.create_dataset("X", shape=(0,), dtype=h5py.string_dtype())
    with pytest.raises(DataError, match="empty"):
        H5Dataset(tmp_path / "e.h5", y=None).validate()
    with pytest.raises(DataError, match="not numeric"):
        write_dataset(tmp_path / "m.h5", np.array(["a", 1], dtype=object))


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def test_convert_keeps_a_text_column_as_strings(tmp_path):
    src = tmp_path / "docs.csv"
    _write_csv(src, [["id", "body", "label"], *[[i, d, i % 2] for i, d in enumerate(DOCS)]])
    result = convert(str(src), str(tmp_path / "docs.h5"), text="body", target="label", progress=False)
    assert result["rows"] == 5 and result["text"] is True
    ds = H5Dataset(tmp_path / "docs.h5")
    assert ds.read("X").tolist() == DOCS
    assert ds.read("y").tolist() == [0, 1, 0, 1, 0] and ds.read("y").dtype.kind == "i"
    # by index, and the default target is the last other column
    convert(str(src), str(tmp_path / "docs2.h5"), text="1", progress=False)
    assert H5Dataset(tmp_path / "docs2.h5").read("X").tolist() == DOCS


def test_convert_text_errors_leave_no_file(tmp_path):
    src = tmp_path / "docs.csv"
    _write_csv(src, [["body", "label"], ["a b", "spam"]])
    dst = tmp_path / "out.h5"
    with pytest.raises(DataError, match="no column 'nope'"):
        convert(str(src), str(dst), text="nope", progress=False)
    with pytest.raises(DataError, match="not numeric"):
        convert(str(src), str(dst), text="body", progress=False)
    with pytest.raises(DataError, match="same column"):
        convert(str(src), str(dst), text="body", target="body", progress=False)
    assert not dst.exists()
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((3, 2)))
    with pytest.raises(UsageError, match="--text applies to CSV"):
        convert(str(npy), str(dst), text="0", progress=False)

"""Converters: round trips for .npy/.npz/.csv/svmlight, streaming with bounded memory."""

from __future__ import annotations

import io
import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from hpcml.data.convert import Progress, convert
from hpcml.data.h5 import H5Dataset
from hpcml.errors import DataError, UsageError


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((257, 6))
    y = rng.integers(0, 4, 257)
    return X, y


def _check(path, X, y, dtype=np.float64):
    ds = H5Dataset(path)
    ds.validate()
    got = ds.read("X")
    assert got.dtype == dtype
    np.testing.assert_allclose(got, X.astype(dtype), rtol=0, atol=0)
    np.testing.assert_array_equal(ds.read("y"), y)


@pytest.mark.parametrize("block_rows", [1, 10, 65536])
def test_npy_round_trip(tmp_path, data, block_rows):
    X, y = data
    np.save(tmp_path / "t.npy", np.column_stack([X[:, :2], y, X[:, 2:]]))
    res = convert(str(tmp_path / "t.npy"), str(tmp_path / "o.h5"), target="2", block_rows=block_rows, chunk_rows=32)
    assert res == {"rows": 257, "features": 6, "sparse": False, "format": "npy"}
    _check(tmp_path / "o.h5", X, y)
    assert H5Dataset(tmp_path / "o.h5").read("y").dtype == np.int64  # integral labels stay labels
    with h5py.File(tmp_path / "o.h5") as fh:
        assert fh["X"].chunks == (32, 6)


def test_npy_without_target_and_float32(tmp_path, data):
    X, _ = data
    np.save(tmp_path / "t.npy", X)
    convert(str(tmp_path / "t.npy"), str(tmp_path / "o.h5"), dtype="float32")
    ds = H5Dataset(tmp_path / "o.h5", y=None)
    ds.validate()
    np.testing.assert_array_equal(ds.read("X"), X.astype(np.float32))


def test_npz_round_trip(tmp_path, data):
    X, y = data
    groups = np.arange(257) % 5
    np.savez(tmp_path / "t.npz", X=X, y=y, groups=groups, feature_names=np.array([f"c{i}" for i in range(6)]))
    convert(str(tmp_path / "t.npz"), str(tmp_path / "o.h5"))
    _check(tmp_path / "o.h5", X, y)
    np.testing.assert_array_equal(H5Dataset(tmp_path / "o.h5", groups="groups").read("groups"), groups)
    np.savez(tmp_path / "u.npz", X, y)  # arr_0 / arr_1
    convert(str(tmp_path / "u.npz"), str(tmp_path / "p.h5"))
    _check(tmp_path / "p.h5", X, y)


def _write_csv(path, X, y, header=True, target_first=False):
    with open(path, "w") as fh:
        if header:
            names = [f"f{i}" for i in range(X.shape[1])]
            fh.write(",".join(["label", *names] if target_first else [*names, "label"]) + "\n")
        for row, t in zip(X, y, strict=True):
            vals = [repr(float(v)) for v in row]
            fh.write(",".join([str(t), *vals] if target_first else [*vals, str(t)]) + "\n")


@pytest.mark.parametrize("block_rows", [1, 7, 65536])
def test_csv_round_trip(tmp_path, data, block_rows):
    X, y = data
    _write_csv(tmp_path / "t.csv", X, y, target_first=True)
    res = convert(str(tmp_path / "t.csv"), str(tmp_path / "o.h5"), target="label", block_rows=block_rows)
    assert res["rows"] == 257 and res["features"] == 6
    _check(tmp_path / "o.h5", X, y)
    with h5py.File(tmp_path / "o.h5") as fh:
        assert [s.decode() for s in fh["feature_names"][...]] == [f"f{i}" for i in range(6)]


def test_csv_without_header_defaults_to_last_column(tmp_path, data):
    X, _ = data
    yr = X[:, 0] * 0.5 + 0.25  # continuous target stays float
    _write_csv(tmp_path / "t.csv", X, yr, header=False)
    convert(str(tmp_path / "t.csv"), str(tmp_path / "o.h5"), block_rows=50)
    ds = H5Dataset(tmp_path / "o.h5")
    np.testing.assert_array_equal(ds.read("X"), X)
    np.testing.assert_array_equal(ds.read("y"), yr)
    assert ds.read("y").dtype == np.float64


def test_csv_streams_with_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    n, f = 40000, 20  # ~17 MB of text, ~6.4 MB as float64
    X = np.round(rng.standard_normal((n, f)), 4)
    y = rng.integers(0, 2, n)
    np.savetxt(tmp_path / "big.csv", np.column_stack([X, y]), delimiter=",", fmt="%.4f")
    tracemalloc.start()
    try:
        convert(str(tmp_path / "big.csv"), str(tmp_path / "o.h5"), block_rows=500, chunk_rows=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak  # a whole-file read would need > 6.4 MB for X alone
    ds = H5Dataset(tmp_path / "o.h5")
    np.testing.assert_array_equal(ds.read("X"), X)
    np.testing.assert_array_equal(ds.read("y"), y)


@pytest.mark.parametrize("zero_based", [True, False])
def test_svmlight_round_trip_sparse(tmp_path, zero_based):
    rng = np.random.default_rng(5)
    X = sp.random(300, 40, density=0.1, format="csr", random_state=rng)
    X.data = np.round(X.data, 5)
    y = rng.integers(0, 3, 300)
    dump_svmlight_file(X, y, str(tmp_path / "t.svmlight"), zero_based=zero_based)
    res = convert(str(tmp_path / "t.svmlight"), str(tmp_path / "o.h5"))
    assert res["sparse"] and res["rows"] == 300
    ref, ref_y = load_svmlight_file(str(tmp_path / "t.svmlight"))
    ds = H5Dataset(tmp_path / "o.h5")
    got = ds.read("X")
    assert sp.issparse(got) and got.shape == ref.shape
    np.testing.assert_array_equal(got.toarray(), ref.toarray())
    np.testing.assert_array_equal(ds.read("y"), ref_y.astype(np.int64))


def test_svmlight_in_small_blocks(tmp_path, monkeypatch):
    import hpcml.data.convert as conv

    rng = np.random.default_rng(6)
    X = sp.random(500, 30, density=0.2, format="csr", random_state=rng)
    X.data = np.round(X.data, 4)
    y = rng.standard_normal(500).round(3)
    dump_svmlight_file(X, y, str(tmp_path / "t.svm"))
    import sklearn.datasets

    calls = []
    orig = sklearn.datasets.load_svmlight_file

    def spy(*a, **k):
        calls.append(k["offset"])  # many small blocks; lines straddling a boundary must be read once
        return orig(*a, **k)

    monkeypatch.setattr(sklearn.datasets, "load_svmlight_file", spy)
    monkeypatch.setattr(conv, "_SVMLIGHT_STEP", 997)
    convert(str(tmp_path / "t.svm"), str(tmp_path / "o.h5"))
    assert len(calls) > 10
    ref, ref_y = orig(str(tmp_path / "t.svm"))
    ds = H5Dataset(tmp_path / "o.h5")
    np.testing.assert_array_equal(ds.read("X").toarray(), ref.toarray())
    np.testing.assert_array_equal(ds.read("y"), ref_y)


def test_convert_errors(tmp_path):
    with pytest.raises(DataError, match="input file not found"):
        convert(str(tmp_path / "no.csv"), str(tmp_path / "o.h5"))
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(UsageError, match="cannot tell the format"):
        convert(str(tmp_path / "x.txt"), str(tmp_path / "o.h5"))
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match="bad.csv: line"):
        convert(str(tmp_path / "bad.csv"), str(tmp_path / "o.h5"))
    assert not (tmp_path / "o.h5").exists()  # no half-written output left behind
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        convert(str(tmp_path / "empty.csv"), str(tmp_path / "o.h5"))
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="target column 'zzz' not found"):
        convert(str(tmp_path / "t.csv"), str(tmp_path / "o.h5"), target="zzz")
    np.save(tmp_path / "one.npy", np.ones(5))
    with pytest.raises(DataError, match="2-D"):
        convert(str(tmp_path / "one.npy"), str(tmp_path / "o.h5"))


def test_progress_only_on_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    quiet = io.StringIO()
    Progress(10, "x", stream=quiet).update(5, force=True)
    assert quiet.getvalue() == ""
    tty = Tty()
    bar = Progress(10, "x", stream=tty)
    bar.update(5, force=True)
    bar.finish()
    assert "50.0%" in tty.getvalue() and "100.0%" in tty.getvalue()

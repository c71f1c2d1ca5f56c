"""H5Dataset / write_dataset: round trips, reads, shards, validation."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from hpcml.data.h5 import FORMAT_VERSION, DatasetWriter, H5Dataset, shard_bounds, write_dataset
from hpcml.errors import DataError


@pytest.fixture
def dense(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((503, 7))
    y = rng.integers(0, 3, 503)
    groups = np.arange(503) // 10
    sw = rng.random(503)
    path = write_dataset(
        tmp_path / "d.h5",
        X,
        y,
        groups=groups,
        sample_weight=sw,
        feature_names=[f"f{i}" for i in range(7)],
        chunk_rows=64,
    )
    return path, X, y, groups, sw


@pytest.fixture
def sparse(tmp_path):
    X = sp.random(401, 50, density=0.05, format="csr", random_state=np.random.default_rng(2))
    keep = np.ones(401)
    keep[7] = 0  # an empty row
    X = sp.csr_matrix(sp.diags(keep) @ X)
    X.eliminate_zeros()
    y = np.arange(401) % 2
    return write_dataset(tmp_path / "s.h5", X, y), X, y


def test_dense_round_trip_and_attrs(dense):
    path, X, y, groups, sw = dense
    ds = H5Dataset(path, groups="groups", sample_weight="sample_weight")
    meta = ds.validate()
    assert meta["X"] == ((503, 7), np.dtype(np.float64)) and meta["sparse"] is False
    np.testing.assert_array_equal(ds.read("X"), X)
    np.testing.assert_array_equal(ds.read("y"), y)
    np.testing.assert_array_equal(ds.read("groups"), groups)
    np.testing.assert_array_equal(ds.read("sample_weight"), sw)
    assert ds.n_samples == 503 and ds.shape == (503, 7) and not ds.is_sparse
    with h5py.File(path) as fh:
        assert fh.attrs["hpcml_format_version"] == FORMAT_VERSION
        assert fh.attrs["n_samples"] == 503
        assert "write_dataset" in fh.attrs["created_by"]
        assert fh["X"].chunks == (64, 7)
        assert [s.decode() for s in fh["feature_names"][...]] == [f"f{i}" for i in range(7)]


def test_read_into_preallocated_buffer(dense):
    path, X, *_ = dense
    out = np.full(X.shape, -1.0)
    got = H5Dataset(path).read("X", out=out)
    assert got is out
    np.testing.assert_array_equal(out, X)
    with pytest.raises(ValueError):
        H5Dataset(path).read("X", out=np.empty((3, 3)))


def test_float32_dtype(tmp_path):
    X = np.arange(40, dtype=np.int64).reshape(10, 4)
    ds = H5Dataset(write_dataset(tmp_path / "f.h5", X, np.zeros(10), dtype="float32"))
    got = ds.read("X")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, X.astype(np.float32))


def test_sparse_round_trip(sparse):
    path, X, y = sparse
    ds = H5Dataset(path)
    assert ds.is_sparse and ds.n_samples == 401 and ds.shape == (401, 50)
    got = ds.read("X")
    assert sp.issparse(got) and got.shape == X.shape
    assert (got != X).nnz == 0
    np.testing.assert_array_equal(ds.read_rows(5, 9).toarray(), X[5:9].toarray())
    assert ds.read_rows(7, 8).nnz == 0


def test_read_rows(dense):
    path, X, y, *_ = dense
    ds = H5Dataset(path)
    for a, b in [(0, 503), (10, 75), (64, 128), (500, 503), (100, 100), (-3, 503)]:
        np.testing.assert_array_equal(ds.read_rows(a, b), X[a:b])
    np.testing.assert_array_equal(ds.read_rows(3, 9, role="y"), y[3:9])


@pytest.mark.parametrize("seed", range(6))
def test_read_indices_matches_fancy_indexing(dense, sparse, seed, monkeypatch):
    import hpcml.data.h5 as h5mod

    rng = np.random.default_rng(seed)
    # Small gap/span limits exercise every code path (direct runs, gap reads, split spans).
    monkeypatch.setattr(h5mod, "GAP_BYTES", [8, 1 << 10, 1 << 20][seed % 3])
    monkeypatch.setattr(h5mod, "SPAN_BYTES", [1 << 9, 1 << 30][seed % 2])
    path, X, y, *_ = dense
    ds = H5Dataset(path)
    for size in (0, 1, 17, 250, 503, 900):
        idx = rng.integers(0, 503, size) if seed % 2 else rng.permutation(503)[: min(size, 503)]
        if size == 503:
            idx = np.sort(idx)
        np.testing.assert_array_equal(ds.read_indices(idx), X[idx])
        np.testing.assert_array_equal(ds.read_indices(idx, role="y"), y[idx])
    neg = np.array([-1, 0, -503, 5])
    np.testing.assert_array_equal(ds.read_indices(neg), X[neg])
    mask = rng.random(503) < 0.3
    np.testing.assert_array_equal(ds.read_indices(mask), X[mask])
    spath, SX, _ = sparse
    sds = H5Dataset(spath)
    for size in (0, 1, 40, 401, 700):
        idx = rng.integers(0, 401, size)
        got = sds.read_indices(idx)
        assert sp.issparse(got) and got.shape == (size, 50)
        np.testing.assert_array_equal(got.toarray(), SX[idx].toarray())


def test_read_indices_out_of_range(dense):
    ds = H5Dataset(dense[0])
    with pytest.raises(IndexError):
        ds.read_indices([0, 503])
    with pytest.raises(TypeError):
        ds.read_indices([0.5])


@pytest.mark.parametrize("n", [0, 1, 7, 503, 1000])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 16])
def test_shards_partition_rows(n, size):
    bounds = [shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (a, b), (c, _) in zip(bounds[:-1], bounds[1:], strict=True):
        assert b == c and a <= b
    lengths = [b - a for a, b in bounds]
    assert max(lengths) - min(lengths) <= 1
    covered = np.concatenate([np.arange(a, b) for a, b in bounds])
    np.testing.assert_array_equal(covered, np.arange(n))
    with pytest.raises(ValueError):
        shard_bounds(n, size, size)


def test_dataset_shard_reads_cover_everything(dense):
    path, X, *_ = dense
    ds = H5Dataset(path)
    parts = [ds.read_rows(*ds.shard(r, 4)) for r in range(4)]
    np.testing.assert_array_equal(np.vstack(parts), X)


def test_fingerprint(dense, tmp_path):
    path, X, y, *_ = dense
    a = H5Dataset(path).fingerprint()
    assert a == H5Dataset(path).fingerprint()
    X2 = X.copy()
    X2[0, 0] += 1
    b = H5Dataset(write_dataset(tmp_path / "o.h5", X2, y)).fingerprint()
    assert a != b
    assert H5Dataset(path, y=None).fingerprint() != a


def test_dataset_writer_appends(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    y = rng.integers(0, 2, 100)
    with DatasetWriter(tmp_path / "w.h5", 3, np.float32, y_dtype=np.int64, chunk_rows=16) as w:
        for start in range(0, 100, 30):
            w.append(X[start : start + 30], y[start : start + 30])
    ds = H5Dataset(tmp_path / "w.h5")
    np.testing.assert_array_equal(ds.read("X"), X.astype(np.float32))
    np.testing.assert_array_equal(ds.read("y"), y)
    with h5py.File(tmp_path / "w.h5") as fh:
        assert fh.attrs["n_samples"] == 100


def _make(tmp_path, name, **datasets):
    path = tmp_path / name
    with h5py.File(path, "w") as fh:
        for k, v in datasets.items():
            fh.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize(
    "case, pattern",
    [
        ("missing_file", "data file not found"),
        ("not_hdf5", "not an HDF5 file"),
        ("missing_dataset", "dataset 'y' (y) not found"),
        ("length", "X has 5 rows but y 'y' has 4"),
        ("strings", "not numeric"),
        ("one_d", "must be 2-D"),
        ("empty", "is empty"),
        ("nan_y", "NaN/inf"),
    ],
)
def test_validation_errors(tmp_path, case, pattern):
    X = np.ones((5, 2))
    if case == "missing_file":
        path = tmp_path / "nope.h5"
    elif case == "not_hdf5":
        path = tmp_path / "text.h5"
        path.write_text("hello\n")
    elif case == "missing_dataset":
        path = _make(tmp_path, "a.h5", X=X)
    elif case == "length":
        path = _make(tmp_path, "a.h5", X=X, y=np.ones(4))
    elif case == "strings":
        path = _make(tmp_path, "a.h5", X=np.array([[b"a", b"b"]] * 5), y=np.ones(5))
    elif case == "one_d":
        path = _make(tmp_path, "a.h5", X=np.ones(5), y=np.ones(5))
    elif case == "empty":
        path = _make(tmp_path, "a.h5", X=np.ones((0, 2)), y=np.ones(0))
    else:
        path = _make(tmp_path, "a.h5", X=X, y=np.array([1.0, np.nan, 0, 1, 0]))
    ds = H5Dataset(path)
    with pytest.raises(DataError) as info:
        ds.validate(check_nan_y=True)
    message = str(info.value)
    assert message.startswith(str(path)) and pattern in message
    assert "\n" not in message
    if case == "nan_y":
        ds.validate()  # NaN in y is only an error on the cv path


def test_import_hpcml_data_is_light():
    code = "import sys, hpcml.data; print('numpy' in sys.modules, 'h5py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

"""`python -m hpcml.data` under real mpiexec: synth determinism, info, one-line errors."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
from helpers import PYTHON, run, run_mpi

from hpcml.data.h5 import H5Dataset, write_dataset


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_synth_is_byte_identical_for_1_and_3_ranks(tmp_path):
    args = [
        "--n-samples",
        "5003",
        "--n-features",
        "13",
        "--kind",
        "classification",
        "--seed",
        "7",
        "--block-rows",
        "300",
    ]
    one = run_mpi(1, ["-m", "hpcml.data", "synth", str(tmp_path / "one.h5"), *args], timeout=60)
    three = run_mpi(3, ["-m", "hpcml.data", "synth", str(tmp_path / "three.h5"), *args, "--json"], timeout=60)
    assert one.returncode == 0, one.stderr
    assert three.returncode == 0, three.stderr
    assert '"ranks": 3' in three.stdout and three.stdout.count("\n") == 1  # rank 0 reports once
    assert _sha(tmp_path / "one.h5") == _sha(tmp_path / "three.h5")
    a, b = H5Dataset(tmp_path / "one.h5"), H5Dataset(tmp_path / "three.h5")
    a.validate(check_nan_y=True)
    X = a.read("X")
    np.testing.assert_array_equal(X, b.read("X"))
    assert X.shape == (5003, 13) and np.isfinite(X).all()
    assert np.unique(X[:, 0]).size > 4000  # real random data, no unwritten (zero) blocks
    assert np.count_nonzero(np.all(X == 0, axis=1)) == 0
    assert set(np.unique(a.read("y"))) == {0, 1}
    with h5py.File(tmp_path / "one.h5") as fh:
        assert fh["X"].chunks == (300, 13)
        assert fh.attrs["n_samples"] == 5003


def test_synth_seed_and_kind_matter(tmp_path):
    from mpi4py import MPI

    from hpcml.data.synth import synth

    common = dict(n_samples=1000, n_features=4, block_rows=128, comm=MPI.COMM_SELF)
    synth(str(tmp_path / "a.h5"), seed=0, kind="regression", **common)
    synth(str(tmp_path / "b.h5"), seed=1, kind="regression", **common)
    synth(str(tmp_path / "c.h5"), seed=0, kind="regression", **common)
    synth(str(tmp_path / "d.h5"), seed=0, kind="blobs", dtype="float32", **common)
    assert _sha(tmp_path / "a.h5") == _sha(tmp_path / "c.h5")
    assert _sha(tmp_path / "a.h5") != _sha(tmp_path / "b.h5")
    reg = H5Dataset(tmp_path / "a.h5")
    assert reg.read("y").dtype == np.float64 and np.unique(reg.read("y")).size == 1000
    blobs = H5Dataset(tmp_path / "d.h5")
    assert blobs.read("X").dtype == np.float32 and set(np.unique(blobs.read("y"))) == {0, 1, 2}


def test_info_reports_shape_chunks_classes_and_nans(tmp_path):
    X = np.ones((10, 3))
    X[2, 1] = np.nan
    X[5, 0] = np.nan
    write_dataset(tmp_path / "d.h5", X, np.array([0] * 7 + [1] * 3), chunk_rows=4)
    res = run([PYTHON, "-m", "hpcml.data", "info", str(tmp_path / "d.h5")], timeout=60)
    assert res.returncode == 0, res.stderr
    assert "10 x 3 float64, chunks [4, 3]" in res.stdout
    assert "X NaN:    2" in res.stdout
    assert "0: 7 (70.0%)" in res.stdout and "1: 3 (30.0%)" in res.stdout


def _cases(tmp_path):
    X = np.ones((5, 2))

    def make(name, **datasets):
        with h5py.File(tmp_path / name, "w") as fh:
            for k, v in datasets.items():
                fh.create_dataset(k, data=v)
        return str(tmp_path / name)

    (tmp_path / "text.h5").write_text("not hdf5\n")
    return {
        "missing file": (["info", str(tmp_path / "absent.h5")], "data file not found"),
        "not hdf5": (["info", str(tmp_path / "text.h5")], "not an HDF5 file"),
        "missing dataset": (["info", make("m.h5", X=X), "--X", "features"], "dataset 'features' (X) not found"),
        "length mismatch": (["info", make("l.h5", X=X, y=np.ones(3))], "X has 5 rows but y 'y' has 3"),
        "non-numeric": (["info", make("s.h5", X=np.array([[b"a"]] * 5), y=np.ones(5))], "not numeric"),
        "1-D X": (["info", make("o.h5", X=np.ones(5), y=np.ones(5))], "must be 2-D"),
        "empty": (["info", make("e.h5", X=np.ones((0, 3)), y=np.ones(0))], "is empty"),
        "convert missing input": (
            ["convert", str(tmp_path / "absent.csv"), str(tmp_path / "o.h5")],
            "input file not found",
        ),
        "bad option": (["synth", str(tmp_path / "x.h5"), "--n-samples", "10"], "required"),
    }


CASES = [
    "missing file",
    "not hdf5",
    "missing dataset",
    "length mismatch",
    "non-numeric",
    "1-D X",
    "empty",
    "convert missing input",
    "bad option",
]


@pytest.mark.parametrize("case", CASES)
def test_errors_exit_2_with_one_line(tmp_path, case):
    args, pattern = _cases(tmp_path)[case]
    res = run([PYTHON, "-m", "hpcml.data", *args], timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("hpcml: error: ") and pattern in lines[0]
    assert "Traceback" not in res.stderr
    if case not in ("bad option", "convert missing input"):
        assert lines[0].startswith(f"hpcml: error: {args[1]}: ")


def test_synth_error_under_mpi_is_one_line(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "x.h5"
    res = run_mpi(2, ["-m", "hpcml.data", "synth", str(out), "--n-samples", "10", "--n-features", "2"], timeout=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [f"hpcml: error: {out}: directory {out.parent} does not exist"]


def test_synth_blobs_with_given_centres_is_byte_identical_for_1_and_3_ranks(tmp_path):
    centres = np.random.RandomState(0).uniform(-10, 10, size=(12, 20))
    np.save(tmp_path / "c.npy", centres)
    args = [
        "--n-samples",
        "4001",
        "--n-features",
        "20",
        "--kind",
        "blobs",
        "--seed",
        "3",
        "--block-rows",
        "250",
        "--centers",
        str(tmp_path / "c.npy"),
        "--cluster-std",
        "0.5",
    ]
    one = run_mpi(1, ["-m", "hpcml.data", "synth", str(tmp_path / "one.h5"), *args], timeout=60)
    three = run_mpi(3, ["-m", "hpcml.data", "synth", str(tmp_path / "three.h5"), *args], timeout=60)
    assert one.returncode == 0 and three.returncode == 0, (one.stderr, three.stderr)
    assert _sha(tmp_path / "one.h5") == _sha(tmp_path / "three.h5")
    ds = H5Dataset(tmp_path / "one.h5")
    X, y = ds.read("X"), ds.read("y")
    assert set(np.unique(y)) == set(range(12))
    resid = X - centres[y]
    assert abs(resid.std() - 0.5) < 0.02 and abs(resid.mean()) < 0.02
    with h5py.File(tmp_path / "one.h5") as fh:
        np.testing.assert_array_equal(fh["centers"][...], centres)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--kind", "classification"], "--centers must be a (n_clusters, 20) array for --kind blobs"),
        (["--kind", "blobs", "--n-classes", "3"], "--n-classes 3 does not match the 12 centres"),
        (["--kind", "blobs", "--cluster-std", "-1"], "--cluster-std must be a finite number >= 0"),
    ],
)
def test_synth_bad_centres_exit_2_with_one_line(tmp_path, extra, message):
    np.save(tmp_path / "c.npy", np.zeros((12, 20)))
    res = run_mpi(
        2,
        [
            "-m",
            "hpcml.data",
            "synth",
            str(tmp_path / "o.h5"),
            "--n-samples",
            "100",
            "--n-features",
            "20",
            "--centers",
            str(tmp_path / "c.npy"),
            *extra,
        ],
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: ") and message in lines[0], res.stderr
    assert not (tmp_path / "o.h5").exists()


# Malformed inputs to `hpcml.data convert`: one error line naming the input, exit 2, no output file written.
MALFORMED = {
    "ragged csv rows": ("t.csv", "a,b,y\n1,2,0\n3,4\n5,6,1\n", [], "number of columns changed from 3 to 2"),
    "header-only csv": ("t.csv", "a,b,y\n", [], "no data rows"),
    "empty csv cell": ("t.csv", "a,b,y\n1,,0\n3,4,1\n", [], "could not convert string '' to float64"),
    "quoted csv string": ("t.csv", 'a,b,y\n"x",2,0\n3,4,1\n', [], "could not convert string '\"x\"'"),
    "target column out of range": ("t.csv", "a,b,y\n1,2,0\n3,4,1\n", ["--target", "7"], "target column 7 out of range"),
    "bad svmlight value": ("t.svm", "0 1:2 3:x\n1 2:1\n", [], "not valid svmlight"),
    "not svmlight at all": ("t.svm", "this is not svmlight\n", [], "not valid svmlight"),
    "npz without X": ("t.npz", None, [], "no array named 'X' (or 'arr_0'); found y"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_convert_malformed_input_is_one_error_line(tmp_path, case):
    name, text, extra, needle = MALFORMED[case]
    source, out = tmp_path / name, tmp_path / "out.h5"
    if text is None:
        np.savez(source, y=np.zeros(3))
    else:
        source.write_text(text)
    res = run([PYTHON, "-m", "hpcml.data", "convert", str(source), str(out), *extra], timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hpcml: error: {source}: "), res.stderr
    assert needle in lines[0], lines[0]
    assert not out.exists()


def test_convert_keeps_nan_cells_as_nan(tmp_path):
    # NaN is a float: convert writes it through; hpcml.cv / hpcml.sgd reject it when they load the data
    source = tmp_path / "t.csv"
    source.write_text("a,b,y\n1,nan,0\n3,4,1\n")
    res = run([PYTHON, "-m", "hpcml.data", "convert", str(source), str(tmp_path / "o.h5")], timeout=60)
    assert res.returncode == 0, res.stderr
    ds = H5Dataset(tmp_path / "o.h5")
    np.testing.assert_array_equal(ds.read("X"), [[1.0, np.nan], [3.0, 4.0]])
    np.testing.assert_array_equal(ds.read("y"), [0, 1])

"""`python -m hpcml.cluster` and hpcml.cluster.KMeans under real mpiexec (hard timeouts).

Also runs the pytest-mpi KMeans tests at 3 ranks (the tier runs 1, 2, 4), so the
exactness against scikit-learn is checked at 1, 2, 3 and 4 ranks.
"""

from __future__ import annotations

import json

import h5py
import joblib
import numpy as np
import pytest
from helpers import ROOT, run_mpi
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from tier_launch import run_tier_file

from hpcml.data.h5 import write_dataset


def _data(tmp_path, n=3001, nan_row=None):
    X, _ = make_blobs(n, n_features=6, centers=5, cluster_std=2.5, random_state=0)
    if nan_row is not None:
        X[nan_row, 2] = np.nan
    write_dataset(tmp_path / "blobs.h5", X, None)
    return X


def _config(tmp_path, model="", extra=""):
    cfg = tmp_path / "km.toml"
    cfg.write_text(f'[data]\npath = "blobs.h5"\n[model]\nn_clusters = 5\n{model}\n[run]\nthreads_per_rank = 1\n{extra}')
    return cfg


def _one_error_line(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_mpi_tier_kmeans_at_3_ranks(tmp_path):
    # every rank's outcome file, not the ranks' summary lines (the launcher may interleave them)
    outcomes = run_tier_file(3, ROOT / "tests" / "mpi" / "test_kmeans_mpi.py", tmp_path, timeout=600)
    assert len(outcomes) >= 30


@pytest.mark.parametrize("ranks", [1, 3])
def test_cli_fit_equals_sklearn_and_writes_every_output(tmp_path, ranks):
    X = _data(tmp_path)
    init = X[[0, 10, 20, 30, 40]]
    np.save(tmp_path / "init.npy", init)
    cfg = _config(tmp_path, 'init_centers = "init.npy"')
    res = run_mpi(ranks, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "out")], timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{ranks} rank(s)" in res.stdout
    ref = SKKMeans(5, init=init, n_init=1).fit(X)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["labels.h5", "model.h5", "model.joblib", "run.json"]
    with h5py.File(out / "model.h5") as fh:
        np.testing.assert_allclose(fh["cluster_centers"][...], ref.cluster_centers_, rtol=1e-9)
        assert fh.attrs["n_iter"] == ref.n_iter_
        np.testing.assert_allclose(fh.attrs["inertia"], ref.inertia_, rtol=1e-9)
    with h5py.File(out / "labels.h5") as fh:
        np.testing.assert_array_equal(fh["labels"][...], ref.labels_)
    model = joblib.load(out / "model.joblib")
    assert model.comm is None and not hasattr(model, "labels_")
    np.testing.assert_array_equal(model.predict(X), ref.labels_)
    summary = json.loads((out / "run.json").read_text())
    assert summary["ranks"] == ranks and len(summary["per_rank"]) == ranks
    assert summary["n_samples"] == 3001 and summary["n_iter"] == ref.n_iter_
    assert sum(r["rows"] for r in summary["per_rank"]) == 3001
    assert all(len(r["iter_s"]) == ref.n_iter_ for r in summary["per_rank"])


def test_cli_refuses_to_overwrite_then_overwrites(tmp_path):
    _data(tmp_path)
    cfg = _config(tmp_path, 'init = "k-means||"\nrandom_state = 4')
    out = tmp_path / "out"
    assert run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(out)], timeout=120).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(out)], timeout=120)
    assert res.returncode == 2
    line = _one_error_line(res)
    assert line == (
        f"hpcml: error: {out}: output folder already holds results (model.h5, model.joblib, labels.h5, run.json); "
        "use --overwrite to replace them or another --out"
    ), line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    res = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(out), "--overwrite"], timeout=120)
    assert res.returncode == 0, res.stderr
    with h5py.File(out / "model.h5") as a:
        centres = a["cluster_centers"][...]
    one = run_mpi(1, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "one")], timeout=120)
    assert one.returncode == 0, one.stderr
    with h5py.File(tmp_path / "one" / "model.h5") as b:  # k-means|| does not depend on the rank count
        np.testing.assert_allclose(b["cluster_centers"][...], centres, rtol=1e-9)


def test_dry_run_checks_and_writes_nothing(tmp_path):
    _data(tmp_path)
    cfg = _config(tmp_path)
    res = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"], timeout=60)
    assert res.returncode == 0, res.stderr
    assert "dry run" in res.stdout and "3001 x 6 float64" in res.stdout and "2 rank(s)" in res.stdout
    assert res.stdout.count("dry run") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("n_clusters = 5\nepochs = 3", "", "unknown key 'epochs'"),
        ('init = "kmeans++"', "", "[model] init: expected one of"),
        ("n_init = 0", "", "[model] n_init: must be"),
        ('init_centers = "missing.npy"', "", "init_centers: cannot read"),
    ],
)
def test_bad_config_exit_2_one_line(tmp_path, model, extra, message):
    _data(tmp_path)
    cfg = tmp_path / "km.toml"
    cfg.write_text(f'[data]\npath = "blobs.h5"\n[model]\n{model}\n{extra}')
    res = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "out")], timeout=60)
    assert res.returncode == 2, res.stderr
    assert message in _one_error_line(res)
    assert not (tmp_path / "out").exists()


def test_bad_data_exit_2_one_line_and_no_results(tmp_path):
    _data(tmp_path, nan_row=2900)  # in the last rank's shard only
    res = run_mpi(3, ["-m", "hpcml.cluster", str(_config(tmp_path)), "--out", str(tmp_path / "out")], timeout=60)
    assert res.returncode == 2, res.stderr
    line = _one_error_line(res)
    assert "rows 2000:3001" in line and "Input X contains NaN" in line
    assert list((tmp_path / "out").iterdir()) == []

    write_dataset(tmp_path / "blobs.h5", np.zeros((4, 6)), None)
    res = run_mpi(2, ["-m", "hpcml.cluster", str(_config(tmp_path)), "--out", str(tmp_path / "o2")], timeout=60)
    assert res.returncode == 2
    assert "n_samples=4 should be >= n_clusters=5." in _one_error_line(res)

    (tmp_path / "blobs.h5").unlink()
    res = run_mpi(2, ["-m", "hpcml.cluster", str(_config(tmp_path)), "--out", str(tmp_path / "o3")], timeout=60)
    assert res.returncode == 2
    assert "data file not found" in _one_error_line(res)


def test_kmeans_fit_error_on_one_rank_ends_every_rank(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(
        "import numpy as np\nfrom mpi4py import MPI\nfrom hpcml.cluster import KMeans\n"
        "X = np.random.RandomState(MPI.COMM_WORLD.rank).normal(size=(50, 3))\n"
        "if MPI.COMM_WORLD.rank == 2:\n    X = X[:, :2]\n"
        "KMeans(3, comm=MPI.COMM_WORLD).fit(X, sharded=True)\n"
    )
    res = run_mpi(3, [str(script)], timeout=60)
    assert res.returncode != 0
    assert "ranks disagree on the number of features: [2, 3]" in res.stderr

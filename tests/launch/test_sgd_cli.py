"""CLI tests of ``mpiexec -n N python -m hpcml.sgd`` (real launches under a hard timeout)."""

from __future__ import annotations

import json

import joblib
import numpy as np
from helpers import run_mpi


def test_demo_two_ranks_then_same_model_from_config_on_one_rank(tmp_path):
    out = tmp_path / "demo"
    res = run_mpi(2, ["-m", "hpcml.sgd", "--demo", "--out", str(out)], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "2 rank(s)" in res.stdout and "test accuracy" in res.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "demo-test.h5",
        "demo-train.h5",
        "history.json",
        "loss.png",
        "model.joblib",
        "model.npz",
        "run.json",
    ]
    hist = json.loads((out / "run.json").read_text())
    assert (out / "history.json").read_bytes() == (out / "run.json").read_bytes()  # the old name, one release
    assert hist["ranks"] == 2 and len(hist["per_rank"]) == 2
    assert hist["n_iter"] == len(hist["epochs"]) >= 1
    for ep in hist["epochs"]:
        assert len(ep["compute_s"]) == 2 and len(ep["comm_s"]) == 2
        assert ep["samples"] == 16000
    assert all(r["comm_s"] > 0 and r["compute_s"] > 0 for r in hist["per_rank"])
    assert hist["test"]["accuracy"] > 0.65
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    npz = np.load(out / "model.npz")
    assert npz["coef"].shape == (1, 20) and npz["classes"].tolist() == [0, 1]
    model = joblib.load(out / "model.joblib")
    np.testing.assert_array_equal(model.coef_, npz["coef"])
    assert model.comm is None  # the communicator handle is not pickled

    # the same training from a config at 1 rank: global sampling gives the same model
    cfg = tmp_path / "train.toml"
    cfg.write_text(
        f'[data]\npath = "{out / "demo-train.h5"}"\ntest_path = "{out / "demo-test.h5"}"\n'
        "[output]\nplot = false\n[run]\nthreads_per_rank = 1\n"
    )
    res1 = run_mpi(1, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "one")], timeout=120)
    assert res1.returncode == 0, res1.stderr
    one = np.load(tmp_path / "one" / "model.npz")
    assert np.allclose(one["coef"], npz["coef"], rtol=1e-10, atol=1e-12)
    assert np.allclose(one["intercept"], npz["intercept"], rtol=1e-10, atol=1e-12)
    assert not (tmp_path / "one" / "loss.png").exists()
    leftovers = [p.name for p in (tmp_path / "one").iterdir() if ".tmp" in p.name]
    assert leftovers == []


def test_bad_config_exits_2_with_one_error_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\npath = "x.h5"\n[train]\nbatch_size = 64\nepochs = 3\n')
    res = run_mpi(2, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "o")], timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("hpcml: error:")]
    assert len(lines) == 1, res.stderr
    assert "[train]" in lines[0] and "unknown key 'epochs'" in lines[0]
    assert "Traceback" not in res.stderr


def test_missing_data_file_exits_2(tmp_path):
    cfg = tmp_path / "nodata.toml"
    cfg.write_text('[data]\npath = "missing.h5"\n[model]\nloss = "hinge"\n')
    res = run_mpi(2, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "o")], timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("hpcml: error:")]
    assert len(lines) == 1 and "missing.h5" in lines[0] and "not found" in lines[0], res.stderr
    assert not (tmp_path / "o" / "model.npz").exists()


def test_missing_test_file_fails_before_training(tmp_path):
    from sklearn.datasets import make_classification

    from hpcml.data.h5 import write_dataset

    X, y = make_classification(500, 5, random_state=0)
    write_dataset(tmp_path / "train.h5", X, y)
    cfg = tmp_path / "t.toml"
    cfg.write_text('[data]\npath = "train.h5"\ntest_path = "nope.h5"\n[run]\nthreads_per_rank = 1\n')
    res = run_mpi(2, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "o")], timeout=60)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("hpcml: error:")]
    assert len(lines) == 1 and "nope.h5" in lines[0] and "not found" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "model.npz").exists()  # nothing was trained


def test_weighted_config_equals_api_and_divergence_is_one_error_line(tmp_path):
    from sklearn.datasets import make_regression

    from hpcml.data.h5 import write_dataset
    from hpcml.sgd import SGDRegressor

    X, y = make_regression(400, 6, noise=1.0, random_state=0)
    y = y / y.std()
    w = np.random.default_rng(0).uniform(0.0, 2.0, size=len(y))
    write_dataset(tmp_path / "w.h5", X, y, sample_weight=w)
    cfg = tmp_path / "w.toml"
    cfg.write_text(
        '[data]\npath = "w.h5"\nsample_weight = "sample_weight"\n[model]\ntype = "regressor"\n'
        '[train]\nmax_iter = 4\ntol = "none"\nbatch_size = 32\n[output]\nplot = false\n[run]\nthreads_per_rank = 1\n'
    )
    res = run_mpi(2, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "o")], timeout=120)
    assert res.returncode == 0, res.stderr
    ref = SGDRegressor(comm="self", max_iter=4, tol=None, batch_size=32).fit(X, y, sample_weight=w)
    got = np.load(tmp_path / "o" / "model.npz")
    assert np.allclose(got["coef"], ref.coef_, rtol=1e-10, atol=1e-12)

    write_dataset(tmp_path / "big.h5", X * 1e6, y)
    cfg.write_text(
        '[data]\npath = "big.h5"\n[model]\ntype = "regressor"\n[train]\nmax_iter = 200\ntol = "none"\n'
        "[schedule]\neta0 = 1.0\n[run]\nthreads_per_rank = 1\n"
    )
    res = run_mpi(2, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "d")], timeout=120)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("hpcml: error:")]
    assert len(lines) == 1 and "diverged" in lines[0], res.stderr
    assert "Traceback" not in res.stderr

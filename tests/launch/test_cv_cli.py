"""The hpcml.cv command, launched with real mpiexec under a timeout."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from compare import assert_cv_results_equal
from cvfixtures import BASIC, load_results, write_config, write_digits
from helpers import PYTHON, run, run_mpi
from sklearn import model_selection as skms
from sklearn.svm import SVC


def _as_sklearn(columns):
    """cv_results.json columns -> arrays comparable with scikit-learn's cv_results_."""
    out = {}
    for key, values in columns.items():
        if key == "params" or key.startswith("param_") or key == "model":
            out[key] = values
        else:
            out[key] = np.array([np.nan if v is None else v for v in values])
    return out


def _basic_reference(X, y):
    """scikit-learn's run of the BASIC config."""
    return skms.GridSearchCV(
        SVC(),
        {"C": [0.5, 5], "gamma": [1e-3, 1e-2]},
        cv=skms.StratifiedKFold(3, shuffle=True, random_state=0),
        scoring=["accuracy", "f1_macro"],
        refit="accuracy",
    ).fit(X, y)


@pytest.fixture
def basic(tmp_path):
    X, y = write_digits(tmp_path / "digits.h5")
    cfg = write_config(tmp_path / "search.toml", BASIC)
    return tmp_path, cfg, X, y


@pytest.mark.parametrize("n", [1, 2, 4])
def test_cli_equals_sklearn(basic, n):
    tmp, cfg, X, y = basic
    out = tmp / f"out{n}"
    proc = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=180)
    assert proc.returncode == 0, proc.stderr
    ref = _basic_reference(X, y)
    ours = _as_sklearn(load_results(out))
    assert ours["model"] == ["svc"] * 4
    assert_cv_results_equal(ours, ref.cv_results_, extra=("model",))
    best = json.loads((out / "best.json").read_text())
    assert best["best_index"] == ref.best_index_
    assert best["best_params"] == ref.best_params_
    assert best["best_score"] == pytest.approx(ref.best_score_, abs=1e-12)
    assert (out / "best_model.joblib").exists()
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    units = [r["unit"] for r in journal if r["type"] == "unit"]
    assert sorted(units) == list(range(12))
    report = json.loads((out / "run.json").read_text())
    assert report["n_ranks"] == n and len(report["busy_seconds"]) == n
    if n > 1:
        assert report["busy_seconds"][0] > 0, "rank 0 must fit units too"
    header = (out / "cv_results.csv").read_text().splitlines()[0]
    assert "mean_test_accuracy" in header and "rank_test_f1_macro" in header


def test_single_metric_uses_score_names(tmp_path):
    X, y = write_digits(tmp_path / "digits.h5", n=300)
    cfg = write_config(
        tmp_path / "s.toml",
        BASIC.replace('metrics = ["accuracy", "f1_macro"]\nrefit = "accuracy"', 'metrics = "f1_macro"'),
    )
    out = tmp_path / "o"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    ref = skms.GridSearchCV(
        SVC(),
        {"C": [0.5, 5], "gamma": [1e-3, 1e-2]},
        scoring="f1_macro",
        cv=skms.StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    assert_cv_results_equal(_as_sklearn(load_results(out)), ref.cv_results_, extra=("model",))


def test_multi_model_pipeline_and_groups(tmp_path):
    X, y = write_digits(tmp_path / "digits.h5", n=300, groups=True)
    cfg = write_config(
        tmp_path / "m.toml",
        """
[data]
path = "digits.h5"
groups = "groups"

[[model]]
name = "scaled_svc"
steps = [ { name = "scale", estimator = "sklearn.preprocessing.StandardScaler" },
          { name = "clf", estimator = "sklearn.svm.SVC" } ]
grid = { clf__C = [1, 10] }

[[model]]
name = "tree"
estimator = "sklearn.tree.DecisionTreeClassifier"
params = { random_state = 0 }
grid = { max_depth = [2, "None"] }

[cv]
splitter = "GroupKFold"
n_splits = 3
""",
    )
    out = tmp_path / "o"
    proc = run_mpi(3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = load_results(out)
    assert res["model"] == ["scaled_svc", "scaled_svc", "tree", "tree"]
    assert res["params"][3] == {"max_depth": None}
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    groups = np.arange(300) % 6
    cv = skms.GroupKFold(3)
    a = skms.GridSearchCV(Pipeline([("scale", StandardScaler()), ("clf", SVC())]), {"clf__C": [1, 10]}, cv=cv).fit(
        X, y, groups=groups
    )
    b = skms.GridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [2, None]}, cv=cv).fit(
        X, y, groups=groups
    )
    for k in range(3):
        key = f"split{k}_test_score"
        np.testing.assert_allclose(res[key], list(a.cv_results_[key]) + list(b.cv_results_[key]), rtol=0, atol=1e-12)


def test_demo_two_ranks(tmp_path):
    proc = run_mpi(2, ["-m", "hpcml.cv", "--demo", "--out", str(tmp_path / "demo")], timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "best:" in proc.stdout and "svc" in proc.stdout
    res = load_results(tmp_path / "demo")
    assert set(res["model"]) == {"svc", "logreg"}
    assert len(res["params"]) == 16
    assert max(v for v in res["mean_test_accuracy"]) > 0.95


def test_dry_run_prints_plan_and_fits_nothing(basic):
    tmp, cfg, _, _ = basic
    out = tmp / "dry"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--dry-run"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 candidates x 3 folds = 12 units" in proc.stdout
    assert re.search(r"ranks\s+2 on 1 node", proc.stdout)
    assert re.search(r"^\s+rank\s+host\s+node\s+local\s+threads\s+cpus\s+blas/openmp$", proc.stdout, re.M)
    for rank in range(2):  # one layout line per rank: 1 thread each, and the BLAS limited to it
        assert re.search(rf"^\s+{rank}\s+\S+\s+0\s+{rank}/2\s+1\s+.*openblas=1", proc.stdout, re.M), proc.stdout
    assert not (out / "cv_results.json").exists()


# --- one clear error line, exit 2 ------------------------------------------------------


def _error_case(tmp_path, config_text, n=2, data=True, mismatch=False):
    if data:
        if mismatch:
            import h5py

            with h5py.File(tmp_path / "digits.h5", "w") as fh:
                fh["X"] = np.zeros((10, 3))
                fh["y"] = np.zeros(9)
        else:
            write_digits(tmp_path / "digits.h5", n=120)
    cfg = write_config(tmp_path / "bad.toml", config_text)
    proc = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o")], timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return proc, lines


BAD = {
    "missing-data-file": (BASIC.replace("digits.h5", "nope.h5"), "nope.h5", "not found"),
    "missing-dataset": (BASIC.replace('path = "digits.h5"', 'path = "digits.h5"\ny = "labels"'), "labels", "not found"),
    "bad-key": (BASIC.replace("n_splits = 3", "n_splitz = 3"), "n_splitz", "unknown key"),
    "unknown-estimator": (BASIC.replace("sklearn.svm.SVC", "sklearn.svm.SVX"), "sklearn.svm.SVX", "unknown estimator"),
    "unknown-parameter": (BASIC.replace("gamma = [", "gama = ["), "gama", "invalid parameter"),
    "unknown-splitter": (BASIC.replace('"StratifiedKFold"', '"StratKFold"'), "StratKFold", "unknown splitter"),
    "unknown-scorer": (BASIC.replace('"f1_macro"]', '"f1_macroo"]'), "f1_macroo", "unknown scorer"),
    "empty-grid": (BASIC.replace("gamma = [1e-3, 1e-2]", "gamma = []"), "gamma", "empty"),
    "wrong-type": (
        BASIC.replace("n_splits = 3", 'n_splits = "three"'),
        "[cv] n_splits",
        "expected an integer, got 'three'",
    ),
    "toml-syntax": (BASIC.replace("[cv]", "[cv"), "line", "TOML syntax error"),
    "too-many-splits": (BASIC.replace("n_splits = 3", "n_splits = 50"), "[cv]", "n_splits=50"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_error_line(tmp_path, case):
    text, needle, needle2 = BAD[case]
    proc, lines = _error_case(tmp_path, text)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hpcml: error: "), lines
    assert needle in lines[0] and needle2 in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_xy_length_mismatch(tmp_path):
    proc, lines = _error_case(tmp_path, BASIC, mismatch=True)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "X has 10 rows" in lines[0] and "9" in lines[0]


def test_missing_config_file(tmp_path):
    proc = run_mpi(2, ["-m", "hpcml.cv", str(tmp_path / "none.toml")], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"hpcml: error: {tmp_path / 'none.toml'}: config file not found"]


def test_bad_usage(tmp_path):
    proc = run([PYTHON, "-m", "hpcml.cv"], timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("hpcml: error:") and len(proc.stderr.strip().splitlines()) == 1


def test_out_folder_with_other_results_is_refused(basic):
    tmp, cfg, _, _ = basic
    out = tmp / "o"
    assert run_mpi(1, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120).returncode == 0
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--overwrite" in proc.stderr
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--overwrite"], timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_numpy_not_loaded_before_thread_limits():
    code = (
        "import sys\n"
        "import hpcml, hpcml.cv, hpcml.cv.__main__ as m, hpcml.threads as t, hpcml.comm\n"
        "assert 'numpy' not in sys.modules, 'numpy loaded by the entry path'\n"
        "from mpi4py import MPI\n"
        "assert 'numpy' not in sys.modules, 'mpi4py loaded numpy'\n"
        "lay = t.apply_layout(t.plan_layout(MPI.COMM_WORLD, 1))\n"
        "assert lay.env_applied\n"
        "import os, numpy\n"
        "assert os.environ['OPENBLAS_NUM_THREADS'] == '1'\n"
        "from threadpoolctl import threadpool_info\n"
        "assert all(p['num_threads'] == 1 for p in threadpool_info()), threadpool_info()\n"
        "print('ok')\n"
    )
    proc = run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_one_rank_without_mpiexec(basic):
    tmp, cfg, X, y = basic
    out = tmp / "plain"
    proc = run([PYTHON, "-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=180)
    assert proc.returncode == 0, proc.stderr
    ref = _basic_reference(X, y)
    assert_cv_results_equal(_as_sklearn(load_results(out)), ref.cv_results_, extra=("model",))
    assert json.loads((out / "run.json").read_text())["n_ranks"] == 1

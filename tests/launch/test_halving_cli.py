"""``strategy = "halving"`` under real mpiexec: scikit-learn's numbers, one error line, SIGTERM mid-rung + resume.

Also runs the pytest-mpi halving tests (tests/mpi/test_cv_halving_mpi.py) at 3
ranks; tests/test_mpi_tier.py runs them at 1, 2 and 4.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from cvfixtures import write_config, write_digits
from helpers import PYTHON, ROOT, mpiexec_path, run, run_mpi
from test_faults import _finish, _journal_units, _start, _wait_for_units

HALVING = """\
[data]
path = "digits.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [0.1, 1, 10, 100], gamma = [1e-4, 1e-3, 1e-2] }

[cv]
splitter = "StratifiedKFold"
n_splits = 5
shuffle = true
random_state = 0

[search]
strategy = "halving"
factor = 2
min_resources = 600

[run]
random_state = 0
return_train_score = true
"""
# 12 candidates at 600 rows, then 6 at 1200 (max_resources 1797: two possible rungs)
RUNGS = [(12, 600), (6, 1200)]
N_UNITS = sum(c for c, _ in RUNGS) * 5


def sklearn_reference(X, y, **search_kw):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    grid = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    kw = {"factor": 2, "min_resources": 600, "random_state": 0, "return_train_score": True, **search_kw}
    return HalvingGridSearchCV(SVC(), grid, cv=cv, **kw).fit(X, y)


@pytest.fixture(scope="module")
def halving(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("halving")
    X, y = write_digits(tmp / "digits.h5", n=1797)
    cfg = write_config(tmp / "halving.toml", HALVING)
    ref = tmp / "reference"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(ref)], timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, cfg, X, y, ref, proc


def assert_matches_sklearn(results: dict, theirs: dict) -> None:
    """A cv_results.json table equals scikit-learn's cv_results_ (scores within 1e-12)."""
    assert set(results) == set(theirs) | {"model"}
    for key, value in theirs.items():
        if "time" in key:
            continue
        if key == "params" or key.startswith("param_"):
            assert results[key] == [v for v in (value if key == "params" else np.ma.getdata(value))], key
        elif key.startswith(("rank_", "iter", "n_resources")):
            assert results[key] == [int(v) for v in value], key
        else:
            np.testing.assert_allclose(np.asarray(results[key], dtype=float), value, rtol=0, atol=1e-12, err_msg=key)


def test_halving_cli_equals_sklearn(halving):
    tmp, cfg, X, y, ref, proc = halving
    theirs = sklearn_reference(X, y)
    assert_matches_sklearn(json.loads((ref / "cv_results.json").read_text()), theirs.cv_results_)
    assert [(c, r) for c, r in zip(theirs.n_candidates_, theirs.n_resources_)] == RUNGS
    best = json.loads((ref / "best.json").read_text())
    assert best["best_index"] == theirs.best_index_ and best["best_params"] == theirs.best_params_
    assert best["best_score"] == pytest.approx(theirs.best_score_, abs=1e-12)
    assert (best["iter"], best["n_resources"]) == (1, 1200)
    info = json.loads((ref / "run.json").read_text())
    assert info["n_resources_"] == theirs.n_resources_ and info["n_candidates_"] == theirs.n_candidates_
    assert info["n_iterations_"] == theirs.n_iterations_ == 2
    assert info["n_required_iterations_"] == theirs.n_required_iterations_ == 4
    assert info["units"] == {"total": N_UNITS, "done": N_UNITS}
    assert sorted(_journal_units(ref)) == list(range(N_UNITS))
    assert "rung 2/2 (6 candidates, 1200 resources)" in proc.stderr
    import joblib

    model = joblib.load(ref / "best_model.joblib")
    np.testing.assert_array_equal(model.predict(X), theirs.best_estimator_.predict(X))


def test_dry_run_prints_the_rungs(halving):
    tmp, cfg, *_ = halving
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--dry-run"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rung 1   12 candidates x 5 folds = 60 units, 600 n_samples" in proc.stdout
    assert "rung 2   6 candidates x 5 folds = 30 units, 1200 n_samples" in proc.stdout
    assert f"units    {N_UNITS} in 2 rungs" in proc.stdout


def test_integer_resource_random_halving_at_3_ranks(halving, tmp_path):
    tmp, *_ = halving
    text = f"""\
[data]
path = "{tmp / "digits.h5"}"

[[model]]
name = "rf"
estimator = "sklearn.ensemble.RandomForestClassifier"
params = {{ random_state = 0 }}
distributions = {{ max_depth = [2, 4, 8, 16], min_samples_leaf = {{ dist = "randint", low = 1, high = 8 }} }}

[cv]
n_splits = 3

[search]
strategy = "halving"
resource = "n_estimators"
max_resources = 9
min_resources = 1
n_candidates = 9

[run]
random_state = 3
"""
    cfg = write_config(tmp_path / "rf.toml", text)
    proc = run_mpi(3, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from scipy.stats import randint
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV

    X, y = write_digits(tmp_path / "unused.h5", n=1797)
    theirs = HalvingRandomSearchCV(
        RandomForestClassifier(random_state=0),
        {"max_depth": [2, 4, 8, 16], "min_samples_leaf": randint(1, 8)},
        n_candidates=9,
        resource="n_estimators",
        max_resources=9,
        min_resources=1,
        cv=3,
        random_state=3,
        return_train_score=False,
    ).fit(X, y)
    assert theirs.n_resources_ == [1, 3, 9]
    assert_matches_sklearn(json.loads((tmp_path / "o" / "cv_results.json").read_text()), theirs.cv_results_)


HALVING_BAD = {
    "two-models": (
        HALVING.replace("[cv]", '[[model]]\nname = "t"\nestimator = "sklearn.tree.DecisionTreeClassifier"\n\n[cv]'),
        "'halving' searches one [[model]]",
    ),
    "unseeded": (HALVING.replace("[run]\nrandom_state = 0", "[run]"), "random_state"),
    "min-over-rows": (HALVING.replace("min_resources = 600", "min_resources = 5000"), "max_resources_=120"),
    "unseeded-shuffle": (HALVING.replace("shuffle = true\nrandom_state = 0\n", "shuffle = true\n"), "consistent folds"),
}


@pytest.mark.parametrize("case", sorted(HALVING_BAD))
def test_bad_halving_config_is_one_error_line(tmp_path, case):
    text, needle = HALVING_BAD[case]
    write_digits(tmp_path / "digits.h5", n=120)
    cfg = write_config(tmp_path / "bad.toml", text)
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o")], timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: "), proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr, lines[0]
    assert not (tmp_path / "o" / "journal.jsonl").exists()


def test_sigterm_mid_rung_then_resume_equals_uninterrupted(halving):
    tmp, cfg, X, y, ref, _ = halving
    out = tmp / "sigterm"
    first_rung = RUNGS[0][0] * 5
    proc = _start(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "30"])
    _wait_for_units(out, first_rung + 2, proc, timeout=300)
    proc.send_signal(signal.SIGTERM)  # hydra forwards it to every rank
    code, _, err = _finish(proc, 120)
    assert code == 3, err
    assert "in rung 2/2" in err and "--resume" in err
    first = _journal_units(out)
    assert first_rung + 2 <= len(first) < N_UNITS, len(first)  # stopped inside the second rung
    partial = json.loads((out / "cv_results.partial.json").read_text())
    assert partial["iter"] == [0] * 12 + [1] * 6 and not (out / "cv_results.json").exists()
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(_journal_units(out)) == list(range(N_UNITS)), "every unit exactly once across both runs"
    ours, reference = (json.loads((d / "cv_results.json").read_text()) for d in (out, ref))
    for key, values in reference.items():
        if "time" not in key:
            assert ours[key] == values, key
    assert json.loads((out / "best.json").read_text()) == json.loads((ref / "best.json").read_text())
    assert json.loads((out / "run.json").read_text())["n_resumed"] == len(first)


def test_resume_refuses_a_changed_search(halving):
    tmp, cfg, X, y, ref, _ = halving
    changed = write_config(tmp / "changed.toml", HALVING.replace("factor = 2", "factor = 3"))
    proc = run_mpi(2, ["-m", "hpcml.cv", str(changed), "--out", str(ref), "--quiet", "--resume"], timeout=120)
    assert proc.returncode == 2 and "cannot resume" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_mpi_halving_tests_at_3_ranks(tmp_path):
    """tests/mpi/test_cv_halving_mpi.py under ``mpiexec -n 3``: every rank runs and passes every test.

    Each rank writes its collected tests and their outcomes to a file (tests/tier_report.py); the ranks'
    stdout is not parsed (the launcher may interleave their lines).
    """
    cmd = [mpiexec_path(), "-n", "3", PYTHON, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "tier_report", "-o", "addopts=", str(ROOT / "tests" / "mpi" / "test_cv_halving_mpi.py")]
    prefix = tmp_path / "halving"
    proc = run(cmd, timeout=560, cwd=ROOT / "tests", env={"HPCML_TIER_REPORT": str(prefix)})
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    reports = sorted(tmp_path.glob("halving.*.json"))
    assert [p.name for p in reports] == [f"halving.{r}.json" for r in range(3)], tail
    outcomes = [json.loads(p.read_text())["tests"] for p in reports]
    assert len(outcomes[0]) >= 20 and all(o.keys() == outcomes[0].keys() for o in outcomes), tail
    not_passed = {(rank, t): v for rank, o in enumerate(outcomes) for t, v in o.items() if v["outcome"] != "passed"}
    assert not not_passed, f"{not_passed}\n{tail}"
    assert proc.returncode == 0, tail


def test_resume_refuses_a_journal_whose_rung_disagrees(halving, tmp_path):
    import shutil

    tmp, cfg, X, y, ref, _ = halving
    out = tmp_path / "tampered"
    shutil.copytree(ref, out)
    lines = (out / "journal.jsonl").read_text().splitlines()
    first_rung = RUNGS[0][0] * 5
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record.get("unit") == first_rung:  # the second rung's first unit
            record["params"] = {"C": 12345, "gamma": 0.001}
            lines[i] = json.dumps(record)
    (out / "journal.jsonl").write_text("\n".join(lines) + "\n")
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert f"cannot resume: journal unit {first_rung} holds" in errors[0] and "12345" in errors[0], errors


TOO_SMALL = """\
[data]
path = "rare.h5"

[[model]]
name = "logreg"
estimator = "sklearn.linear_model.LogisticRegression"
grid = { C = [0.1, 1.0, 10.0] }

[cv]
splitter = "KFold"
n_splits = 3

[search]
strategy = "halving"
factor = 3
min_resources = 6

[run]
random_state = 0
"""


@pytest.mark.parametrize("n_ranks", [1, 2])
def test_first_rung_subsample_too_small_is_one_error_line(tmp_path, n_ranks):
    """scikit-learn #20775: a single-class training subsample in the first rung is refused before any fit."""
    from sklearn.model_selection import KFold

    from hpcml._compat import SubsampleMetaSplitter
    from hpcml.data import write_dataset

    X = np.random.default_rng(0).normal(size=(300, 4))
    y = np.where(np.arange(300) < 290, 0, 1)  # ten rows of class 1
    write_dataset(tmp_path / "rare.h5", X, y)
    # scikit-learn's own first-rung subsamples (6 of 300 rows) hold a one-class training set
    splitter = SubsampleMetaSplitter(base_cv=KFold(3), fraction=6 / 300, subsample_test=True, random_state=0)
    single = [i for i, (train, _) in enumerate(splitter.split(X, y)) if len(np.unique(y[train])) == 1]
    assert single
    cfg = write_config(tmp_path / "small.toml", TOO_SMALL)
    proc = run_mpi(n_ranks, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o")], timeout=180)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcml: error: "), proc.stderr
    assert f"min_resources_=6 is too small: split {single[0]} of the first rung has a training subsample" in lines[0]
    assert "single class (ValueError: This solver needs samples of at least 2 classes" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "journal.jsonl").exists()  # refused before the run started

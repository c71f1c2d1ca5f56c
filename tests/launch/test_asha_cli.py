"""``strategy = "async_halving"`` from the command line: results, journal replay, SIGTERM and --resume."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from cvfixtures import write_config, write_digits
from helpers import PYTHON, finish, mpiexec_path, run_mpi, start, wait_until
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import StratifiedKFold
from sklearn.model_selection._search_successive_halving import _SubsampleMetaSplitter

from hpcml.cv.asha import AshaRule

CONFIG = """\
[data]
path = "digits.h5"

[[model]]
name = "rf"
estimator = "sklearn.ensemble.RandomForestClassifier"
params = { n_estimators = 40, random_state = 0 }
grid = { max_depth = [2, 4, 8], min_samples_leaf = [1, 2, 4] }

[cv]
splitter = "StratifiedKFold"
n_splits = 3
shuffle = true
random_state = 0

[search]
strategy = "async_halving"
min_resources = 20

[run]
random_state = 0
"""


@pytest.fixture
def setup(tmp_path):
    X, y = write_digits(tmp_path / "digits.h5")
    return tmp_path, write_config(tmp_path / "asha.toml", CONFIG), X, y


def journal(folder):
    lines = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in lines if r["type"] == "unit"], [
        {k: v for k, v in r.items() if k != "type"} for r in lines if r["type"] == "asha"
    ]


def check_against_sklearn(results, X, y):
    """Every row: scikit-learn's score of that candidate on that rung's subsample."""
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scorer = check_scoring(RandomForestClassifier())
    for params, n_res, mean in zip(results["params"], results["n_resources"], results["mean_test_score"]):
        splitter = _SubsampleMetaSplitter(base_cv=cv, fraction=n_res / len(X), subsample_test=True, random_state=0)
        scores = []
        for train, test in splitter.split(X, y):
            est = clone(RandomForestClassifier(n_estimators=40, random_state=0)).set_params(**params)
            scores.append(scorer(est.fit(X[train], y[train]), X[test], y[test]))
        assert abs(np.mean(scores) - mean) <= 1e-12, params


def test_cli_async_halving_results_and_rederivation(setup):
    tmp, cfg, X, y = setup
    out = tmp / "o"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "cv_results.json").read_text())
    assert {"iter", "n_resources", "candidate", "promoted", "model"} <= set(results)
    assert set(results["n_resources"]) <= {20, 60, 180} and results["iter"].count(0) == 9
    check_against_sklearn(results, X, y)
    units, events = journal(out)
    assert len({u["unit"] for u in units}) == len(units)  # no unit ran twice
    AshaRule.replay(9, 3, 3, events)  # every decision is the rule's given the finishes logged before it
    best = json.loads((out / "best.json").read_text())
    top = max(results["iter"])
    top_scores = [s for s, k in zip(results["mean_test_score"], results["iter"]) if k == top]
    assert best["iter"] == top and best["best_score"] == max(top_scores)
    # a finished run re-derived from its journal: nothing runs, the same cv_results
    again = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    rederived = json.loads((out / "cv_results.json").read_text())
    assert journal(out)[0] == units
    for key in results:
        if "time" not in key:
            assert rederived[key] == results[key], key


def test_sigterm_then_resume_replays_the_decisions(setup):
    tmp, cfg, X, y = setup
    out = tmp / "s"
    cmd = [mpiexec_path(), "-n", "2", PYTHON, "-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"]
    proc = start(cmd)  # its own process group, killed with the test if it is still running (tests/helpers.py)

    def journaled() -> bool:
        return (out / "journal.jsonl").exists() and len(journal(out)[0]) >= 12

    wait_until(journaled, proc, "12 journaled units", timeout=120)
    proc.send_signal(signal.SIGTERM)  # hydra forwards it to every rank
    done = finish(proc, 120)  # a hang kills the group and fails the test
    err = done.stderr
    assert done.returncode == 3, err[-3000:]
    assert "--resume" in err
    first_units, first_events = journal(out)
    assert not (out / "cv_results.json").exists()
    resumed = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    units, events = journal(out)
    assert events[: len(first_events)] == first_events  # the decisions before the stop are kept
    assert units[: len(first_units)] == first_units
    assert len({u["unit"] for u in units}) == len(units)  # nothing finished before the stop ran again
    AshaRule.replay(9, 3, 3, events)
    results = json.loads((out / "cv_results.json").read_text())
    check_against_sklearn(results, X, y)


def test_bad_search_parameters_give_one_error_line(setup):
    tmp, _, _, _ = setup
    bad = write_config(tmp / "bad.toml", CONFIG.replace("min_resources = 20", "min_resources = 2"))
    proc = run_mpi(2, ["-m", "hpcml.cv", str(bad), "--out", str(tmp / "b"), "--quiet"], timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpcml: error:") and "min_resources_=2 is too small" in lines[0]

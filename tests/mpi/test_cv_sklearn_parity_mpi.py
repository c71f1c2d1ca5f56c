"""scikit-learn parity details of hpcml's search API at any rank count (pytest-mpi tier).

Object identity of ``cv_results_["params"]``, ``verbose`` output, and
``cross_validate``'s parameter validation and metadata routing.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.datasets import load_diabetes, load_iris
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.linear_model import Lasso, LogisticRegression, Ridge
from sklearn.metrics import make_scorer, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

import hpcml

COMM = MPI.COMM_WORLD


@pytest.mark.mpi(min_size=1)
def test_params_hold_the_grids_own_objects():
    X, y = load_diabetes(return_X_y=True)
    ridge, lasso = Ridge(), Lasso()
    grid = {"reg": [ridge, lasso]}
    make = lambda: Pipeline([("sc", StandardScaler()), ("reg", Ridge())])  # noqa: E731
    h = hpcml.GridSearchCV(make(), grid, cv=3, comm=COMM).fit(X, y)
    s = skms.GridSearchCV(make(), grid, cv=3).fit(X, y)
    assert h.cv_results_["params"][0]["reg"] is ridge and h.cv_results_["params"][1]["reg"] is lasso
    assert h.cv_results_["params"] == s.cv_results_["params"]
    assert h.best_params_["reg"] is s.best_params_["reg"]


@pytest.mark.mpi(min_size=1)
def test_verbose_prints_sklearns_lines(capfd):
    X, y = load_iris(return_X_y=True)
    capfd.readouterr()
    hpcml.GridSearchCV(LogisticRegression(max_iter=500), {"C": [1, 10]}, cv=3, verbose=3, comm=COMM).fit(X, y)
    COMM.Barrier()
    out = capfd.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("[CV ")]
    # one END line per fit, whichever rank ran it: rank 0 prints them all; the other ranks
    # write them only into a captured sys.stdout, as here (tests/launch/test_dropin_launch.py
    # checks that a launch's real stdout gets each line once)
    assert len(lines) == 6
    assert all(" END " in ln and "score=" in ln and "total time=" in ln and len(ln) >= 80 for ln in lines)
    header = "Fitting 3 folds for each of 2 candidates, totalling 6 fits"
    assert out.count(header) == 1


@pytest.mark.mpi(min_size=1)
def test_cross_validate_validates_parameters_like_sklearn():
    X, y = load_iris(return_X_y=True)
    for kw in ({"cv": "bad"}, {"return_train_score": "yes"}, {"error_score": "foo"}, {"cv": 1}):
        with pytest.raises(InvalidParameterError):
            skms.cross_validate(LogisticRegression(), X, y, **kw)
        with pytest.raises(InvalidParameterError):
            hpcml.cross_validate(LogisticRegression(), X, y, comm=COMM, **kw)
    # without routing, params go to fit: groups there are a fit parameter, not the splitter's
    g = np.arange(len(y)) % 3
    with pytest.raises(ValueError, match="All the 3 fits failed") as sk:
        skms.cross_validate(LogisticRegression(), X, y, cv=3, params={"groups": g})
    with pytest.raises(ValueError, match="All the 3 fits failed") as ours:
        hpcml.cross_validate(LogisticRegression(), X, y, cv=3, params={"groups": g}, comm=COMM)
    assert "groups" in str(sk.value) and "groups" in str(ours.value)


@pytest.mark.mpi(min_size=1)
def test_cross_validate_metadata_routing_like_sklearn():
    X, y = load_diabetes(return_X_y=True)
    w = np.random.default_rng(0).random(len(y)) + 0.1
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(r2_score).set_score_request(sample_weight=True)
        est = Ridge().set_fit_request(sample_weight=False)
        a = hpcml.cross_validate(est, X, y, cv=3, scoring=scorer, params={"sample_weight": w}, comm=COMM)
        b = skms.cross_validate(est, X, y, cv=3, scoring=scorer, params={"sample_weight": w})
        np.testing.assert_array_equal(a["test_score"], b["test_score"])
        plain = skms.cross_validate(est, X, y, cv=3, scoring="r2")
        assert not np.allclose(a["test_score"], plain["test_score"])  # the weights reached the scorer
        with pytest.raises(UnsetMetadataPassedError):
            hpcml.cross_validate(Ridge(), X, y, cv=3, params={"sample_weight": w}, comm=COMM)
        with pytest.raises(ValueError, match="routing"):
            hpcml.cross_validate(Ridge(), X, y, cv=3, groups=np.arange(len(y)) % 3, comm=COMM)
    assert COMM.allreduce(1) == COMM.size  # nobody is left in a collective

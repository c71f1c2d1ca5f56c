"""Copy-on-write folds: estimators get writable fold rows without copying them, and writes stay private.

pytest-mpi tier (1, 2 and 4 ranks through tests/test_mpi_tier.py), per-rank
and node-shared folds.  The probes report through scorers what they saw inside
their unit, so every rank's units are checked by rank 0's ``cv_results_``.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from compare import assert_cv_results_equal
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import validate_data

import hpcml

COMM = MPI.COMM_WORLD
MODES = ["rank", "node"]


class Writer(ClassifierMixin, BaseEstimator):
    """Validates like Ridge (force_writeable), records what it saw, then writes into its input."""

    def __init__(self, k=0, write=True):
        self.k = k
        self.write = write

    def fit(self, X, y):
        checked = validate_data(self, X, force_writeable=True)
        self.no_copy_ = float(np.shares_memory(checked, X) and X.flags.writeable)
        self.seen_ = float(X[0, 0])
        if self.write:
            X[0, 0] = 1e9 + self.k
            X[-1, :] = -1.0
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def _seen(est, X, y):
    return est.seen_


def _no_copy(est, X, y):
    return est.no_copy_


def _first(est, X, y):
    return float(X[0, 0])


class PeakRidge(RidgeClassifier):
    """RidgeClassifier that reports its peak traced allocation during fit, in units of its input's size."""

    def fit(self, X, y, sample_weight=None):
        tracemalloc.start()
        try:
            super().fit(X, y, sample_weight)
            self.peak_ = tracemalloc.get_traced_memory()[1] / X.nbytes
        finally:
            tracemalloc.stop()
        return self


class PeakScaler(StandardScaler):
    """StandardScaler reporting its peak traced allocation during fit, in units of its input's size."""

    def fit(self, X, y=None, sample_weight=None):
        tracemalloc.start()
        try:
            super().fit(X, y, sample_weight)
            self.peak_ = tracemalloc.get_traced_memory()[1] / X.nbytes
        finally:
            tracemalloc.stop()
        return self


def _peak(est, X, y):
    return est.peak_


def _data(n=300, d=6, seed=0):
    return make_classification(n, d, n_informative=3, random_state=seed)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("mode", MODES)
def test_in_place_writes_stay_in_their_unit(mode, monkeypatch):
    monkeypatch.setenv("HPCML_FOLD_COPIES", mode)
    X, y = _data()
    cv = KFold(3)
    scoring = {"seen": _seen, "no_copy": _no_copy, "first": _first}
    search = hpcml.GridSearchCV(Writer(), {"k": list(range(6))}, cv=cv, scoring=scoring, refit=False, comm=COMM)
    results = search.fit(X, y).cv_results_
    assert hpcml.run_info(search).folds["copy_on_write"] is True
    for i, (train, test) in enumerate(cv.split(X)):
        # every unit saw the fold as X has it, whatever the units before it wrote
        np.testing.assert_array_equal(results[f"split{i}_test_seen"], np.full(6, X[train[0], 0]))
        np.testing.assert_array_equal(results[f"split{i}_test_first"], np.full(6, X[test[0], 0]))
    np.testing.assert_array_equal(results["mean_test_no_copy"], np.ones(6))  # validation did not copy
    assert X.flags.writeable and np.all(X[-1] != -1.0)


@pytest.mark.mpi(min_size=1)
def test_read_only_folds_when_copy_on_write_is_off(monkeypatch):
    monkeypatch.setenv("HPCML_COW_FOLDS", "0")
    X, y = _data()
    scoring = {"no_copy": _no_copy, "seen": _seen}
    search = hpcml.GridSearchCV(Writer(write=False), {"k": [0, 1]}, cv=3, scoring=scoring, refit=False, comm=COMM)
    results = search.fit(X, y).cv_results_
    assert hpcml.run_info(search).folds["copy_on_write"] is False
    np.testing.assert_array_equal(results["mean_test_no_copy"], np.zeros(2))  # read-only: validation copied


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cow", ["1", "0"])
def test_ridge_and_scaler_fit_without_copying_the_fold(mode, cow, monkeypatch):
    monkeypatch.setenv("HPCML_FOLD_COPIES", mode)
    monkeypatch.setenv("HPCML_COW_FOLDS", cow)
    X, y = _data(4000, 40, seed=1)
    train = next(KFold(2).split(X))[0]
    # the estimators' own working memory, on a private writable fold (what scikit-learn's n_jobs=1 gives)
    own_ridge = PeakRidge().fit(X[train], y[train]).peak_
    own_scaler = PeakScaler().fit(X[train]).peak_
    ridge = hpcml.GridSearchCV(PeakRidge(), {"alpha": [0.5, 2.0]}, cv=2, scoring=_peak, refit=False, comm=COMM)
    scaler = Pipeline([("sc", PeakScaler()), ("clf", RidgeClassifier())])
    scaled = hpcml.GridSearchCV(
        scaler, {"clf__alpha": [0.5, 2.0]}, cv=2, scoring=_peak_of_scaler, refit=False, comm=COMM
    )
    ridge_peak = ridge.fit(X, y).cv_results_["mean_test_score"]
    scaler_peak = scaled.fit(X, y).cv_results_["mean_test_score"]
    if cow == "1":  # nothing beyond the estimator's own working memory
        assert np.all(ridge_peak < own_ridge + 0.5), (ridge_peak, own_ridge)
        assert np.all(scaler_peak < own_scaler + 0.5), (scaler_peak, own_scaler)
    else:  # Ridge's validation copied the read-only fold first (StandardScaler.fit does not force a copy)
        assert np.all(ridge_peak > own_ridge + 0.9), (ridge_peak, own_ridge)


def _peak_of_scaler(est, X, y):
    return est.named_steps["sc"].peak_


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("mode", MODES)
def test_numbers_equal_sklearn_with_in_place_estimators(mode, monkeypatch):
    monkeypatch.setenv("HPCML_FOLD_COPIES", mode)
    X, y = _data(400, 8, seed=2)
    pipe = Pipeline([("sc", StandardScaler()), ("clf", RidgeClassifier(copy_X=False))])
    grid = {"clf__alpha": [0.1, 1.0, 10.0], "sc__with_mean": [True, False]}
    kw = dict(cv=4, return_train_score=True, scoring=["accuracy", "balanced_accuracy"], refit="accuracy")
    ours = hpcml.GridSearchCV(pipe, grid, comm=COMM, **kw).fit(X, y)
    ref = skms.GridSearchCV(pipe, grid, **kw).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    X2, _ = _data(400, 8, seed=2)
    np.testing.assert_array_equal(X, X2)  # the user's X is untouched

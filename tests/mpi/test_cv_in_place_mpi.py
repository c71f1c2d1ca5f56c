"""Estimators that work in place on their input: hpcml's numbers equal scikit-learn's (atol 1e-12).

pytest-mpi tier (1, 2 and 4 ranks through tests/test_mpi_tier.py).  scikit-learn
fits a unit and then scores its train fold on the *same* array object, which an
in-place step (``StandardScaler(copy=False)``) has already scaled: the train score
transforms it a second time.  hpcml must hand its units the same semantics with
and without copy-on-write folds, per-rank or node-shared folds, and with prefix
caching on or off; and a step that writes into its input must not change the
rows another candidate (sharing a cached prefix) or another unit sees.
"""

from __future__ import annotations

import numpy as np
import pytest
from compare import assert_cv_results_equal
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import hpcml

COMM = MPI.COMM_WORLD
SETTINGS = [
    # (HPCML_FOLD_COPIES, HPCML_COW_FOLDS, HPCML_PREFIX_CACHE_BYTES)
    ("rank", "1", "1073741824"),
    ("rank", "1", "0"),
    ("rank", "0", "1073741824"),
    ("node", "1", "1073741824"),
    ("node", "0", "0"),
]


def _data(seed=0):
    X, y = make_classification(240, 6, n_informative=3, random_state=seed)
    return X * 3.0 + 5.0, y  # far from standardised: scaling twice changes the numbers


def _settings(monkeypatch, folds, cow, budget):
    monkeypatch.setenv("HPCML_FOLD_COPIES", folds)
    monkeypatch.setenv("HPCML_COW_FOLDS", cow)
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", budget)


class ShiftInFit(TransformerMixin, BaseEstimator):
    """Writes into the rows it is fitted on (no ``copy`` parameter says so), returns new arrays."""

    def __init__(self, shift=1.0):
        self.shift = shift

    def fit(self, X, y=None):
        X[:, 0] += self.shift  # in place, into the caller's rows
        self.mean_ = X.mean(axis=0)
        return self

    def transform(self, X):
        return X - self.mean_


class CentreInFit(ClassifierMixin, BaseEstimator):
    """A final step that centres its training rows in place, then fits a RidgeClassifier on them."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        X -= X.mean(axis=0)
        self.ridge_ = RidgeClassifier(alpha=self.alpha).fit(X, y)
        self.classes_ = self.ridge_.classes_
        return self

    def decision_function(self, X):
        return self.ridge_.decision_function(X)

    def predict(self, X):
        return self.ridge_.predict(X)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize(("folds", "cow", "budget"), SETTINGS)
def test_scaler_copy_false_ridge_classifier_train_scores(folds, cow, budget, monkeypatch):
    _settings(monkeypatch, folds, cow, budget)
    X, y = _data()
    pipe = Pipeline([("sc", StandardScaler(copy=False)), ("clf", RidgeClassifier())])
    grid = {"clf__alpha": [0.1, 10.0, 1000.0]}
    for scoring in (None, ["accuracy", "roc_auc"]):
        refit = "roc_auc" if scoring else True
        kw = dict(cv=KFold(3), return_train_score=True, scoring=scoring, refit=refit)
        ours = hpcml.GridSearchCV(pipe, grid, comm=COMM, **kw).fit(X.copy(), y)
        ref = skms.GridSearchCV(pipe, grid, **kw).fit(X.copy(), y)
        assert_cv_results_equal(ours.cv_results_, ref.cv_results_, atol=1e-12)
    # the train score really differs from that of a copying scaler: the test can fail
    copying = skms.GridSearchCV(
        Pipeline([("sc", StandardScaler()), ("clf", RidgeClassifier())]),
        grid,
        cv=KFold(3),
        return_train_score=True,
        scoring="roc_auc",
    ).fit(X, y)
    in_place = skms.GridSearchCV(pipe, grid, cv=KFold(3), return_train_score=True, scoring="roc_auc").fit(X.copy(), y)
    assert not np.allclose(copying.cv_results_["mean_train_score"], in_place.cv_results_["mean_train_score"])


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize(("folds", "cow", "budget"), SETTINGS)
def test_cross_validate_in_place_pipeline_train_scores(folds, cow, budget, monkeypatch):
    _settings(monkeypatch, folds, cow, budget)
    X, y = _data(1)
    pipe = Pipeline([("sc", StandardScaler(copy=False)), ("clf", RidgeClassifier(alpha=100.0))])
    for scoring in ("roc_auc", {"acc": "accuracy", "auc": "roc_auc"}):
        ours = hpcml.cross_validate(pipe, X.copy(), y, cv=4, return_train_score=True, scoring=scoring, comm=COMM)
        ref = skms.cross_validate(pipe, X.copy(), y, cv=4, return_train_score=True, scoring=scoring)
        assert set(ours) == set(ref)
        for key in ref:
            if "time" not in key:
                np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize(("folds", "cow", "budget"), SETTINGS)
def test_writes_into_a_shared_prefix_input_do_not_leak(folds, cow, budget, monkeypatch):
    """Candidates share the ``shift`` step's fit on a fold; it writes into its rows, the final step too."""
    _settings(monkeypatch, folds, cow, budget)
    X, y = _data(2)
    pipe = Pipeline([("shift", ShiftInFit()), ("clf", CentreInFit())])
    grid = {"shift__shift": [0.0, 3.0], "clf__alpha": [0.1, 10.0, 1000.0]}
    kw = dict(cv=KFold(3), return_train_score=True, scoring=["accuracy", "roc_auc"], refit=False)
    X_before = X.copy()
    ours = hpcml.GridSearchCV(pipe, grid, comm=COMM, **kw).fit(X, y)
    ref = skms.GridSearchCV(pipe, grid, **kw).fit(X.copy(), y)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_, atol=1e-12)
    np.testing.assert_array_equal(X, X_before)  # the user's X is untouched
    ours_cv = hpcml.cross_validate(pipe, X, y, cv=3, return_train_score=True, scoring="roc_auc", comm=COMM)
    ref_cv = skms.cross_validate(pipe, X.copy(), y, cv=3, return_train_score=True, scoring="roc_auc")
    for key in ("test_score", "train_score"):
        np.testing.assert_allclose(ours_cv[key], ref_cv[key], rtol=0, atol=1e-12, err_msg=key)

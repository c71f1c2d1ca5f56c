"""Test rows built after the fit (hpcml.cv.cow.LazyRows): lazy, identical, private, freed by the keep rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import KFold
from sklearn.model_selection._validation import _fit_and_score

from hpcml.cv import cow
from hpcml.cv.fitting import FoldCache, Problem, fit_and_score

pytestmark = pytest.mark.skipif(not cow.available(), reason="copy-on-write folds need memfd_create (Linux)")


def _data():
    X, y = make_classification(120, 5, n_informative=3, random_state=3)
    return X, y


def test_rows_are_built_on_first_use_and_equal_x_rows():
    X, _ = _data()
    rows = np.array([5, 0, 119, 7, 7])
    lazy = cow.LazyRows.of(X, rows)
    assert not lazy.built and lazy.builds == 0
    assert lazy.shape == (5, 5) and lazy.dtype == X.dtype
    np.testing.assert_array_equal(lazy.array, X[rows])
    assert lazy.built and lazy.builds == 1
    assert not lazy.array.flags.writeable


def test_a_write_through_a_view_stays_in_that_view():
    X, _ = _data()
    rows = np.arange(10, 30)
    lazy = cow.LazyRows.of(X, rows)
    view = lazy.view()
    assert view.flags.writeable
    view[:] = -7.0
    np.testing.assert_array_equal(lazy.view(), X[rows])
    np.testing.assert_array_equal(lazy.array, X[rows])
    assert lazy.builds == 1  # both views map the same built rows


@pytest.mark.parametrize(
    ("build_seconds", "fit_seconds", "kept"),
    [(1.0, 10.0, True), (1.0, 20.0, False), (1.0, 100.0, False), (0.5, 0.0, True)],
)
def test_keep_rule(build_seconds, fit_seconds, kept):
    X, _ = _data()
    lazy = cow.LazyRows.of(X, np.arange(40))
    lazy.source()
    lazy.build_seconds = build_seconds  # the rule, not the clock, is under test
    assert lazy.settle(fit_seconds) is kept
    assert lazy.built is kept
    np.testing.assert_array_equal(lazy.array, X[:40])  # rebuilt when freed, identical
    assert lazy.builds == (1 if kept else 2)


def test_keep_fraction_none_keeps_and_unbuilt_rows_stay_unbuilt():
    X, _ = _data()
    kept = cow.LazyRows.of(X, np.arange(3), keep_fraction=None)
    kept.source()
    kept.build_seconds = 0.0
    assert kept.settle(1e9) is True and kept.built
    never = cow.LazyRows.of(X, np.arange(3))
    assert never.settle(0.0) is False and not never.built and never.builds == 0


@pytest.mark.parametrize("keep_fraction", [0.0, float("inf")])
def test_units_score_as_sklearn_and_test_rows_follow_the_rule(keep_fraction):
    X, y = _data()
    splits = list(KFold(3).split(X))
    estimators = [RidgeClassifier()]
    candidates = [(0, {"alpha": a}) for a in (0.1, 1.0, 10.0)]
    scorer = check_scoring(RidgeClassifier(), "accuracy")
    problem = Problem(X, y, splits, estimators, candidates, scorer, {}, {})
    cache = FoldCache(problem)
    for split in range(len(splits)):
        for cand, (_, params) in enumerate(candidates):
            entry = cache.get(split, estimators[0])
            lazy = entry["cow_X_test"]
            assert isinstance(lazy, cow.LazyRows)
            if cand == 0:
                assert not lazy.built  # a fold's first unit fits before any test row exists
            lazy.keep_fraction = keep_fraction
            ours = fit_and_score(problem, cache, cand, split)
            train, test = splits[split]
            ref = _fit_and_score(
                RidgeClassifier(), X, y, scorer=scorer, train=train, test=test, verbose=0,
                parameters=params, fit_params=None, score_params=None, return_n_test_samples=True,
            )  # fmt: skip
            assert ours["test_scores"] == ref["test_scores"]
            assert ours["n_test_samples"] == ref["n_test_samples"] == len(test)
            # 0.0: building always costs more than 0 x the fit, rows kept; inf: always freed
            assert lazy.built is (keep_fraction == 0.0)
            assert lazy.builds == (1 if keep_fraction == 0.0 else cand + 1)

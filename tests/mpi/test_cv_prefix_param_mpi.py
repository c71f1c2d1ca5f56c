"""``prefix_cache_bytes`` as a parameter of hpcml's searches and validation functions (pytest-mpi tier).

Run at 1, 2 and 4 ranks by tests/test_mpi_tier.py.  The parameter must reach
the prefix cache (``hpcml.run_info(search).folds["prefix"]`` reports its
budget and evictions), never change results (compared with scikit-learn,
atol 1e-12), be validated as scikit-learn validates parameters, and survive
``get_params``/``set_params``/``clone``.
"""

from __future__ import annotations

import numpy as np
import pytest
from compare import assert_cv_results_equal
from mpi4py import MPI
from scipy.stats import loguniform
from sklearn import model_selection as skms
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

import hpcml

COMM = MPI.COMM_WORLD
GRID = {"sc__with_mean": [True, False], "lr__C": [0.1, 1.0]}
CV = 3  # 150 rows: every fold has 100 train and 50 test rows, so every cached prefix has the same size


def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(150, 6, random_state=7)


def pipe() -> Pipeline:
    return Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression())])


def entry_bytes(X: np.ndarray, y: np.ndarray) -> int:
    """Bytes of one cached prefix (scaler, fold) here: one rank, 3 folds, one prefix each, nothing evicted."""
    alone = hpcml.GridSearchCV(pipe(), {"lr__C": [0.1, 1.0]}, cv=CV, comm="self", return_train_score=True).fit(X, y)
    prefix = hpcml.run_info(alone).folds["prefix"]
    assert prefix["fits"] == CV and prefix["evictions"] == 0 and prefix["peak_bytes"] % CV == 0
    return prefix["peak_bytes"] // CV


def off() -> dict[str, object]:
    return {"enabled": False, "fits": 0, "avoided": 0, "evictions": 0, "peak_bytes": 0, "budget_bytes": 0}


@pytest.mark.mpi(min_size=1)
def test_grid_search_budget_reaches_the_cache_and_results_equal_sklearn():
    X, y = data()
    ref = skms.GridSearchCV(pipe(), GRID, cv=CV, return_train_score=True).fit(X, y)
    zero = hpcml.GridSearchCV(pipe(), GRID, cv=CV, return_train_score=True, prefix_cache_bytes=0).fit(X, y)
    assert_cv_results_equal(zero.cv_results_, ref.cv_results_)
    assert hpcml.run_info(zero).folds["prefix"] == off()
    # room for one entry, not two: every entry a rank stores after its first evicts one
    entry = entry_bytes(X, y)
    budget = entry + entry // 2
    tiny = hpcml.GridSearchCV(pipe(), GRID, cv=CV, return_train_score=True, prefix_cache_bytes=budget).fit(X, y)
    assert_cv_results_equal(tiny.cv_results_, ref.cv_results_)
    prefix = hpcml.run_info(tiny).folds["prefix"]
    assert prefix["enabled"] and prefix["budget_bytes"] == budget
    n_keys = 2 * CV  # distinct (with_mean, fold) prefixes, each stored at least once on some rank
    assert prefix["fits"] >= n_keys
    assert prefix["evictions"] >= n_keys - min(COMM.Get_size(), n_keys)
    assert prefix["evictions"] > 0 or COMM.Get_size() >= n_keys
    assert prefix["peak_bytes"] == entry  # exactly one entry held at a time
    np.testing.assert_array_equal(tiny.best_estimator_.predict(X), ref.best_estimator_.predict(X))


@pytest.mark.mpi(min_size=1)
def test_parameter_wins_over_the_environment(monkeypatch):
    X, y = data()
    ref = skms.GridSearchCV(pipe(), GRID, cv=CV).fit(X, y)
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", "0")
    on = hpcml.GridSearchCV(pipe(), GRID, cv=CV, prefix_cache_bytes=1 << 20).fit(X, y)
    assert hpcml.run_info(on).folds["prefix"]["budget_bytes"] == 1 << 20
    assert hpcml.run_info(on).folds["prefix"]["avoided"] > 0
    assert_cv_results_equal(on.cv_results_, ref.cv_results_)
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", "123456")
    default = hpcml.GridSearchCV(pipe(), GRID, cv=CV).fit(X, y)
    assert hpcml.run_info(default).folds["prefix"]["budget_bytes"] == 123456
    assert_cv_results_equal(default.cv_results_, ref.cv_results_)


@pytest.mark.mpi(min_size=1)
def test_randomized_and_halving_searches_take_the_budget():
    X, y = data()
    space = {"sc__with_mean": [True, False], "lr__C": [0.01, 0.1, 1.0, 10.0]}
    kw = dict(cv=CV, return_train_score=True, random_state=0)
    ref = skms.RandomizedSearchCV(pipe(), space, n_iter=5, **kw).fit(X, y)
    for budget in (0, 4096):
        ours = hpcml.RandomizedSearchCV(pipe(), space, n_iter=5, prefix_cache_bytes=budget, **kw).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
        assert hpcml.run_info(ours).folds["prefix"]["budget_bytes"] == budget
    # rungs of 4 and 2 candidates that share the scaler (run_info reports the last rung)
    grid = {"lr__C": [0.01, 0.1, 1.0, 10.0]}
    kw = dict(cv=CV, factor=2, min_resources=75, random_state=0)
    ref = skms.HalvingGridSearchCV(pipe(), grid, **kw).fit(X, y)
    for budget in (0, 4096):
        ours = hpcml.HalvingGridSearchCV(pipe(), grid, prefix_cache_bytes=budget, **kw).fit(X, y)
        assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
        assert hpcml.run_info(ours).folds["prefix"]["budget_bytes"] == budget
    ref = skms.HalvingRandomSearchCV(pipe(), space, n_candidates=6, **kw).fit(X, y)
    ours = hpcml.HalvingRandomSearchCV(pipe(), space, n_candidates=6, prefix_cache_bytes=0, **kw).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert hpcml.run_info(ours).folds["prefix"] == off()


@pytest.mark.mpi(min_size=1)
def test_async_halving_scores_do_not_depend_on_the_budget():
    X, y = data()
    space = {"sc__with_mean": [True, False], "lr__C": loguniform(1e-2, 1e2)}
    runs = []
    for budget in (0, 4096, None):
        search = hpcml.AsyncHalvingSearchCV(
            pipe(), space, n_candidates=6, factor=2, min_resources=60, cv=CV, random_state=0, prefix_cache_bytes=budget
        ).fit(X, y)
        res = search.cv_results_
        runs.append({(c, k): s for c, k, s in zip(res["candidate"], res["iter"], res["mean_test_score"], strict=True)})
    for run in runs[1:]:
        # the promotions may depend on timing at more than one rank; every (candidate, rung) score may not
        assert {key for key in run if key[1] == 0} == {(c, 0) for c in range(6)}
        for key in set(run) & set(runs[0]):
            assert abs(run[key] - runs[0][key]) <= 1e-12, key


def _searches(**kw):
    space = {"lr__C": [0.1, 1.0]}
    return [
        hpcml.GridSearchCV(pipe(), space, **kw),
        hpcml.RandomizedSearchCV(pipe(), space, n_iter=2, **kw),
        hpcml.HalvingGridSearchCV(pipe(), space, **kw),
        hpcml.HalvingRandomSearchCV(pipe(), space, **kw),
        hpcml.AsyncHalvingSearchCV(pipe(), space, n_candidates=2, **kw),
    ]


@pytest.mark.mpi(min_size=1)
def test_get_params_set_params_and_clone_round_trip():
    for search in _searches():
        assert search.get_params()["prefix_cache_bytes"] is None
        search.set_params(prefix_cache_bytes=2048)
        twin = clone(search)
        assert twin.get_params()["prefix_cache_bytes"] == 2048 and twin is not search
        assert clone(twin.set_params(prefix_cache_bytes=0)).prefix_cache_bytes == 0
    for search in _searches(prefix_cache_bytes=7):
        assert clone(search).get_params(deep=False)["prefix_cache_bytes"] == 7


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("bad", [-1, 1.5, "1GB"])
def test_invalid_budgets_are_refused_like_sklearn_parameters(bad):
    X, y = data()
    for search in _searches(prefix_cache_bytes=bad, cv=CV):
        name = type(search).__name__
        with pytest.raises(InvalidParameterError, match=rf"The 'prefix_cache_bytes' parameter of {name} must be"):
            search.fit(X, y)
    for function in (hpcml.cross_validate, hpcml.cross_val_score):
        with pytest.raises(InvalidParameterError, match=r"The 'prefix_cache_bytes' parameter of \w+ must be"):
            function(pipe(), X, y, cv=CV, prefix_cache_bytes=bad)
    with pytest.raises(InvalidParameterError, match="The 'prefix_cache_bytes' parameter of validation_curve must be"):
        hpcml.validation_curve(pipe(), X, y, param_name="lr__C", param_range=[1.0], prefix_cache_bytes=bad)
    with pytest.raises(InvalidParameterError, match="The 'prefix_cache_bytes' parameter of learning_curve must be"):
        hpcml.learning_curve(pipe(), X, y, cv=CV, prefix_cache_bytes=bad)


@pytest.mark.mpi(min_size=1)
def test_validation_functions_equal_sklearn_with_any_budget():
    X, y = data()
    budget = entry_bytes(X, y) * 3 // 2
    for value in (0, budget, None):
        ours = hpcml.cross_validate(pipe(), X, y, cv=CV, return_train_score=True, prefix_cache_bytes=value)
        ref = skms.cross_validate(pipe(), X, y, cv=CV, return_train_score=True)
        for key in ("test_score", "train_score"):
            np.testing.assert_allclose(ours[key], ref[key], rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            hpcml.cross_val_score(pipe(), X, y, cv=CV, prefix_cache_bytes=value),
            skms.cross_val_score(pipe(), X, y, cv=CV),
            rtol=0,
            atol=1e-12,
        )
        kw = dict(param_name="lr__C", param_range=[0.01, 0.1, 1.0], cv=CV)
        for mine, theirs in zip(
            hpcml.validation_curve(pipe(), X, y, prefix_cache_bytes=value, **kw),
            skms.validation_curve(pipe(), X, y, **kw),
            strict=True,
        ):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-12)
        kw = dict(train_sizes=[0.5, 1.0], cv=CV)
        mine = hpcml.learning_curve(pipe(), X, y, prefix_cache_bytes=value, **kw)
        for a, b in zip(mine, skms.learning_curve(pipe(), X, y, **kw), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

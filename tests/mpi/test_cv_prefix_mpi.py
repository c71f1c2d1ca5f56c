"""Pipeline prefixes fitted once per (prefix, fold) give scikit-learn's numbers (pytest-mpi tier).

Run at 1, 2 and 4 ranks by tests/test_mpi_tier.py and at 3 ranks by
tests/launch/test_cv_prefix.py.  Every search here is compared with
scikit-learn's ``GridSearchCV`` on the same data (atol 1e-12), and the prefix
counters with the number of distinct (prefix, fold) pairs.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import sklearn
from compare import assert_cv_results_equal
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

import hpcml

COMM = MPI.COMM_WORLD
WORDS = np.array("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split())


def corpus(n: int = 240, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Two classes of short documents over overlapping vocabularies."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    docs = [" ".join(rng.choice(WORDS[:8] if c else WORDS[4:], 10)) for c in y]
    return docs, y


def text_pipeline() -> Pipeline:
    return Pipeline(
        [("vect", CountVectorizer()), ("tfidf", TfidfTransformer()), ("clf", SGDClassifier(random_state=0))]
    )


TEXT_GRID = {"vect__ngram_range": [(1, 1), (1, 2)], "tfidf__norm": ["l1", "l2"], "clf__alpha": [1e-4, 1e-3, 1e-2]}


def fail_if(X, fail=False):
    if fail:
        raise ValueError("this prefix cannot be fitted")
    return X


def double_first_in_place(X):
    X[:, 0] *= 2.0
    return X


def both(estimator, grid, X, y, fit_params=None, **kw):
    """hpcml's and scikit-learn's search, with the warnings each raised (first lines)."""
    fit_params = fit_params or {}
    out = []
    for cls in (hpcml.GridSearchCV, skms.GridSearchCV):
        extra = {"comm": COMM} if cls is hpcml.GridSearchCV else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            search = cls(estimator, grid, **kw, **extra).fit(X, y, **fit_params)
        out.append((search, sorted({line for w in caught for line in _gist(str(w.message))})))
    return out


def _gist(message: str) -> list[str]:
    """The lines of a warning that do not depend on the call stack (counts, error types and messages)."""
    return [ln for ln in message.splitlines() if re.match(r"^(\d+ fits failed|\w+(Error|Warning): |[A-Z])", ln)]


@pytest.mark.mpi(min_size=1)
def test_text_grid_equals_sklearn_and_fits_each_prefix_once_per_fold():
    docs, y = corpus()
    kw = dict(cv=4, return_train_score=True, scoring=["accuracy", "f1"], refit="accuracy")
    (ours, _), (ref, _) = both(text_pipeline(), TEXT_GRID, docs, y, **kw)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    prefix = hpcml.run_info(ours).folds["prefix"]
    # distinct (prefix, fold) pairs: 2 vectorizers x 4 folds + 2 x 2 tf-idf x 4 folds
    assert prefix["fits"] == 2 * 4 + 4 * 4
    # every unit (12 candidates x 4 folds) would fit 2 prefix steps
    assert prefix["avoided"] == 2 * 12 * 4 - prefix["fits"]
    assert prefix["evictions"] == 0 and 0 < prefix["peak_bytes"] <= prefix["budget_bytes"]
    assert ours.best_estimator_.predict(docs[:20]).tolist() == ref.best_estimator_.predict(docs[:20]).tolist()


@pytest.mark.mpi(min_size=1)
def test_numeric_pipeline_with_seeded_random_transformers():
    X, y = make_classification(180, 8, random_state=0)
    pipe = Pipeline([("sc", StandardScaler()), ("svd", TruncatedSVD(random_state=3)), ("svc", SVC())])
    grid = {"svd__n_components": [2, 4], "svc__C": [0.5, 2.0], "svc__gamma": ["scale", 0.1]}
    (ours, _), (ref, _) = both(
        pipe, grid, X, y, cv=3, return_train_score=True, scoring=["accuracy", "roc_auc"], refit="accuracy"
    )
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert hpcml.run_info(ours).folds["prefix"]["fits"] >= 3 + 2 * 3


@pytest.mark.mpi(min_size=1)
def test_a_failing_prefix_fails_every_candidate_using_it_like_sklearn():
    X, y = make_classification(150, 6, random_state=1)
    pipe = Pipeline(
        [("f", FunctionTransformer(fail_if)), ("pca", PCA(2, random_state=0)), ("lr", LogisticRegression())]
    )
    grid = {"f__kw_args": [None, {"fail": True}], "lr__C": [0.1, 1.0]}
    (ours, w_ours), (ref, w_ref) = both(pipe, grid, X, y, cv=3, return_train_score=True, error_score=-1.0)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert np.all(ours.cv_results_["split0_test_score"][2:] == -1.0)
    assert "ValueError: this prefix cannot be fitted" in w_ours
    assert w_ours == w_ref and "6 fits failed out of a total of 12." in w_ours, w_ours
    with pytest.raises(ValueError, match="this prefix cannot be fitted"):
        hpcml.GridSearchCV(pipe, grid, cv=3, error_score="raise", comm=COMM).fit(X, y)


@pytest.mark.mpi(min_size=1)
def test_sample_weight_reaches_prefix_and_final_steps():
    X, y = make_classification(150, 6, random_state=2)
    weights = np.random.RandomState(0).rand(150)
    pipe = Pipeline([("sc", StandardScaler()), ("pca", PCA(random_state=0)), ("lr", LogisticRegression())])
    grid = {"pca__n_components": [2, 3], "lr__C": [0.1, 1.0]}
    fit_params = {"sc__sample_weight": weights, "lr__sample_weight": weights}
    (ours, _), (ref, _) = both(pipe, grid, X, y, fit_params, cv=3, return_train_score=True)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    (unweighted, _), _ = both(pipe, grid, X, y, cv=3)
    assert not np.allclose(unweighted.cv_results_["mean_test_score"], ours.cv_results_["mean_test_score"], atol=1e-12)


@pytest.mark.mpi(min_size=1)
def test_routed_metadata_reach_the_steps_that_request_it():
    X, y = make_classification(150, 6, random_state=3)
    weights = np.random.RandomState(1).rand(150)
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline(
            [
                ("sc", StandardScaler().set_fit_request(sample_weight=True)),
                ("pca", PCA(random_state=0)),
                ("lr", LogisticRegression().set_fit_request(sample_weight=True)),
            ]
        )
        grid = {"pca__n_components": [2, 3], "lr__C": [0.1, 1.0]}
        (ours, _), (ref, _) = both(pipe, grid, X, y, {"sample_weight": weights}, cv=3, return_train_score=True)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert hpcml.run_info(ours).folds["prefix"]["enabled"]


@pytest.mark.mpi(min_size=1)
def test_column_transformer_and_feature_union_steps():
    X, y = make_classification(150, 6, random_state=4)
    ct = ColumnTransformer([("a", StandardScaler(), [0, 1, 2]), ("b", "passthrough", [3, 4, 5])])
    union = FeatureUnion([("p", PCA(2, random_state=0)), ("i", FunctionTransformer())])
    pipe = Pipeline([("ct", ct), ("u", union), ("lr", LogisticRegression())])
    grid = {"ct__a__with_mean": [True, False], "u__p__n_components": [1, 2], "lr__C": [0.1, 1.0]}
    (ours, _), (ref, _) = both(pipe, grid, X, y, cv=3, return_train_score=True)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)
    assert hpcml.run_info(ours).folds["prefix"]["avoided"] > 0


@pytest.mark.mpi(min_size=1)
def test_unseeded_random_steps_are_not_shared():
    X, y = make_classification(120, 6, random_state=5)
    pipe = Pipeline([("sc", StandardScaler()), ("svd", TruncatedSVD(2)), ("lr", LogisticRegression())])
    grid = {"lr__C": [0.1, 1.0, 10.0]}
    search = hpcml.GridSearchCV(pipe, grid, cv=3, comm=COMM).fit(X, y)
    # the scaler is shared (3 folds); TruncatedSVD(random_state=None) is fitted by every unit
    assert hpcml.run_info(search).folds["prefix"]["fits"] == 3


@pytest.mark.mpi(min_size=1)
def test_budget_evicts_and_zero_turns_reuse_off(monkeypatch):
    docs, y = corpus(160, seed=1)
    kw = dict(cv=3, return_train_score=True)
    (ref, _) = both(text_pipeline(), TEXT_GRID, docs, y, **kw)[1]
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", "20000")
    small = hpcml.GridSearchCV(text_pipeline(), TEXT_GRID, comm=COMM, **kw).fit(docs, y)
    assert_cv_results_equal(small.cv_results_, ref.cv_results_)
    assert hpcml.run_info(small).folds["prefix"]["peak_bytes"] <= 20000
    assert hpcml.run_info(small).folds["prefix"]["evictions"] + hpcml.run_info(small).folds["prefix"]["fits"] > 0
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", "0")
    off = hpcml.GridSearchCV(text_pipeline(), TEXT_GRID, comm=COMM, **kw).fit(docs, y)
    assert_cv_results_equal(off.cv_results_, ref.cv_results_)
    assert hpcml.run_info(off).folds["prefix"] == {
        "enabled": False,
        "fits": 0,
        "avoided": 0,
        "evictions": 0,
        "peak_bytes": 0,
        "budget_bytes": 0,
    }


@pytest.mark.mpi(min_size=1)
def test_returned_estimators_are_whole_private_pipelines():
    from sklearn.metrics import check_scoring

    from hpcml.cv.engine import evaluate
    from hpcml.cv.fitting import Problem

    docs, y = corpus(120, seed=2)
    docs = np.asarray(docs, dtype=object)
    splits = list(skms.KFold(3).split(docs))
    alphas = [1e-4, 1e-2]
    problem = Problem(
        X=docs,
        y=y,
        splits=splits,
        estimators=[text_pipeline()],
        candidates=[(0, {"clf__alpha": a}) for a in alphas],
        scorer=check_scoring(text_pipeline()),
        fit_params={},
        score_params={},
        return_estimator=True,
    )
    evaluation = evaluate(problem, COMM)
    assert evaluation.folds["prefix"]["avoided"] == 2 * 3  # the second candidate of each fold reuses 2 steps
    for cand, alpha in enumerate(alphas):
        ref = skms.cross_validate(
            text_pipeline().set_params(clf__alpha=alpha), docs, y, cv=splits, return_estimator=True
        )
        for split in range(3):
            unit = evaluation.out[cand * 3 + split]
            mine = unit["estimator"]
            assert not any(isinstance(step, str) for _, step in mine.steps)
            assert unit["test_scores"] == pytest.approx(ref["test_score"][split], abs=1e-12)
            assert mine.predict(docs).tolist() == ref["estimator"][split].predict(docs).tolist()
    first, second = (evaluation.out[c * 3]["estimator"].named_steps["vect"] for c in range(2))
    assert first is not second  # private copies of the shared fitted step


@pytest.mark.mpi(min_size=1)
def test_steps_working_in_place_fall_back_to_whole_fits():
    from sklearn.linear_model import Ridge

    X, y = make_classification(150, 5, random_state=6)
    pipe = Pipeline([("f", FunctionTransformer(double_first_in_place)), ("r", Ridge())])
    grid = {"r__alpha": [0.1, 1.0, 10.0]}
    (ours, _), (ref, _) = both(pipe, grid, X.copy(), y, cv=3, return_train_score=True, refit=False)
    assert_cv_results_equal(ours.cv_results_, ref.cv_results_)

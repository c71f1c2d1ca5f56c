"""hpcml's successive halving equals scikit-learn's at whatever size mpiexec gave (pytest-mpi tier).

tests/test_mpi_tier.py runs this file at 1, 2 and 4 ranks,
tests/launch/test_halving_cli.py at 3.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from compare import assert_cv_results_equal
from mpi4py import MPI
from scipy.stats import loguniform, randint
from sklearn import model_selection as skms
from sklearn.datasets import load_diabetes, load_digits
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import Ridge
from sklearn.model_selection._search_successive_halving import _SubsampleMetaSplitter
from sklearn.svm import SVC
from sklearn.utils._param_validation import InvalidParameterError

import hpcml

COMM = MPI.COMM_WORLD

ATTRS = (
    "n_resources_",
    "n_candidates_",
    "n_remaining_candidates_",
    "max_resources_",
    "min_resources_",
    "n_iterations_",
    "n_possible_iterations_",
    "n_required_iterations_",
    "n_splits_",
    "best_index_",
    "best_params_",
    "multimetric_",
)


def digits(n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def assert_same_search(ours, theirs) -> None:
    """cv_results_ (scores within 1e-12), every n_*_ attribute and best_* equal scikit-learn's."""
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    for attr in ATTRS:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    if np.isnan(theirs.best_score_):
        assert np.isnan(ours.best_score_)
    else:
        assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-12)
    assert hasattr(ours, "best_estimator_") == hasattr(theirs, "best_estimator_")
    # every rank holds the same table
    gathered = COMM.allgather(np.asarray(ours.cv_results_["mean_test_score"]))
    for other in gathered:
        np.testing.assert_array_equal(other, gathered[0])


def both(kind: str, *args, fit_kw: dict | None = None, **kw):
    """Fit hpcml's and scikit-learn's class of ``kind`` with the same arguments."""
    X, y = fit_kw.pop("X"), fit_kw.pop("y")
    ours = getattr(hpcml, kind)(*args, comm=COMM, **kw).fit(X, y, **fit_kw)
    theirs = getattr(skms, kind)(*args, **kw).fit(X, y, **fit_kw)
    return ours, theirs


SVC_GRID = {"C": [0.1, 1, 10, 100], "gamma": [1e-4, 1e-3, 1e-2]}


@pytest.mark.mpi
@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("min_resources", ["exhaust", "smallest", 60])
def test_grid_n_samples_equals_sklearn(factor, min_resources):
    X, y = digits()
    ours, theirs = both(
        "HalvingGridSearchCV",
        SVC(),
        SVC_GRID,
        fit_kw={"X": X, "y": y},
        factor=factor,
        min_resources=min_resources,
        cv=3,
        random_state=0,
    )
    assert_same_search(ours, theirs)
    assert ours.n_iterations_ >= 2  # several rungs, each subsampled
    assert list(ours.cv_results_["n_resources"]) == list(theirs.cv_results_["n_resources"])
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.mpi
def test_grid_groups_and_stratified_shuffle_subsampling():
    X, y = digits(420)
    groups = np.arange(len(y)) % 7
    for cv in (skms.GroupKFold(3), skms.StratifiedKFold(4, shuffle=True, random_state=2)):
        ours, theirs = both(
            "HalvingGridSearchCV",
            SVC(),
            {"C": [0.01, 0.1, 1, 10, 100]},
            fit_kw={"X": X, "y": y, "groups": groups} if isinstance(cv, skms.GroupKFold) else {"X": X, "y": y},
            cv=cv,
            random_state=1,
            return_train_score=True,
        )
        assert_same_search(ours, theirs)


@pytest.mark.mpi
def test_integer_estimator_parameter_as_resource():
    X, y = digits(400)
    ours, theirs = both(
        "HalvingGridSearchCV",
        RandomForestClassifier(random_state=0),
        {"max_depth": [2, 4, 8, None], "min_samples_leaf": [1, 4]},
        fit_kw={"X": X, "y": y},
        resource="n_estimators",
        max_resources=12,
        min_resources="smallest",
        factor=2,
        cv=3,
    )
    assert_same_search(ours, theirs)
    assert ours.n_resources_ == [1, 2, 4, 8]
    assert [p["n_estimators"] for p in ours.cv_results_["params"]][-1] == 8
    assert ours.best_estimator_.n_estimators == theirs.best_estimator_.n_estimators


@pytest.mark.mpi
def test_random_search_equals_sklearn():
    X, y = digits()
    dists = {"C": loguniform(1e-2, 1e3), "gamma": loguniform(1e-4, 1e-1)}
    for n_candidates, min_resources in (("exhaust", "smallest"), (10, "exhaust"), (7, "smallest")):
        ours, theirs = both(
            "HalvingRandomSearchCV",
            SVC(),
            dists,
            fit_kw={"X": X, "y": y},
            n_candidates=n_candidates,
            min_resources=min_resources,
            cv=3,
            random_state=0,
        )
        assert_same_search(ours, theirs)


@pytest.mark.mpi
def test_random_search_integer_resource_max_iter():
    X, y = load_diabetes(return_X_y=True)
    from sklearn.linear_model import SGDRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at small max_iter, in both
        ours, theirs = both(
            "HalvingRandomSearchCV",
            make_pipeline(StandardScaler(), SGDRegressor(random_state=0, tol=None)),
            {"sgdregressor__alpha": loguniform(1e-5, 1e-1), "sgdregressor__eta0": loguniform(1e-3, 1e-1)},
            fit_kw={"X": X, "y": y},
            n_candidates=9,
            resource="sgdregressor__max_iter",
            max_resources=27,
            min_resources=3,
            cv=3,
            random_state=3,
        )
    assert_same_search(ours, theirs)
    assert ours.n_resources_ == [3, 9, 27]


@pytest.mark.mpi
@pytest.mark.parametrize("aggressive", [False, True])
def test_aggressive_elimination(aggressive):
    X, y = digits(300)
    grid = {"C": list(np.logspace(-3, 3, 9)), "gamma": [1e-4, 1e-3, 1e-2]}  # 27 candidates
    ours, theirs = both(
        "HalvingGridSearchCV",
        SVC(),
        grid,
        fit_kw={"X": X, "y": y},
        max_resources=180,
        min_resources=60,
        aggressive_elimination=aggressive,
        cv=3,
        random_state=0,
    )
    assert_same_search(ours, theirs)
    assert ours.n_iterations_ == (4 if aggressive else 2)


class Exploding(SVC):
    """Fails to fit when C == 123 (an error_score test)."""

    def fit(self, X, y, sample_weight=None):
        if self.C == 123:
            raise ValueError("C=123 is cursed")
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.mark.mpi
@pytest.mark.parametrize("error_score", [np.nan, -1.0])
def test_error_score(error_score):
    X, y = digits(400)
    grid = {"C": [0.01, 123, 0.1, 1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FitFailedWarning and ConvergenceWarning, in both
        ours, theirs = both(
            "HalvingGridSearchCV",
            Exploding(),
            grid,
            fit_kw={"X": X, "y": y},
            error_score=error_score,
            factor=2,
            cv=3,
            random_state=0,
        )
    assert_same_search(ours, theirs)
    failed = [i for i, p in enumerate(ours.cv_results_["params"]) if p["C"] == 123]
    assert len(failed) >= 1
    for i in failed:
        got = ours.cv_results_["mean_test_score"][i]
        assert np.isnan(got) if np.isnan(error_score) else got == error_score


@pytest.mark.mpi
def test_error_score_raise_raises_on_every_rank():
    X, y = digits(300)
    with pytest.raises(ValueError, match="cursed"):
        hpcml.HalvingGridSearchCV(Exploding(), {"C": [0.1, 123]}, error_score="raise", cv=3).fit(X, y)
    COMM.Barrier()  # all ranks got here: nobody hangs


def lowest_c(cv_results):
    """A refit callable: the first candidate (scikit-learn's halving then ignores it, as here)."""
    return int(np.argmin([p["C"] for p in cv_results["params"]]))


@pytest.mark.mpi
@pytest.mark.parametrize("refit", [False, lowest_c])
def test_refit_false_and_callable(refit):
    X, y = digits(300)
    ours, theirs = both(
        "HalvingGridSearchCV",
        SVC(),
        {"C": [0.001, 0.01, 0.1, 1, 10, 100]},
        fit_kw={"X": X, "y": y},
        refit=refit,
        cv=3,
        random_state=0,
    )
    assert_same_search(ours, theirs)


@pytest.mark.mpi
def test_multimetric_refused_as_sklearn():
    X, y = digits(200)
    for scoring in (["accuracy", "f1_macro"], {"a": "accuracy"}):
        with pytest.raises(InvalidParameterError) as sk:
            skms.HalvingGridSearchCV(SVC(), {"C": [1, 10]}, scoring=scoring).fit(X, y)
        with pytest.raises(InvalidParameterError) as ours:
            hpcml.HalvingGridSearchCV(SVC(), {"C": [1, 10]}, scoring=scoring, comm=COMM).fit(X, y)
        assert str(ours.value) == str(sk.value)
        assert "'scoring' parameter" in str(ours.value)


@pytest.mark.mpi
def test_input_errors_as_sklearn():
    X, y = digits(200)
    cases = [
        ({"resource": "not_a_param"}, SVC(), {"C": [1, 10]}),
        ({"resource": "n_estimators", "max_resources": "auto"}, RandomForestClassifier(), {"max_depth": [1, 2]}),
        ({"resource": "n_estimators", "max_resources": 10}, RandomForestClassifier(), {"n_estimators": [1, 2]}),
        ({"cv": skms.KFold(3, shuffle=True)}, SVC(), {"C": [1, 10]}),
        ({"min_resources": 1000}, SVC(), {"C": [1, 10]}),
    ]
    for kw, est, grid in cases:
        with pytest.raises(ValueError) as sk:
            skms.HalvingGridSearchCV(est, grid, **kw).fit(X, y)
        with pytest.raises(ValueError) as ours:
            hpcml.HalvingGridSearchCV(est, grid, comm=COMM, **kw).fit(X, y)
        assert str(ours.value) == str(sk.value), kw
    COMM.Barrier()


@pytest.mark.mpi
def test_regressor_and_verbose_lines_from_rank_0(capfd):
    X, y = load_diabetes(return_X_y=True)
    capfd.readouterr()
    ours, theirs = both(
        "HalvingGridSearchCV",
        Ridge(),
        {"alpha": list(np.logspace(-3, 2, 8))},
        fit_kw={"X": X, "y": y},
        cv=skms.KFold(4, shuffle=True, random_state=0),
        random_state=0,
        verbose=1,
    )
    COMM.Barrier()
    out = capfd.readouterr().out
    assert_same_search(ours, theirs)
    mine = out.count("n_iterations: ")
    # rank 0 prints hpcml's copy of the schedule (and every rank its own scikit-learn run's)
    assert mine == (2 if COMM.rank == 0 else 1)


@pytest.mark.mpi
def test_unseeded_random_search_is_consistent_across_ranks():
    X, y = digits(300)
    search = hpcml.HalvingRandomSearchCV(
        SVC(), {"C": loguniform(1e-2, 1e2), "gamma": randint(1, 5)}, n_candidates=6, cv=3, comm=COMM
    ).fit(X, y)
    params = COMM.allgather(search.cv_results_["params"])
    assert all(p == params[0] for p in params)
    assert COMM.allgather(search.best_index_) == [search.best_index_] * COMM.size


@pytest.mark.mpi
def test_h5dataset_input(mpi_tmp_path):
    from hpcml.data import write_dataset

    X, y = digits(300)
    path = mpi_tmp_path / "d.h5"
    if COMM.Get_rank() == 0:
        write_dataset(path, X, y)
    COMM.Barrier()
    grid = {"C": [1, 10, 100], "gamma": [1e-3, 1e-2]}
    ours = hpcml.HalvingGridSearchCV(SVC(), grid, cv=3, random_state=0, comm=COMM)
    ours.fit(hpcml.H5Dataset(path, X="X", y="y"))
    theirs = skms.HalvingGridSearchCV(SVC(), grid, cv=3, random_state=0).fit(X, y)
    assert_same_search(ours, theirs)


class SearchFitsForbidden(SVC):
    """SVC that raises on any fit with two classes: a test using it proves that no search fit ran."""

    def fit(self, X, y, sample_weight=None):
        if len(np.unique(y)) > 1:
            raise AssertionError("a search fit ran")
        return super().fit(X, y, sample_weight=sample_weight)  # one class: SVC's own ValueError


def rare_class_data():
    """300 rows, ten of class 1, and the index of the first one-class training subsample of the first rung."""
    X, _ = digits(300)
    y = np.where(np.arange(300) < 290, 0, 1)
    # scikit-learn's own first-rung subsamples (6 of 300 rows) hold a one-class training set
    splitter = _SubsampleMetaSplitter(base_cv=skms.KFold(3), fraction=6 / 300, subsample_test=True, random_state=0)
    single = [i for i, (train, _) in enumerate(splitter.split(X, y)) if len(np.unique(y[train])) == 1]
    assert single
    return X, y, single[0]


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["HalvingGridSearchCV", "HalvingRandomSearchCV"])
def test_first_rung_subsample_too_small_is_refused_before_any_fit(kind):
    """scikit-learn #20775: a one-class training subsample SVC cannot fit is a ValueError before any search fit."""
    X, y, first = rare_class_data()
    extra = {"n_candidates": 3} if kind == "HalvingRandomSearchCV" else {}
    search = getattr(hpcml, kind)(
        SearchFitsForbidden(), {"C": [1.0, 2.0, 3.0]}, cv=skms.KFold(3), min_resources=6, random_state=0, **extra
    )
    match = (
        rf"min_resources_=6 is too small: split {first} of the first rung has a training subsample of \d+ rows "
        r"with a single class \(ValueError: The number of classes has to be greater than one"
    )
    with pytest.raises(ValueError, match=match):
        search.fit(X, y)
    COMM.Barrier()  # every rank raised: nobody hangs


@pytest.mark.mpi
def test_one_class_subsample_of_a_classifier_that_fits_it_runs_as_sklearn():
    """A classifier that fits one class (DummyClassifier) is not refused: the search equals scikit-learn's."""
    X, y, _ = rare_class_data()
    ours, theirs = both(
        "HalvingGridSearchCV",
        DummyClassifier(),
        {"strategy": ["prior", "most_frequent", "uniform"]},
        fit_kw={"X": X, "y": y},
        cv=skms.KFold(3),
        min_resources=6,
        random_state=0,
    )
    assert_same_search(ours, theirs)

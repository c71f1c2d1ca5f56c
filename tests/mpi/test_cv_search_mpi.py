"""hpcml's Python API under MPI equals scikit-learn, at whatever size mpiexec gave.

Run as ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` for N = 1, 2, 4
(tests/test_mpi_tier.py does exactly that).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from compare import assert_cv_results_equal
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.datasets import load_diabetes, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

import hpcml
from hpcml.comm import origin_of

COMM = MPI.COMM_WORLD


def digits(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return X[:n], y[:n]


def groups_for(n: int) -> np.ndarray:
    return np.arange(n) % 7


CASES = [
    ("svc-kfold-single", lambda: SVC(), {"C": [0.5, 5], "gamma": [1e-3, 1e-2]}, lambda: skms.KFold(3), "accuracy"),
    (
        "logreg-strat-shuffle-multi",
        lambda: LogisticRegression(max_iter=300),
        {"C": [0.01, 1.0]},
        lambda: skms.StratifiedKFold(4, shuffle=True, random_state=1),
        ["accuracy", "f1_macro"],
    ),
    (
        "rf-groupkfold",
        lambda: RandomForestClassifier(n_estimators=8, random_state=0),
        {"max_depth": [3, None], "min_samples_leaf": [1, 3]},
        lambda: skms.GroupKFold(3),
        "balanced_accuracy",
    ),
    (
        "pipeline-repeated",
        lambda: Pipeline([("scale", StandardScaler()), ("clf", SVC())]),
        {"clf__C": [1, 10]},
        lambda: skms.RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=0),
        None,
    ),
]


@pytest.mark.mpi
@pytest.mark.parametrize("name,make_est,grid,make_cv,scoring", CASES, ids=[c[0] for c in CASES])
def test_grid_search_equals_sklearn(name, make_est, grid, make_cv, scoring):
    X, y = digits()
    fit_kw = {"groups": groups_for(len(y))} if "group" in name else {}
    refit = "accuracy" if isinstance(scoring, list) else True
    ours = hpcml.GridSearchCV(make_est(), grid, cv=make_cv(), scoring=scoring, refit=refit).fit(X, y, **fit_kw)
    theirs = skms.GridSearchCV(make_est(), grid, cv=make_cv(), scoring=scoring, refit=refit).fit(X, y, **fit_kw)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    assert ours.best_index_ == theirs.best_index_
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    # every rank holds the same results
    gathered = COMM.allgather(
        np.asarray(ours.cv_results_[f"mean_test_{'accuracy' if refit == 'accuracy' else 'score'}"])
    )
    for other in gathered:
        np.testing.assert_array_equal(other, gathered[0])


@pytest.mark.mpi
def test_ridge_regression_with_train_scores():
    X, y = load_diabetes(return_X_y=True)
    grid = {"alpha": [0.01, 0.1, 1.0, 10.0]}
    kw = dict(
        cv=skms.KFold(5, shuffle=True, random_state=3),
        scoring=["r2", "neg_mean_squared_error"],
        refit="r2",
        return_train_score=True,
    )
    ours = hpcml.GridSearchCV(Ridge(), grid, **kw).fit(X, y)
    theirs = skms.GridSearchCV(Ridge(), grid, **kw).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    np.testing.assert_allclose(ours.best_estimator_.coef_, theirs.best_estimator_.coef_, rtol=0, atol=1e-12)


@pytest.mark.mpi
def test_randomized_search_unseeded_is_consistent_across_ranks():
    from scipy.stats import loguniform

    X, y = digits(300)
    search = hpcml.RandomizedSearchCV(SVC(), {"C": loguniform(1e-2, 1e2)}, n_iter=5, cv=3).fit(X, y)
    params = COMM.allgather(search.cv_results_["params"])
    assert all(p == params[0] for p in params)
    seeded = hpcml.RandomizedSearchCV(SVC(), {"C": loguniform(1e-2, 1e2)}, n_iter=5, cv=3, random_state=0).fit(X, y)
    ref = skms.RandomizedSearchCV(SVC(), {"C": loguniform(1e-2, 1e2)}, n_iter=5, cv=3, random_state=0).fit(X, y)
    assert_cv_results_equal(seeded.cv_results_, ref.cv_results_)


class Exploding(LogisticRegression):
    """Fails to fit when C == 123 (an error_score test)."""

    def fit(self, X, y, sample_weight=None):
        if self.C == 123:
            raise ValueError("C=123 is cursed")
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.mark.mpi
def test_failing_fit_error_score_nan_matches_sklearn():
    X, y = digits(300)
    grid = {"C": [0.1, 123, 1.0]}
    with warnings.catch_warnings(record=True) as ours_w:
        warnings.simplefilter("always")
        ours = hpcml.GridSearchCV(Exploding(max_iter=200), grid, cv=3).fit(X, y)
    with warnings.catch_warnings(record=True) as theirs_w:
        warnings.simplefilter("always")
        theirs = skms.GridSearchCV(Exploding(max_iter=200), grid, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    assert np.isnan(ours.cv_results_["mean_test_score"][1])

    def kinds(ws):
        return sorted(type(w.message).__name__ for w in ws if "ConvergenceWarning" not in type(w.message).__name__)

    assert kinds(ours_w) == kinds(theirs_w)


@pytest.mark.mpi
def test_failing_fit_error_score_raise_raises_on_every_rank():
    X, y = digits(300)
    with pytest.raises(ValueError, match="cursed"):
        hpcml.GridSearchCV(Exploding(max_iter=200), {"C": [0.1, 123]}, cv=3, error_score="raise").fit(X, y)
    COMM.Barrier()  # all ranks got here: nobody hangs


@pytest.mark.mpi
def test_cross_validate_equals_sklearn():
    X, y = digits(300)
    kw = dict(
        cv=skms.StratifiedKFold(5, shuffle=True, random_state=0),
        scoring=["accuracy", "f1_macro"],
        return_train_score=True,
        return_indices=True,
    )
    ours = hpcml.cross_validate(SVC(), X, y, **kw)
    theirs = skms.cross_validate(SVC(), X, y, **kw)
    assert set(ours) == set(theirs)
    for key in ("test_accuracy", "test_f1_macro", "train_accuracy", "train_f1_macro"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-12)
    for a, b in zip(ours["indices"]["test"], theirs["indices"]["test"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.mpi
def test_comm_self_runs_alone():
    X, y = digits(200)
    ours = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3, comm=MPI.COMM_SELF).fit(X, y)
    theirs = skms.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    assert len(hpcml.run_info(ours).schedule_reports[0].busy) == 1


@pytest.mark.mpi
def test_sub_communicator_is_honoured():
    X, y = digits(200)
    sub = COMM.Split(COMM.Get_rank() % 2, COMM.Get_rank())
    ours = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3, comm=sub).fit(X, y)
    assert len(hpcml.run_info(ours).schedule_reports[0].busy) == sub.Get_size()
    theirs = skms.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    sub.Free()


@pytest.mark.mpi
def test_h5dataset_input(mpi_tmp_path):
    from hpcml.data import write_dataset

    X, y = digits(300)
    path = mpi_tmp_path / "d.h5"
    if COMM.Get_rank() == 0:
        write_dataset(path, X, y)
    COMM.Barrier()
    ours = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3).fit(hpcml.H5Dataset(path, X="X", y="y"))
    theirs = skms.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3).fit(X, y)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)


# --- the scheduler --------------------------------------------------------------------


@pytest.mark.mpi
@pytest.mark.parametrize("n_units", [1, 3, 50, 1000])
def test_scheduler_runs_each_unit_exactly_once(n_units):
    from hpcml.cv.schedule import UnitQueue, run_units

    queue = UnitQueue([], range(n_units), COMM.Get_size()) if COMM.Get_rank() == 0 else None
    ran = []

    def work(unit):
        ran.append(unit)
        return unit * unit

    report = run_units(COMM, work, queue=queue)
    everything = sorted(u for part in COMM.allgather(ran) for u in part)
    assert everything == list(range(n_units))
    if COMM.Get_rank() == 0:
        assert report.results == {u: u * u for u in range(n_units)}
    assert len(report.busy) == COMM.Get_size()


@pytest.mark.mpi
def test_scheduler_balances_uneven_costs_and_rank0_works():
    from hpcml.cv.schedule import UnitQueue, run_units

    size = COMM.Get_size()
    costs = [0.2 if u % 10 == 0 else 0.01 for u in range(60)]  # 20x spread
    queue = UnitQueue([], range(60), size, group_of=lambda u: u % 10 == 0) if COMM.Get_rank() == 0 else None

    def work(unit):
        end = time.perf_counter() + costs[unit]
        while time.perf_counter() < end:
            pass
        return COMM.Get_rank()

    report = run_units(COMM, work, queue=queue)
    if COMM.Get_rank() == 0:
        assert sorted(report.results) == list(range(60))  # every unit once
        assert 0 in set(report.results.values())  # rank 0 took units too
    busy = np.array(report.busy)
    assert busy.shape == (size,)
    # each unit spins at least its cost: the busy time counted covers it (an upper bound would time the load)
    assert busy.sum() >= sum(costs) * (1 - 1e-9)


@pytest.mark.mpi
def test_scheduler_error_reaches_every_rank():
    from hpcml.cv.schedule import UnitQueue, run_units

    queue = UnitQueue([], range(20), COMM.Get_size()) if COMM.Get_rank() == 0 else None

    def work(unit):
        if unit == 7:
            raise KeyError("unit seven")
        return unit

    with pytest.raises(KeyError, match="unit seven"):
        run_units(COMM, work, queue=queue)
    COMM.Barrier()


class UnitError(Exception):
    """A unit's error that names its unit, as hpcml.cv.fitting.FitRaised does."""

    def __init__(self, unit):
        super().__init__(f"unit {unit} failed")
        self.unit = unit

    def __reduce__(self):
        return (UnitError, (self.unit,))


@pytest.mark.mpi
def test_scheduler_raises_the_earliest_failing_unit_like_a_serial_loop():
    """Every unit but 0 fails, later units fastest; a unit handed out before a failure still runs.

    scikit-learn's serial loop raises unit 1's error.  Unit 1 is always handed out
    before any failing unit (queue order), so whichever rank holds it must still
    run it after the STOP for a later unit's failure, and its error must win.
    """
    from hpcml.cv.schedule import UnitQueue, run_units

    n = 40

    def work(unit):
        time.sleep(0.0005 * (n - unit))  # a cost, not a synchronisation: lower units take longer
        if unit:
            raise UnitError(unit)
        return unit

    for _ in range(3):
        queue = UnitQueue([0], range(1, n), COMM.Get_size()) if COMM.Get_rank() == 0 else None
        with pytest.raises(UnitError, match="^unit 1 failed$") as info:
            run_units(COMM, work, queue=queue)
        assert info.value.unit == 1
    COMM.Barrier()


def test_run_local_runs_units_before_a_failing_one():
    from hpcml.cv.schedule import _run_local

    ran = []

    def work(unit):
        ran.append(unit)
        if unit in (5, 2):
            raise UnitError(unit)
        return unit * 10

    items, error = _run_local(work, [5, 7, 2, 1, 9], lambda: False)
    assert ran == [5, 2, 1] and error.unit == 2
    assert [(u, r) for u, r, _ in items] == [(1, 10)]
    ran.clear()
    items, error = _run_local(work, [8, 3, 1, 4], lambda: True, lambda: 4)  # stopped for unit 4's failure
    assert ran == [3, 1] and error is None and [u for u, _, _ in items] == [3, 1]
    ran.clear()
    items, error = _run_local(work, [3, 1], lambda: True)  # stopped by a signal: nothing more runs
    assert ran == [] and items == [] and error is None
    ran.clear()

    def interrupted(unit):
        raise KeyboardInterrupt

    items, error = _run_local(interrupted, [1, 0], lambda: False)
    assert isinstance(error, KeyboardInterrupt) and items == []  # an error without a unit ends the batch


@pytest.mark.mpi
def test_scheduler_stop_leaves_rest_undone():
    from hpcml.cv.schedule import UnitQueue, run_units

    queue = UnitQueue([], range(200), COMM.Get_size()) if COMM.Get_rank() == 0 else None
    count = {"n": 0}

    def should_stop():
        return count["n"] >= 5

    def work(unit):
        time.sleep(0.002)
        return unit

    def on_results(rank, items):
        count["n"] += len(items)

    report = run_units(
        COMM,
        work,
        queue=queue,
        on_results=on_results if COMM.Get_rank() == 0 else None,
        should_stop=should_stop if COMM.Get_rank() == 0 else None,
    )
    assert report.stopped
    if COMM.Get_rank() == 0:
        assert 5 <= len(report.results) < 200


@pytest.mark.mpi
def test_more_sklearn_behaviours():
    from sklearn.base import clone
    from sklearn.cluster import KMeans
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = digits(240)
    search = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3, comm=COMM)
    assert clone(search).comm is COMM
    # callable refit
    ours = hpcml.GridSearchCV(SVC(), {"C": [0.01, 1, 10]}, cv=3, refit=lambda r: int(np.argmin(r["mean_test_score"])))
    ours.fit(X, y)
    assert ours.best_index_ == 0 and not hasattr(ours, "best_score_")
    # unsupervised, scored by the estimator's own score
    a = hpcml.GridSearchCV(KMeans(n_init=2, random_state=0), {"n_clusters": [2, 3]}, cv=3).fit(X)
    b = skms.GridSearchCV(KMeans(n_init=2, random_state=0), {"n_clusters": [2, 3]}, cv=3).fit(X)
    # inertia ~1e5: OpenMP reductions with 1 vs 2 threads differ in the last bits
    assert_cv_results_equal(a.cv_results_, b.cv_results_, rtol=1e-12)
    # an iterable of splits and a sample_weight fit parameter
    cv = [(np.arange(0, 160), np.arange(160, 240)), (np.arange(80, 240), np.arange(0, 80))]
    w = np.random.default_rng(0).random(len(y))
    a = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=cv).fit(X, y, sample_weight=w)
    b = skms.GridSearchCV(SVC(), {"C": [1, 10]}, cv=cv).fit(X, y, sample_weight=w)
    assert_cv_results_equal(a.cv_results_, b.cv_results_)
    # scikit-learn's parameter validation, and ours
    with pytest.raises(InvalidParameterError):
        hpcml.GridSearchCV(SVC(), {"C": [1]}, scoring=3).fit(X, y)
    with pytest.raises(InvalidParameterError):
        hpcml.GridSearchCV(SVC(), {"C": [1]}, threads_per_rank=0).fit(X, y)
    # an invalid parameter name raises, as in scikit-learn, on every rank
    with pytest.raises(ValueError, match="Invalid parameter"):
        hpcml.GridSearchCV(SVC(), {"Cc": [1]}, cv=3).fit(X, y)
    COMM.Barrier()


# --- errors keep their type; comm strings; nested searches; the user's comm after refit ---


@pytest.mark.mpi
@pytest.mark.parametrize("make_cv", [lambda: skms.GroupKFold(3), lambda: skms.KFold(500)], ids=["no-groups", "n>rows"])
def test_splitter_error_has_sklearn_type_on_every_rank(make_cv):
    from hpcml.errors import RemoteError

    X, y = digits(300)
    with pytest.raises(ValueError) as theirs:
        skms.GridSearchCV(SVC(), {"C": [1]}, cv=make_cv()).fit(X, y)
    for run in (
        lambda: hpcml.GridSearchCV(SVC(), {"C": [1]}, cv=make_cv()).fit(X, y),
        lambda: hpcml.cross_validate(SVC(), X, y, cv=make_cv()),
    ):
        with pytest.raises(ValueError) as ours:
            run()
        assert type(ours.value) is type(theirs.value) and not isinstance(ours.value, RemoteError)
        assert str(ours.value) == str(theirs.value)
        assert origin_of(ours.value).rank == 0
    COMM.Barrier()


class TwoArgError(Exception):
    """pickle cannot rebuild it: __init__ does not take self.args back."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


def _check_keyerror(exc):
    assert exc.args == ("missing",)


def _check_two_arg(exc):
    assert str(exc) == "7: bad" and exc.code == 7


def _check_lambda_arg(exc):
    assert exc.args[0] == "holds a lambda" and exc.args[1]() == 1  # sent by cloudpickle


@pytest.mark.mpi
@pytest.mark.parametrize(
    "make_error,check",
    [
        (lambda: KeyError("missing"), _check_keyerror),
        (lambda: TwoArgError(7, "bad"), _check_two_arg),
        (lambda: ValueError("holds a lambda", lambda: 1), _check_lambda_arg),
    ],
    ids=["keyerror", "two-arg-init", "lambda-arg"],
)
def test_raise_if_any_raises_the_original_type_everywhere(make_error, check):
    from hpcml.comm import HOST, raise_if_any

    failing = COMM.Get_size() - 1
    mine = make_error() if COMM.Get_rank() == failing else None
    with pytest.raises(type(make_error())) as got:
        raise_if_any(COMM, mine)
    assert type(got.value) is type(make_error())
    check(got.value)
    origin = origin_of(got.value)
    assert origin.rank == failing and origin.agreed
    assert origin.host == COMM.bcast(HOST, root=failing)
    assert type(got.value).__name__ in origin.traceback
    if COMM.Get_rank() == failing:
        assert got.value is mine
    COMM.Barrier()


def _explode():
    raise ValueError("cannot rebuild")


class Unloadable:
    """Pickles, but unpickling it raises."""

    def __reduce__(self):
        return (_explode, ())


@pytest.mark.mpi
def test_broadcast_falls_back_to_cloudpickle_and_fails_on_every_rank():
    import threading

    from hpcml.cv.plan import broadcast
    from hpcml.errors import SerializationError

    rank = COMM.Get_rank()
    got = broadcast([lambda z: z + 10 * rank] if rank == 0 else None, COMM)
    assert got[0](1) == 1  # rank 0's lambda (rank = 0 in its closure), on every rank
    if COMM.Get_size() == 1:
        return  # one rank: broadcast returns the object itself
    for obj, match in ((threading.Lock(), "cloudpickle failed"), (Unloadable(), "cannot unpickle")):
        with pytest.raises(SerializationError, match=match):
            broadcast(obj if COMM.Get_rank() == 0 else None, COMM)
    COMM.Barrier()


@pytest.mark.mpi
def test_comm_accepts_self_and_world():
    X, y = digits(200)
    theirs = skms.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3).fit(X, y)
    alone = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3, comm="self").fit(X, y)
    assert len(hpcml.run_info(alone).schedule_reports[0].busy) == 1
    everyone = hpcml.GridSearchCV(SVC(), {"C": [1, 10]}, cv=3, comm="world").fit(X, y)
    assert len(hpcml.run_info(everyone).schedule_reports[0].busy) == COMM.Get_size()
    for ours in (alone, everyone):
        assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    cv = hpcml.cross_validate(SVC(), X, y, cv=3, comm="self")
    np.testing.assert_array_equal(cv["test_score"], skms.cross_validate(SVC(), X, y, cv=3)["test_score"])
    with pytest.raises(ValueError, match="'self'"):
        hpcml.GridSearchCV(SVC(), {"C": [1]}, cv=3, comm="everyone").fit(X, y)
    COMM.Barrier()


@pytest.mark.mpi
def test_nested_search_equals_sklearn():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    inner = {"C": [1, 10], "gamma": ["scale", 0.1]}
    kw = dict(cv=skms.StratifiedKFold(3, shuffle=True, random_state=0), return_estimator=True, error_score="raise")
    theirs = skms.cross_validate(skms.GridSearchCV(SVC(), inner, cv=3), X, y, **kw)
    ours = hpcml.cross_validate(hpcml.GridSearchCV(SVC(), inner, cv=3), X, y, **kw)
    np.testing.assert_array_equal(ours["test_score"], theirs["test_score"])
    for a, b in zip(ours["estimator"], theirs["estimator"]):
        assert a.best_params_ == b.best_params_
        assert_cv_results_equal(a.cv_results_, b.cv_results_)
        assert a.comm is None  # the user's value, not the "self" the unit ran it with
    # and a hpcml search of a hpcml search
    outer = hpcml.GridSearchCV(hpcml.GridSearchCV(SVC(), inner, cv=3), {"cv": [2, 3]}, cv=3).fit(X, y)
    ref = skms.GridSearchCV(skms.GridSearchCV(SVC(), inner, cv=3), {"cv": [2, 3]}, cv=3).fit(X, y)
    assert_cv_results_equal(outer.cv_results_, ref.cv_results_)
    assert outer.best_estimator_.comm is None
    COMM.Barrier()


class _ThreadsSeen(ClassifierMixin, BaseEstimator):
    """Scores the largest BLAS/OpenMP thread count in force while it was fitted."""

    def __init__(self, c: float = 1.0) -> None:
        self.c = c

    def fit(self, X: np.ndarray, y: np.ndarray) -> _ThreadsSeen:
        from threadpoolctl import threadpool_info

        self.classes_ = np.unique(y)
        self.threads_ = max(p["num_threads"] for p in threadpool_info())
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.classes_[0])

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(self.threads_)


@pytest.mark.mpi
def test_nested_search_keeps_the_outer_thread_limit():
    X, y = digits(60)
    inner = hpcml.GridSearchCV(_ThreadsSeen(), {"c": [1.0, 2.0]}, cv=2)
    with threadpool_limits(limits=2):  # what an unpinned rank would see on this node
        out = hpcml.cross_validate(inner, X, y, cv=2, return_estimator=True, threads_per_rank=1)
    for search in out["estimator"]:
        np.testing.assert_array_equal(search.cv_results_["mean_test_score"], [1.0, 1.0])
    alone = hpcml.GridSearchCV(_ThreadsSeen(), {"c": [1.0]}, cv=2, comm="self", threads_per_rank=2)
    with threadpool_limits(limits=1):
        alone.fit(X, y)  # an explicit threads_per_rank is the user's to give
    assert alone.cv_results_["mean_test_score"][0] == 2.0
    COMM.Barrier()


@pytest.mark.mpi
def test_search_over_hpcml_sgd_keeps_the_users_comm():
    from sklearn.base import clone
    from sklearn.datasets import load_breast_cancer

    from hpcml.sgd import SGDClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    for make, key in (
        (lambda: SGDClassifier(random_state=0), "comm"),
        (lambda: SGDClassifier(random_state=0, comm="world"), "comm"),
        (lambda: Pipeline([("scale", StandardScaler()), ("clf", SGDClassifier(random_state=0))]), "clf__comm"),
    ):
        grid = {key.replace("comm", "alpha"): [1e-4, 1e-2]}
        search = hpcml.GridSearchCV(make(), grid, cv=3).fit(X, y)
        expected = clone(search.estimator).set_params(**search.best_params_).get_params()[key]
        assert search.best_estimator_.get_params()[key] == expected  # scikit-learn's best_estimator_ has it
        assert search.estimator.get_params()[key] == expected
        predictions = COMM.allgather(search.predict(X))
        for other in predictions:
            np.testing.assert_array_equal(other, predictions[0])
    COMM.Barrier()


@pytest.mark.mpi
def test_grid_value_holding_hpcml_sgd_fits_alone_in_its_unit():
    """A grid *value* that is an hpcml.sgd estimator with the default comm is fitted on one rank."""
    from sklearn.datasets import load_breast_cancer

    from hpcml.sgd import SGDClassifier

    X, y = load_breast_cancer(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])

    def grid(comm):
        return {"clf": [SGDClassifier(random_state=0, max_iter=50, comm=comm), LogisticRegression()]}

    ours = hpcml.GridSearchCV(pipe, grid(None), cv=3).fit(X, y)
    ref = skms.GridSearchCV(pipe, grid("self"), cv=3).fit(X, y)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
    np.testing.assert_allclose(ours.cv_results_["split2_test_score"], ref.cv_results_["split2_test_score"])
    assert ours.cv_results_["params"][0]["clf"].comm is None  # the user's object, untouched
    predictions = COMM.allgather(ours.predict(X))
    for other in predictions:
        np.testing.assert_array_equal(other, predictions[0])


class _Exits(RegressorMixin, BaseEstimator):
    """A fit that raises a BaseException that is not an Exception."""

    def __init__(self, a: int = 1, kind: type[BaseException] = SystemExit) -> None:
        self.a = a
        self.kind = kind

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Exits:
        raise self.kind("stop from a fit")


@pytest.mark.mpi
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
def test_base_exception_in_a_fit_reaches_every_rank(kind):
    X, y = digits(40)
    with pytest.raises(kind, match="stop from a fit"):
        hpcml.GridSearchCV(_Exits(kind=kind), {"a": [1, 2, 3, 4]}, cv=2).fit(X, y)
    COMM.Barrier()  # every rank left the search: none is left waiting in it


class _TwoSplitsSaysThree:
    def split(self, X, y=None, groups=None):
        half = len(X) // 2
        yield np.arange(half), np.arange(half, len(X))
        yield np.arange(half, len(X)), np.arange(half)

    def get_n_splits(self, X=None, y=None, groups=None):
        return 3


@pytest.mark.mpi
def test_split_count_checked_like_sklearn():
    """Searches refuse a cv whose split() and get_n_splits() disagree; cross_validate does not look."""
    X, y = load_diabetes(return_X_y=True)
    ours = hpcml.cross_validate(Ridge(), X, y, cv=_TwoSplitsSaysThree())
    theirs = skms.cross_validate(Ridge(), X, y, cv=_TwoSplitsSaysThree())
    np.testing.assert_array_equal(ours["test_score"], theirs["test_score"])
    with pytest.raises(ValueError) as expected:
        skms.GridSearchCV(Ridge(), {"alpha": [1.0]}, cv=_TwoSplitsSaysThree()).fit(X, y)
    with pytest.raises(ValueError) as got:
        hpcml.GridSearchCV(Ridge(), {"alpha": [1.0]}, cv=_TwoSplitsSaysThree()).fit(X, y)
    assert str(got.value) == str(expected.value)
    COMM.Barrier()


@pytest.mark.mpi
def test_splitter_side_effects_happen_on_every_rank():
    """Each rank is a user's scikit-learn call: the splitter's warnings and its RandomState advance there too."""
    X = np.random.default_rng(0).normal(size=(40, 3))
    y = np.r_[np.zeros(38, dtype=int), 1, 1]
    ours_rs, ref_rs = np.random.RandomState(11), np.random.RandomState(11)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        hpcml.GridSearchCV(
            LogisticRegression(), {"C": [1.0]}, cv=skms.StratifiedKFold(3, shuffle=True, random_state=ours_rs)
        ).fit(X, y)
    skms.GridSearchCV(
        LogisticRegression(), {"C": [1.0]}, cv=skms.StratifiedKFold(3, shuffle=True, random_state=ref_rs)
    ).fit(X, y)
    assert any("least populated class" in str(w.message) for w in seen)
    assert ours_rs.randint(10**6) == ref_rs.randint(10**6)
    COMM.Barrier()

"""Drop-in parity at whatever size mpiexec gave: the validation functions, callbacks, verbose, routing.

Run as ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` (tests/test_mpi_tier.py: N = 1, 2, 4).
Every value is compared with scikit-learn's own function run on the same rank.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.base import clone
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.naive_bayes import MultinomialNB
from sklearn.svm import LinearSVC

import hpcml

COMM = MPI.COMM_WORLD

sklearn_callbacks = pytest.importorskip("sklearn.callback")


def data(n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n_samples=n, n_features=8, n_informative=4, n_classes=3, random_state=0)


def same_everywhere(value: np.ndarray) -> None:
    got = COMM.allgather(np.asarray(value, dtype=float).tolist())
    assert all(g == got[0] for g in got), got


@pytest.mark.mpi
@pytest.mark.parametrize("scoring", [None, "f1_macro"])
def test_cross_val_score_equals_sklearn(scoring):
    X, y = data()
    ours = hpcml.cross_val_score(LogisticRegression(max_iter=300), X, y, cv=5, scoring=scoring)
    theirs = skms.cross_val_score(LogisticRegression(max_iter=300), X, y, cv=5, scoring=scoring)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert ours.shape == (5,)
    same_everywhere(ours)


@pytest.mark.mpi
@pytest.mark.parametrize("method", ["predict", "predict_proba", "decision_function"])
def test_cross_val_predict_equals_sklearn(method):
    X, y = data(300)
    ours = hpcml.cross_val_predict(LogisticRegression(max_iter=300), X, y, cv=7, method=method)
    theirs = skms.cross_val_predict(LogisticRegression(max_iter=300), X, y, cv=7, method=method)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    same_everywhere(ours)


@pytest.mark.mpi
def test_cross_val_predict_sparse_and_shuffled_splits():
    X, y = load_digits(return_X_y=True)
    X = sp.csr_matrix(X[:400])
    y = y[:400]
    cv = skms.KFold(5, shuffle=True, random_state=3)
    ours = hpcml.cross_val_predict(MultinomialNB(), X, y, cv=cv, method="predict_log_proba")
    theirs = skms.cross_val_predict(MultinomialNB(), X, y, cv=cv, method="predict_log_proba")
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.mpi
def test_validation_curve_equals_sklearn():
    X, y = make_regression(n_samples=120, n_features=6, noise=5.0, random_state=0)
    kw = {"param_name": "alpha", "param_range": [0.01, 1.0, 10.0, 100.0], "cv": 4, "scoring": "r2"}
    ours = hpcml.validation_curve(Ridge(), X, y, **kw)
    theirs = skms.validation_curve(Ridge(), X, y, **kw)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape == (4, 4)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        same_everywhere(a)


@pytest.mark.mpi
@pytest.mark.parametrize("incremental", [False, True])
def test_learning_curve_equals_sklearn(incremental):
    X, y = data(240)
    est = SGDClassifier(random_state=0, max_iter=50, tol=None) if incremental else LogisticRegression(max_iter=300)
    kw = {"cv": 3, "train_sizes": [0.2, 0.5, 1.0], "shuffle": True, "random_state": 1, "return_times": True}
    ours = hpcml.learning_curve(est, X, y, exploit_incremental_learning=incremental, **kw)
    theirs = skms.learning_curve(est, X, y, exploit_incremental_learning=incremental, **kw)
    assert len(ours) == len(theirs) == 5
    np.testing.assert_array_equal(ours[0], theirs[0])
    for a, b in zip(ours[1:3], theirs[1:3]):
        assert a.shape == b.shape == (3, 3)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        same_everywhere(a)
    assert ours[3].shape == ours[4].shape == (3, 3)


@pytest.mark.mpi
def test_splitter_metadata_other_than_groups_is_routed():
    from sklearn import config_context
    from sklearn.model_selection import KFold

    class FoldKFold(KFold):
        """A splitter that takes its test folds from a ``fold`` array."""

        def split(self, X, y=None, groups=None, fold=None):
            for k in np.unique(fold):
                yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)

        def get_n_splits(self, X=None, y=None, groups=None, fold=None):
            return len(np.unique(fold))

    X, y = data()
    fold = np.arange(len(y)) % 3
    with config_context(enable_metadata_routing=True):
        cv = FoldKFold(n_splits=3).set_split_request(fold=True)
        ours = hpcml.cross_validate(LogisticRegression(max_iter=300), X, y, cv=cv, params={"fold": fold})
        theirs = skms.cross_validate(LogisticRegression(max_iter=300), X, y, cv=cv, params={"fold": fold})
        np.testing.assert_allclose(ours["test_score"], theirs["test_score"], rtol=0, atol=1e-12)
        grid = {"C": [0.1, 1.0]}
        a = hpcml.GridSearchCV(LogisticRegression(max_iter=300), grid, cv=cv).fit(X, y, fold=fold)
        b = skms.GridSearchCV(LogisticRegression(max_iter=300), grid, cv=cv).fit(X, y, fold=fold)
        np.testing.assert_allclose(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"], atol=1e-12)


def _hooks(callback):
    return [
        (r["name"], getattr(r.get("context"), "task_name", None), getattr(r.get("context"), "task_id", None))
        for r in callback.record
    ]


@pytest.mark.mpi
@pytest.mark.parametrize("refit", [True, False])
def test_callbacks_see_every_task_on_every_rank(refit):
    from sklearn.callback.tests._utils import MaxIterEstimator, RecordingAutoPropagatedCallback, RecordingCallback

    X, y = data(60)
    sw = np.arange(len(y)) % 3 + 1.0
    grid = {"max_iter": [1, 2, 3]}
    runs = {}
    for name, cls in (("ours", hpcml.GridSearchCV), ("theirs", skms.GridSearchCV)):
        callbacks = [RecordingCallback(), RecordingAutoPropagatedCallback()]
        search = cls(MaxIterEstimator(), grid, cv=3, scoring="r2", refit=refit).set_callbacks(*callbacks)
        search.fit(X, y, sample_weight=sw)
        runs[name] = (search, callbacks)
    ours, theirs = runs["ours"], runs["theirs"]
    for mine, ref in zip(ours[1], theirs[1]):
        # the same hooks on the same tasks (order of units may differ between ranks)
        assert sorted(_hooks(mine), key=str) == sorted(_hooks(ref), key=str)
        for rec in mine.record:
            if rec["name"] in ("on_fit_task_begin", "on_fit_task_end"):
                est = rec["estimator"]
                assert est is ours[0] or type(est).__name__ == "MaxIterEstimator"
                if rec["context"].task_name == "candidate-split-evaluation":
                    train = rec["kwargs"]["X"].shape[0]
                    np.testing.assert_array_equal(rec["kwargs"]["metadata"]["sample_weight"].shape, (train,))
    counts = COMM.allgather([len(cb.record) for cb in ours[1]])
    assert all(c == counts[0] for c in counts), counts


@pytest.mark.mpi
def test_callback_failure_in_a_unit_raises_on_every_rank():
    from sklearn.callback.tests._utils import FailingCallback, MaxIterEstimator

    X, y = data(60)
    search = hpcml.GridSearchCV(MaxIterEstimator(), {"max_iter": [1, 2]}, cv=2, scoring="r2", error_score="raise")
    search.set_callbacks(FailingCallback(fail_at="on_fit_task_end"))
    with pytest.raises(ValueError, match="Failing callback failed at on_fit_task_end"):
        search.fit(X, y)


@pytest.mark.mpi
@pytest.mark.parametrize("return_train_score", [False, True])
def test_verbose_lines_are_sklearns_and_printed_once(return_train_score):
    X, y = data(90)
    kw = {"scoring": "accuracy", "cv": 3, "verbose": 3, "return_train_score": return_train_score}
    outs = {}
    for name, cls in (("ours", hpcml.GridSearchCV), ("theirs", skms.GridSearchCV)):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cls(LinearSVC(random_state=0), {"C": [0.1, 1.0]}, **kw).fit(X, y)
        outs[name] = buf.getvalue()
    strip = re.compile(r"total time=\s*[\d.]+m?s")
    assert sorted(strip.sub("", outs["ours"]).splitlines()) == sorted(strip.sub("", outs["theirs"]).splitlines())


@pytest.mark.mpi
def test_fitted_attributes_are_sklearns():
    X, y = data(90)
    ours = hpcml.GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0]}, cv=3).fit(X, y)
    theirs = skms.GridSearchCV(LogisticRegression(max_iter=300), {"C": [0.1, 1.0]}, cv=3).fit(X, y)

    def public(obj):
        return sorted(a for a in vars(obj) if a.endswith("_") and not a.startswith("_"))

    assert public(ours) == public(theirs)
    info = hpcml.run_info(ours)
    assert len(info.schedule_reports) == 1
    assert len(info.schedule_reports[0].busy) == COMM.Get_size()
    assert info.folds["copies"] in ("rank", "node")
    with pytest.raises(Exception, match="not fitted by hpcml"):
        hpcml.run_info(clone(theirs))


@pytest.mark.mpi
def test_of_several_failing_units_the_earliest_units_error_is_raised():
    from sklearn.utils._mocking import CheckingClassifier

    X = np.arange(100).reshape(10, 10)
    y = np.array([0] * 5 + [1] * 5)
    clf = CheckingClassifier(expected_sample_weight=True)
    params = {"sample_weight": np.ones(1)}  # every unit but the 1-row training size fails, each its own message
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(1,\), expected \(2,\)!") as expected:
        skms.learning_curve(clf, X, y, error_score="raise", params=params)
    # scikit-learn's serial loop raises the first failing unit's error.  Units run at once on several ranks:
    # a rank may hold that unit (handed out early, e.g. prefetched) while another rank's later unit fails
    # first; it must still run and its error win.  Repeated: the interleaving differs from call to call.
    for _ in range(20):
        with pytest.raises(ValueError) as info:
            hpcml.learning_curve(clf, X, y, error_score="raise", params=params)
        assert str(info.value) == str(expected.value)


@pytest.mark.mpi
def test_cross_val_predict_reads_an_h5_dataset_with_its_groups_and_weights(tmp_path_factory):
    from sklearn.model_selection import GroupKFold

    from hpcml.data import write_dataset

    X, y = make_regression(n_samples=240, n_features=6, noise=1.0, random_state=0)
    groups, weights = np.arange(240) % 8, 1.0 + (np.arange(240) % 3)
    path = None
    if COMM.Get_rank() == 0:
        path = str(tmp_path_factory.mktemp("h5") / "d.h5")
        write_dataset(path, X, y, groups=groups, sample_weight=weights)
    path = COMM.bcast(path, root=0)
    ours = hpcml.cross_val_predict(
        Ridge(alpha=0.5), hpcml.H5Dataset(path, groups="groups", sample_weight="sample_weight"), cv=GroupKFold(4)
    )
    theirs = skms.cross_val_predict(
        Ridge(alpha=0.5), X, y, groups=groups, cv=GroupKFold(4), params={"sample_weight": weights}
    )
    unweighted = skms.cross_val_predict(Ridge(alpha=0.5), X, y, groups=groups, cv=GroupKFold(4))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert not np.allclose(ours, unweighted)  # the file's sample_weight reached fit
    same_everywhere(ours)

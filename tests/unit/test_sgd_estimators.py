"""Serial (one-rank) behaviour of hpcml.sgd estimators: accuracy vs scikit-learn and the estimator API."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from mpi4py import MPI
from sklearn import linear_model as lm
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_digits, make_classification, make_regression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hpcml.data.h5 import H5Dataset, write_dataset
from hpcml.errors import DataError
from hpcml.sgd import InvalidData, SGDClassifier, SGDRegressor

threadpool_limits(1)  # small problems: BLAS threads cost more than they give

#: Settings that match scikit-learn on the three data sets below (see tests/mpi for 2 and 4 ranks).
CLF = dict(batch_size=16, eta0=0.2, alpha=1e-3, max_iter=40, tol=None)


def split(name):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
    elif name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
    else:
        X, y = make_classification(4000, 20, n_informative=10, random_state=0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0, stratify=y, test_size=0.3)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "make_classification"])
def test_log_loss_accuracy_matches_sklearn(name):
    Xtr, Xte, ytr, yte = split(name)
    ours = SGDClassifier(comm="self", **CLF).fit(Xtr, ytr).score(Xte, yte)
    sk_sgd = lm.SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr).score(Xte, yte)
    sk_lr = lm.LogisticRegression(max_iter=2000).fit(Xtr, ytr).score(Xte, yte)
    # "within 0.01": never worse than either reference by more than 0.01
    assert ours >= sk_sgd - 0.01, (ours, sk_sgd)
    assert ours >= sk_lr - 0.01, (ours, sk_lr)


def test_hinge_accuracy_matches_sklearn():
    Xtr, Xte, ytr, yte = split("digits")
    ours = SGDClassifier(loss="hinge", comm="self", **CLF).fit(Xtr, ytr).score(Xte, yte)
    ref = lm.SGDClassifier(loss="hinge", random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= ref - 0.01, (ours, ref)


@pytest.mark.parametrize("loss", ["squared_error", "huber"])
def test_regression_r2_matches_sklearn(loss):
    X, y = make_regression(3000, 20, noise=20.0, random_state=0)
    y = (y - y.mean()) / y.std()
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    kw = dict(epsilon=1.35) if loss == "huber" else {}
    ours = SGDRegressor(loss=loss, comm="self", batch_size=16, eta0=0.05, max_iter=30, tol=None, **kw)
    ours = ours.fit(Xtr, ytr).score(Xte, yte)
    ref = lm.SGDRegressor(loss=loss, random_state=0, **kw).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= ref - 0.01, (ours, ref)
    assert ours > 0.9


def test_fitted_attributes_and_proba():
    Xtr, Xte, ytr, yte = split("digits")
    est = SGDClassifier(comm="self", max_iter=3, tol=None).fit(Xtr, ytr)
    assert est.coef_.shape == (10, 64) and est.intercept_.shape == (10,)
    np.testing.assert_array_equal(est.classes_, np.arange(10))
    assert est.n_iter_ == 3 and len(est.loss_curve_) == 3
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    p = est.predict_proba(Xte)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.classes_[p.argmax(axis=1)], est.predict(Xte))
    assert est.decision_function(Xte).shape == (len(Xte), 10)
    assert {"compute_s", "comm_s", "steps"} <= set(est.timing_)
    assert est.timing_["comm_s"] >= 0 and est.timing_["steps"] == est.t_
    # binary, string labels
    Xb, yb = make_classification(300, 5, random_state=1)
    labels = np.array(["no", "yes"])[yb]
    est = SGDClassifier(comm="self").fit(Xb, labels)
    assert est.coef_.shape == (1, 5)
    assert set(est.predict(Xb)) <= {"no", "yes"}
    assert est.decision_function(Xb).shape == (300,)
    assert est.predict_proba(Xb).shape == (300, 2)
    hinge = SGDClassifier(loss="hinge", comm="self").fit(Xb, labels)
    assert not hasattr(hinge, "predict_proba")


def test_l1_gives_exact_zeros():
    X, y = make_classification(500, 30, n_informative=3, n_redundant=0, random_state=0)
    est = SGDClassifier(penalty="l1", alpha=0.03, comm="self", max_iter=20, tol=None).fit(X, y)
    zeros = np.count_nonzero(est.coef_ == 0.0)
    assert zeros >= 12, zeros
    dense = SGDClassifier(penalty="l2", alpha=0.03, comm="self", max_iter=20, tol=None).fit(X, y)
    assert np.count_nonzero(dense.coef_ == 0.0) == 0


def test_schedules_momentum_and_early_stopping_run():
    Xtr, Xte, ytr, yte = split("make_classification")
    for kw in (
        dict(learning_rate="cosine", warmup_steps=50, momentum=0.9, nesterov=True, eta0=0.05),
        dict(learning_rate="invscaling", eta0=0.5, power_t=0.25),
        dict(sampling="local", eta0=0.1),
    ):
        est = SGDClassifier(comm="self", max_iter=10, tol=None, **kw).fit(Xtr, ytr)
        assert est.score(Xte, yte) > 0.74, kw
    es = SGDClassifier(comm="self", max_iter=200, early_stopping=True, n_iter_no_change=3, tol=1e-3)
    es.fit(Xtr, ytr)
    assert es.n_iter_ < 200
    assert len(es.validation_loss_curve_) == es.n_iter_ == len(es.validation_scores_)
    assert 0.6 < es.validation_scores_[-1] <= 1.0
    # held-out rows are not trained on: samples per epoch = 90 % of the rows
    assert es.history_[0]["samples"] == len(ytr) - int(np.ceil(0.1 * len(ytr)))


def test_clone_keeps_communicator_and_params():
    for comm in (None, "self", MPI.COMM_SELF, MPI.COMM_WORLD):
        est = SGDClassifier(alpha=0.01, comm=comm)
        twin = clone(est)
        assert twin is not est
        assert twin.comm is comm
        assert twin.get_params()["alpha"] == 0.01
    est = SGDRegressor(comm=MPI.COMM_SELF).set_params(eta0=0.3, comm="self")
    assert est.get_params()["eta0"] == 0.3 and est.comm == "self"


def test_pickle_strips_communicator_handle():
    X, y = make_classification(200, 4, random_state=0)
    est = SGDClassifier(comm=MPI.COMM_SELF, max_iter=2).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    assert back.comm == "self"
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    world = pickle.loads(pickle.dumps(SGDClassifier(comm=MPI.COMM_WORLD)))
    assert world.comm is None


def test_inside_sklearn_gridsearchcv():
    Xtr, Xte, ytr, yte = split("breast_cancer")
    grid = GridSearchCV(
        SGDClassifier(comm="self", max_iter=5, tol=None), {"alpha": [1e-4, 1e-1], "loss": ["log_loss", "hinge"]}, cv=3
    )
    grid.fit(Xtr, ytr)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_score_ > 0.9
    assert grid.score(Xte, yte) > 0.9
    assert grid.best_estimator_.comm == "self"


def test_fit_from_h5_dataset_matches_arrays(tmp_path):
    X, y = make_classification(500, 8, random_state=3)
    path = write_dataset(tmp_path / "d.h5", X, y)
    a = SGDClassifier(comm="self", max_iter=3, tol=None).fit(X, y)
    b = SGDClassifier(comm="self", max_iter=3, tol=None).fit(H5Dataset(path))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12)
    X32 = X.astype(np.float32)
    path32 = write_dataset(tmp_path / "d32.h5", X32, y)
    c = SGDClassifier(comm="self", max_iter=3, tol=None).fit(H5Dataset(path32))
    np.testing.assert_allclose(a.coef_, c.coef_, rtol=1e-3, atol=1e-4)  # float32 compute


def test_bad_input_and_params():
    X, y = make_classification(50, 4, n_informative=2, random_state=0)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(InvalidData):
        SGDClassifier(comm="self").fit(Xn, y)
    with pytest.raises(ValueError, match="single class"):
        SGDClassifier(comm="self").fit(X, np.zeros(50))
    with pytest.raises(ValueError, match="loss"):
        SGDClassifier(loss="squared_error", comm="self").fit(X, y)
    with pytest.raises(ValueError, match="sampling"):
        SGDClassifier(sampling="nope", comm="self").fit(X, y)
    with pytest.raises(ValueError, match="comm"):
        SGDClassifier(comm="everyone").fit(X, y)
    with pytest.raises(ValueError, match="features"):
        SGDClassifier(comm="self").fit(X, y).predict(X[:, :3])
    with pytest.raises(DataError, match="not found"):
        SGDClassifier(comm="self").fit(H5Dataset("/nonexistent/x.h5"))

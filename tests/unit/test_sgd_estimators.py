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


def test_sample_weight_semantics():
    X, y = make_classification(400, 6, random_state=4)
    kw = dict(comm="self", max_iter=5, tol=None, batch_size=32)
    plain = SGDClassifier(**kw).fit(X, y)
    ones = SGDClassifier(**kw).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(plain.coef_, ones.coef_)
    # rows with weight 0 contribute nothing: their features may be anything
    w = np.where(np.arange(len(y)) % 3 == 0, 0.0, 1.0)
    noisy = X.copy()
    noisy[w == 0] = np.random.default_rng(0).normal(scale=50.0, size=(int((w == 0).sum()), X.shape[1]))
    a = SGDClassifier(**kw).fit(X, y, sample_weight=w)
    b = SGDClassifier(**kw).fit(noisy, y, sample_weight=w)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12)
    assert not np.allclose(a.coef_, plain.coef_)
    # weighting one class pulls the decision towards it, as in scikit-learn
    w1 = np.where(y == 1, 10.0, 1.0)
    ours = SGDClassifier(**kw).fit(X, y, sample_weight=w1).predict(X).mean()
    sk = lm.SGDClassifier(loss="log_loss", random_state=0).fit(X, y, sample_weight=w1).predict(X).mean()
    assert ours > plain.predict(X).mean() and sk > plain.predict(X).mean()
    for bad, match in ((np.ones(3), "sample"), (-np.ones(len(y)), ">= 0"), (np.full(len(y), np.nan), "NaN")):
        with pytest.raises(ValueError, match=match):
            SGDClassifier(**kw).fit(X, y, sample_weight=bad)


def test_sample_weight_from_h5_dataset(tmp_path):
    X, y = make_regression(300, 5, noise=1.0, random_state=0)
    y = y / y.std()
    w = np.random.default_rng(1).uniform(0.0, 2.0, size=len(y))
    path = write_dataset(tmp_path / "w.h5", X, y, sample_weight=w)
    kw = dict(comm="self", max_iter=4, tol=None, batch_size=32)
    a = SGDRegressor(**kw).fit(X, y, sample_weight=w)
    b = SGDRegressor(**kw).fit(H5Dataset(path, sample_weight="sample_weight"))
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-12)
    c = SGDRegressor(**kw).fit(H5Dataset(path))  # weights not named: not used
    assert not np.allclose(a.coef_, c.coef_)
    with pytest.raises(ValueError, match="sample_weight"):
        SGDRegressor(**kw).fit(H5Dataset(path), sample_weight=w)


def test_feature_names_are_checked_like_sklearn():
    import pandas as pd

    X, y = make_classification(200, 4, random_state=0)
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    est = SGDClassifier(comm="self", max_iter=3, tol=None).fit(df, y)
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(est.predict(df), est.predict(X))
    with pytest.raises(ValueError, match="feature names"):
        est.predict(df[["d", "c", "b", "a"]])
    with pytest.raises(ValueError, match="is expecting 4 features"):
        est.predict(X[:, :3])
    refit = est.fit(X, y)  # refit on an array forgets the names
    assert not hasattr(refit, "feature_names_in_")


def test_convergence_warning_and_divergence():
    from sklearn.exceptions import ConvergenceWarning

    from hpcml.sgd import FitDiverged

    X, y = make_classification(300, 5, random_state=0)
    with pytest.warns(ConvergenceWarning, match="Maximum number of iteration"):
        SGDClassifier(comm="self", max_iter=2).fit(X, y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        SGDClassifier(comm="self", max_iter=2, tol=None).fit(X, y)  # asked for exactly 2 epochs: no warning
        SGDClassifier(comm="self").fit(X, y)  # converges by the tol rule
    Xr, yr = make_regression(200, 5, random_state=0)
    with pytest.warns(ConvergenceWarning, match="diverging"):
        # one full batch per epoch: the loss grows epoch by epoch without overflowing at once
        SGDRegressor(comm="self", eta0=1.0, max_iter=50, batch_size=256).fit(Xr * 1000, yr)
    with pytest.raises(FitDiverged, match="overflow"):
        SGDRegressor(comm="self", eta0=1.0, max_iter=200, tol=None).fit(Xr * 1e6, yr)


def test_defaults_are_close_to_sklearn_on_small_data():
    Xtr, Xte, ytr, yte = split("breast_cancer")
    ours = SGDClassifier(comm="self").fit(Xtr, ytr).score(Xte, yte)
    sk = lm.SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= sk - 0.02, (ours, sk)
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)  # raw target: mean 152
    Xtr, Xte, ytr, yte = train_test_split(StandardScaler().fit_transform(X), y, random_state=0)
    ours = SGDRegressor(comm="self").fit(Xtr, ytr).score(Xte, yte)
    sk = lm.SGDRegressor(random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= sk - 0.02, (ours, sk)


def test_targets_and_params_are_validated():
    X, y = make_classification(100, 4, random_state=0)
    with pytest.raises(ValueError, match="Unknown label type"):
        SGDClassifier(comm="self").fit(X, np.linspace(0, 1, 100))
    with pytest.raises(ValueError, match="requires y"):
        SGDRegressor(comm="self").fit(X)
    for kw, match in (
        (dict(tol=-1.0), "tol"),
        (dict(power_t=-1.0), "power_t"),
        (dict(eta_min=1.0), "eta_min"),
        (dict(warmup_steps=2.5), "warmup_steps"),
        (dict(n_iter_no_change=2.5), "n_iter_no_change"),
        (dict(validation_fraction=2.0), "validation_fraction"),
        (dict(fit_intercept="no"), "fit_intercept"),
        (dict(nesterov=True), "momentum"),
    ):
        with pytest.raises(ValueError, match=match):
            SGDClassifier(comm="self", **kw).fit(X, y)


@pytest.mark.parametrize("cls", [SGDClassifier, SGDRegressor])
def test_sklearn_estimator_checks(cls):
    """scikit-learn's own API checks; the one expected failure is the one scikit-learn's SGD has too."""
    estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")
    import inspect

    if "expected_failed_checks" not in inspect.signature(estimator_checks.check_estimator).parameters:
        pytest.skip("scikit-learn < 1.6 has no expected_failed_checks")
    xfail = {
        "check_sample_weight_equivalence_on_dense_data": "stochastic: weights are not repeated rows (as sklearn SGD)"
    }
    results = estimator_checks.check_estimator(cls(comm="self"), expected_failed_checks=xfail, on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) > 40


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_local_sampling_in_place_runs_equal_gathered_batches(monkeypatch, weighted, early_stopping):
    """The three ways a local batch reaches the kernel give the same model.

    C-contiguous X: runs straight from the block order (every row in training)
    or runs found in each batch's row indices (held-out rows); Fortran-ordered
    X: rows gathered into a buffer.
    """
    import hpcml.sgd.sampling as S

    X, y = make_classification(3000, 12, random_state=2)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=y.shape) if weighted else None
    kw = dict(comm="self", sampling="local", batch_size=256, max_iter=3, tol=None, early_stopping=early_stopping)
    calls = {"plan": 0, "detect": 0}
    real_plan, real_detect = S.local_epoch_runs, S.contiguous_runs

    def plan(*args):
        calls["plan"] += 1
        return real_plan(*args)

    def detect(rows):
        calls["detect"] += 1
        return real_detect(rows)

    monkeypatch.setattr(S, "local_epoch_runs", plan)
    monkeypatch.setattr(S, "contiguous_runs", detect)
    small = SGDClassifier(**kw).fit(X, y, sample_weight=w)
    assert calls == {"plan": 0, "detect": 0}  # blocks of 32 x 12 float64 rows: gathering is cheaper
    monkeypatch.setattr(S, "MIN_RUN_BYTES", 0)
    in_place = SGDClassifier(**kw).fit(X, y, sample_weight=w)
    if early_stopping:
        assert calls == {"plan": 0, "detect": in_place.t_}
    else:
        assert calls == {"plan": in_place.n_iter_, "detect": 0}
    before = dict(calls)
    gathered = SGDClassifier(**kw).fit(np.asfortranarray(X), y, sample_weight=w)
    assert calls == before  # every step gathered
    for other in (gathered, small):
        np.testing.assert_allclose(in_place.coef_, other.coef_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(in_place.intercept_, other.intercept_, rtol=1e-10, atol=1e-12)


def test_auto_batch_size_lets_small_sets_train_like_sklearn():
    from sklearn.datasets import load_iris

    from hpcml.sgd.estimators import auto_batch_size

    assert [auto_batch_size(n) for n in (1, 112, 600, 8192, 10**7)] == [16, 16, 18, 256, 256]
    X, y = load_iris(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    ours = SGDClassifier(comm="self", random_state=0).fit(Xtr, ytr)
    assert ours.batch_size_ == 16
    sk = lm.SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert ours.score(Xte, yte) >= sk - 0.01, (ours.score(Xte, yte), sk)
    assert SGDClassifier(comm="self", batch_size=64).fit(Xtr, ytr).batch_size_ == 64
    with pytest.raises(ValueError, match="batch_size"):
        SGDClassifier(comm="self", batch_size="big").fit(Xtr, ytr)

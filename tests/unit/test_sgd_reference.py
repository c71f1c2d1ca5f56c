"""A plain NumPy, single-process reference of hpcml.sgd's global-sampling SGD.

Written independently of ``hpcml.sgd`` (only the documented permutation stream
is shared: ``np.random.default_rng([seed, epoch]).permutation(training rows)``).
``tests/mpi/test_sgd_mpi.py`` imports :func:`reference_sgd` from this file.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_classification, make_regression

from hpcml.sgd import SGDClassifier, SGDRegressor


def reference_sgd(
    X,
    y,
    *,
    loss,
    alpha=1e-4,
    penalty="l2",
    l1_ratio=0.15,
    eta0=0.1,
    batch_size=32,
    epochs=3,
    seed=0,
    momentum=0.0,
    nesterov=False,
    epsilon=0.1,
    sample_weight=None,
):
    """Mini-batch SGD, one global permutation per epoch, mean gradient per batch.

    ``sample_weight`` scales each row's gradient (the mean is still over rows).

    Returns (coef with shape (k, d), intercept (k,), classes or None).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    classes = None
    if loss in ("log_loss", "hinge"):
        classes, yi = np.unique(y, return_inverse=True)
        k = 1 if len(classes) == 2 else len(classes)
    else:
        k = 1
        yv = np.asarray(y, dtype=np.float64)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    W = np.zeros((d, k))
    b = np.zeros(k)
    vW = np.zeros((d, k))
    vb = np.zeros(k)
    u, q = 0.0, np.zeros((d, k))  # cumulative L1 penalty: owed to every weight, received by each
    l2 = {"l2": alpha, "l1": 0.0, "elasticnet": alpha * (1 - l1_ratio)}[penalty]
    l1 = {"l2": 0.0, "l1": alpha, "elasticnet": alpha * l1_ratio}[penalty]
    for epoch in range(epochs):
        perm = np.random.default_rng([seed, epoch]).permutation(np.arange(n))
        for j in range(0, n, batch_size):
            idx = perm[j : j + batch_size]
            xb = X[idx]
            z = xb @ W + b
            if loss == "log_loss" and k == 1:
                s = np.where(yi[idx] == 1, 1.0, -1.0)[:, None]
                dz = -s / (1.0 + np.exp(s * z))
            elif loss == "log_loss":
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(idx)), yi[idx]] -= 1.0
                dz = p
            elif loss == "hinge":
                s = -np.ones((len(idx), k))
                if k == 1:
                    s[:, 0] = np.where(yi[idx] == 1, 1.0, -1.0)
                else:
                    s[np.arange(len(idx)), yi[idx]] = 1.0
                dz = np.where(s * z < 1.0, -s, 0.0)
            elif loss == "squared_error":
                dz = z - yv[idx, None]
            else:  # huber
                dz = np.clip(z - yv[idx, None], -epsilon, epsilon)
            dz = dz * w[idx, None]
            gW = xb.T @ dz / len(idx) + l2 * W
            gb = dz.sum(axis=0) / len(idx)
            if momentum:
                vW = momentum * vW + gW
                vb = momentum * vb + gb
                if nesterov:
                    gW, gb = gW + momentum * vW, gb + momentum * vb
                else:
                    gW, gb = vW, vb
            W = W - eta0 * gW
            b = b - eta0 * gb
            if l1:  # cumulative L1 penalty (Tsuruoka et al. 2009): clip towards 0 by what is still owed
                u += eta0 * l1
                old = W
                W = np.where(W > 0, np.maximum(0.0, W - (u + q)), np.where(W < 0, np.minimum(0.0, W + (u - q)), W))
                q = q + (W - old)
    return W.T, b, classes


REF_CASES = [
    dict(loss="log_loss", n_classes=2, penalty="l2", momentum=0.0),
    dict(loss="log_loss", n_classes=3, penalty="elasticnet", momentum=0.9, nesterov=True),
    dict(loss="log_loss", n_classes=2, penalty="l2", momentum=0.0, weighted=True),
    dict(loss="hinge", n_classes=3, penalty="l1", momentum=0.5),
    dict(loss="squared_error", n_classes=0, penalty="l2", momentum=0.0),
    dict(loss="huber", n_classes=0, penalty="l2", momentum=0.9),
    dict(loss="squared_error", n_classes=0, penalty="l1", momentum=0.0, weighted=True),
    dict(loss="hinge", n_classes=2, penalty="l2", momentum=0.0, weighted=True),
]


def case_weights(case, n):
    """Sample weights of a ``weighted`` case (zeros included), else None."""
    if not case.get("weighted"):
        return None
    w = np.random.default_rng(3).uniform(0.0, 3.0, size=n)
    w[::7] = 0.0
    return w


def make_case(case, n=210, d=6, seed=0):
    if case["n_classes"]:
        X, y = make_classification(n, d, n_informative=4, n_classes=case["n_classes"], random_state=seed)
    else:
        X, y = make_regression(n, d, noise=1.0, random_state=seed)
        y = y / y.std()
    return X, y


def fit_hpcml(case, X, y, comm="self", **extra):
    kw = dict(
        loss=case["loss"],
        penalty=case["penalty"],
        alpha=1e-3,
        eta0=0.05,
        batch_size=32,
        max_iter=3,
        tol=None,
        momentum=case["momentum"],
        nesterov=case.get("nesterov", False),
        random_state=7,
        comm=comm,
    )
    kw.update(extra)
    cls = SGDClassifier if case["n_classes"] else SGDRegressor
    if not case["n_classes"]:
        kw["epsilon"] = 0.5
    return cls(**kw).fit(X, y, sample_weight=case_weights(case, len(y)))


def reference_for(case, X, y):
    return reference_sgd(
        X,
        y,
        loss=case["loss"],
        penalty=case["penalty"],
        alpha=1e-3,
        eta0=0.05,
        batch_size=32,
        epochs=3,
        seed=7,
        momentum=case["momentum"],
        nesterov=case.get("nesterov", False),
        epsilon=0.5,
        sample_weight=case_weights(case, len(y)),
    )


def test_serial_fit_equals_numpy_reference():
    for case in REF_CASES:
        X, y = make_case(case)
        est = fit_hpcml(case, X, y)
        W, b, classes = reference_for(case, X, y)
        coef = np.atleast_2d(est.coef_)
        assert coef.shape == W.shape, case
        np.testing.assert_allclose(coef, W, rtol=1e-10, atol=1e-12, err_msg=str(case))
        np.testing.assert_allclose(est.intercept_, b, rtol=1e-10, atol=1e-12, err_msg=str(case))
        assert not np.allclose(W, 0.0)
        if classes is not None:
            np.testing.assert_array_equal(est.classes_, classes)

"""hpcml.sgd.optimizer without MPI: update rules against a plain reference, stop rule, divergence, history."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from hpcml.sgd.optimizer import DivergenceWatch, History, Optimizer, StopRule


def reference_steps(grads, lrs, *, mu, nesterov, l2, l1, fit_intercept, d, k):
    """The update rules written out plainly: mean gradient, L2, momentum/Nesterov, step, cumulative L1."""
    W, b = np.zeros((d, k)), np.zeros(k)
    vW, vb = np.zeros((d, k)), np.zeros(k)
    u, q = 0.0, np.zeros((d, k))
    for (sW, sb, count), lr in zip(grads, lrs):
        gW = sW / count + l2 * W
        gb = sb / count
        if mu:
            vW = mu * vW + gW
            vb = mu * vb + gb
            gW, gb = (gW + mu * vW, gb + mu * vb) if nesterov else (vW, vb)
        W = W - lr * gW
        if fit_intercept:
            b = b - lr * gb
        if l1:
            u += lr * l1
            before = W.copy()
            W = np.where(before > 0, np.maximum(0.0, W - (u + q)), W)
            W = np.where(before < 0, np.minimum(0.0, W + (u - q)), W)
            q = q + (W - before)
    return W, b


def random_grads(rng, steps, d, k):
    return [(rng.normal(size=(d, k)) * 5, rng.normal(size=k) * 5, float(rng.integers(1, 40))) for _ in range(steps)]


@pytest.mark.parametrize(
    "mu, nesterov, l2, l1, fit_intercept",
    [
        (0.0, False, 0.0, 0.0, True),
        (0.0, False, 1e-2, 0.0, True),
        (0.9, False, 1e-3, 0.0, True),
        (0.9, True, 1e-3, 0.0, False),
        (0.0, False, 0.0, 5e-2, True),
        (0.5, True, 1e-3, 2e-2, True),
    ],
)
def test_steps_match_the_plain_rules(mu, nesterov, l2, l1, fit_intercept):
    rng = np.random.default_rng(3)
    d, k, steps = 7, 3, 25
    grads = random_grads(rng, steps, d, k)
    lrs = list(np.linspace(0.2, 0.01, steps))
    opt = Optimizer(d, k, momentum=mu, nesterov=nesterov, l2=l2, l1=l1, fit_intercept=fit_intercept)
    for (sW, sb, count), lr in zip(grads, lrs):
        opt.step(sW.copy(), sb.copy(), count, lr)
    W, b = reference_steps(grads, lrs, mu=mu, nesterov=nesterov, l2=l2, l1=l1, fit_intercept=fit_intercept, d=d, k=k)
    np.testing.assert_allclose(opt.W, W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(opt.b, b, rtol=1e-12, atol=1e-14)
    assert opt.t == steps
    if not fit_intercept:
        assert not opt.b.any()


def test_l1_keeps_unsupported_weights_at_exact_zero():
    d, k = 5, 1
    opt = Optimizer(d, k, l1=1.0)
    rng = np.random.default_rng(0)
    for _ in range(50):  # small noisy gradients around zero: the penalty owed dominates
        opt.step(rng.normal(scale=1e-3, size=(d, k)), np.zeros(k), 1.0, 0.1)
    assert np.count_nonzero(opt.W) == 0


def test_float32_copy_follows_every_step():
    opt = Optimizer(4, 2, np.float32, momentum=0.5)
    assert opt.Wc.dtype == np.float32 and opt.Wc is not opt.W
    opt.step(np.ones((4, 2)), np.ones(2), 2.0, 0.1)
    np.testing.assert_array_equal(opt.Wc, opt.W.astype(np.float32))
    np.testing.assert_array_equal(opt.bc, opt.b.astype(np.float32))
    same = Optimizer(4, 2, np.float64)
    assert same.Wc is same.W and same.bc is same.b


def test_gradient_buffers_are_scaled_in_place_not_replaced():
    gW, gb = np.full((2, 1), 4.0), np.full(1, 4.0)
    Optimizer(2, 1).step(gW, gb, 4.0, 0.5)
    np.testing.assert_array_equal(gW, np.ones((2, 1)))
    np.testing.assert_array_equal(gb, np.ones(1))


def test_finite():
    opt = Optimizer(2, 1)
    assert opt.finite()
    opt.step(np.array([[np.inf], [0.0]]), np.zeros(1), 1.0, 1.0)
    assert not opt.finite()


def test_stop_rule_is_scikit_learns_patience():
    rule = StopRule(tol=0.1, patience=2)
    # 1.0 improves on inf; 0.95 is not 0.1 better (1); 0.5 is (reset); 0.45 (1); 0.41 (2): stop
    assert [rule(s) for s in [1.0, 0.95, 0.5, 0.45, 0.41]] == [False, False, False, False, True]
    assert rule.best == 0.41
    never = StopRule(tol=None, patience=1)
    assert not any(never(s) for s in [1.0, 2.0, 3.0, 4.0])


def test_divergence_warns_once_when_the_loss_explodes():
    watch = DivergenceWatch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch, loss in enumerate([1.0, 2.0, 1e5, 1e7], start=1):
            watch(loss, epoch)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 1
    assert "at epoch 3" in messages[0] and "best 1" in messages[0]
    assert watch.best == 1.0


def test_history_records_and_totals():
    history = History()
    history.add(1, 0.5, 0.1, 100, None, (1.0, 0.25, 1.5))
    record = history.add(2, 0.4, 0.05, 100, (0.45, 0.9), (2.0, 0.5, 2.75))
    assert history.loss_curve == [0.5, 0.4]
    assert history.val_loss_curve == [0.45] and history.val_scores == [0.9]
    assert record == {
        "epoch": 2,
        "train_loss": 0.4,
        "lr": 0.05,
        "samples": 100,
        "val_loss": 0.45,
        "val_score": 0.9,
        "compute_s": 2.0,
        "comm_s": 0.5,
        "wall_s": 2.75,
    }
    assert (history.compute_total, history.comm_total) == (3.0, 0.75)
    assert History.line(record) == "epoch 2: loss 0.400000, val_loss 0.450000, lr 0.05, 2.750 s"

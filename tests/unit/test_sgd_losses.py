"""Unit tests (no MPI launch) of hpcml.sgd losses, prox, schedules and sampling plans."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpcml.sgd import losses as L
from hpcml.sgd.sampling import (
    block_permutation,
    contiguous_runs,
    global_epoch_plan,
    local_block_rows,
    local_epoch_plan,
    local_epoch_runs,
    shard_range,
    validation_mask,
)
from hpcml.sgd.schedules import Schedule, linear_scaled_eta0

# -- reference formulas (test-only: the estimators use BatchKernel and CumulativeL1) -------------


def penalty_value(W: np.ndarray, l2: float, l1: float) -> float:
    """``l2 * ||W||^2 / 2 + l1 * ||W||_1`` (intercepts are never penalised)."""
    out = 0.0
    if l2:
        out += 0.5 * l2 * float(np.dot(W.ravel(), W.ravel()))
    if l1:
        out += l1 * float(np.abs(W).sum())
    return out


def prox_l1(W: np.ndarray, threshold: float) -> None:
    """Soft thresholding in place: the proximal operator of ``threshold * ||W||_1``."""
    if threshold <= 0:
        return
    np.copysign(np.maximum(np.abs(W) - threshold, 0.0), W, out=W)


def batch_gradient(
    loss: str,
    X: np.ndarray,
    T: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    epsilon: float = 0.1,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss sum and gradients (sums over rows) of one mini-batch; no penalty.

    Parameters
    ----------
    loss : str
        Loss name.
    X : ndarray of shape (n, d)
        Rows of the batch.
    T : ndarray
        Encoded target.
    W : ndarray of shape (d, k)
        Weights.
    b : ndarray of shape (k,)
        Intercepts.
    epsilon : float
        Huber threshold.
    sample_weight : ndarray of shape (n,), optional
        Per-row weights.

    Returns
    -------
    loss_sum : float
    gW : ndarray of shape (d, k)
    gb : ndarray of shape (k,)
    """
    Z = X @ W.astype(X.dtype, copy=False)
    Z += b.astype(X.dtype, copy=False)
    value, dz = L.loss_and_dz(loss, Z, T, epsilon, sample_weight)
    return value, X.T @ dz, dz.sum(axis=0)


CASES = [
    ("log_loss", 2),
    ("log_loss", 4),
    ("hinge", 2),
    ("hinge", 3),
    ("squared_error", 0),
    ("huber", 0),
]


def _objective(loss, X, T, W, b, eps):
    Z = X @ W + b
    return L.loss_and_dz(loss, Z, T, eps)[0]


@pytest.mark.parametrize("loss,n_classes", CASES)
def test_gradient_matches_finite_differences(loss, n_classes):
    rng = np.random.default_rng(1)
    n, d = 17, 5
    X = rng.normal(size=(n, d))
    k = L.n_outputs(loss, n_classes)
    if n_classes:
        y = rng.integers(0, n_classes, size=n)
    else:
        y = rng.normal(scale=2.0, size=n)
    T = L.encode_target(loss, y, n_classes)
    W = rng.normal(scale=0.3, size=(d, k))
    b = rng.normal(scale=0.3, size=k)
    eps = 0.7
    value, gW, gb = batch_gradient(loss, X, T, W, b, eps)
    assert value == pytest.approx(_objective(loss, X, T, W, b, eps))
    h = 1e-6
    num_W = np.zeros_like(W)
    for i in range(d):
        for j in range(k):
            Wp, Wm = W.copy(), W.copy()
            Wp[i, j] += h
            Wm[i, j] -= h
            num_W[i, j] = (_objective(loss, X, T, Wp, b, eps) - _objective(loss, X, T, Wm, b, eps)) / (2 * h)
    num_b = np.zeros_like(b)
    for j in range(k):
        bp, bm = b.copy(), b.copy()
        bp[j] += h
        bm[j] -= h
        num_b[j] = (_objective(loss, X, T, W, bp, eps) - _objective(loss, X, T, W, bm, eps)) / (2 * h)
    # hinge and huber have kinks; random points are almost surely away from them
    np.testing.assert_allclose(gW, num_W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, num_b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss,n_classes", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_kernel_matches_batch_gradient(loss, n_classes, dtype):
    rng = np.random.default_rng(2)
    n, d = 40, 6
    k = L.n_outputs(loss, n_classes)
    y = rng.integers(0, n_classes, size=n) if n_classes else rng.normal(scale=2.0, size=n)
    X = rng.normal(size=(n, d)).astype(dtype)
    T = L.encode_target(loss, y, n_classes, dtype=dtype)
    W = rng.normal(scale=2.0, size=(d, k))  # large scores: both tails of the logistic
    b = rng.normal(scale=0.3, size=k)
    kern = L.BatchKernel(loss, 64, d, k, dtype, epsilon=0.7)
    gW, gb = np.empty((d, k)), np.empty(k)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    for m in (n, 7):  # a shorter batch uses the front of the buffers
        value = kern(X[:m], T[:m], W.astype(dtype), b.astype(dtype), gW, gb)
        ref_value, ref_gW, ref_gb = batch_gradient(loss, X[:m].astype(np.float64), T[:m], W, b, 0.7)
        assert value == pytest.approx(ref_value, rel=rtol)
        np.testing.assert_allclose(gW, ref_gW, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(gb, ref_gb, rtol=rtol, atol=rtol)


def test_batch_kernel_binary_log_loss_is_stable_for_huge_scores():
    kern = L.BatchKernel("log_loss", 2, 1, 1, np.float64)
    gW, gb = np.empty((1, 1)), np.empty(1)
    value = kern(np.array([[800.0], [-800.0]]), np.array([[1.0], [1.0]]), np.ones((1, 1)), np.zeros(1), gW, gb)
    assert value == pytest.approx(800.0) and np.isfinite(gW).all() and gb[0] == pytest.approx(-1.0)


def test_log_loss_is_stable_for_huge_scores():
    Z = np.array([[800.0], [-800.0]])
    T = np.array([[1.0], [1.0]])
    value, dz = L.loss_and_dz("log_loss", Z, T)
    assert np.isfinite(value) and value == pytest.approx(800.0)
    assert np.all(np.isfinite(dz))
    Zm = np.array([[1000.0, 0.0, -1000.0]])
    value, dz = L.loss_and_dz("log_loss", Zm, np.array([2]))
    assert value == pytest.approx(2000.0)
    assert np.all(np.isfinite(dz))


def test_multinomial_matches_sklearn_log_loss():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, size=30)
    value, _ = L.loss_and_dz("log_loss", Z, y)
    assert value / 30 == pytest.approx(log_loss(y, L.softmax(Z.copy()), labels=[0, 1, 2]))


def test_prox_l1_soft_thresholds_to_exact_zero():
    W = np.array([[0.5, -0.05], [0.02, -2.0]])
    prox_l1(W, 0.1)
    np.testing.assert_array_equal(W, [[0.4, 0.0], [0.0, -1.9]])
    assert np.signbit(W[0, 1]) or W[0, 1] == 0.0


def test_penalty_parts():
    assert L.penalty_parts("l2", 0.1, 0.3) == (0.1, 0.0)
    assert L.penalty_parts("l1", 0.1, 0.3) == (0.0, 0.1)
    l2, l1 = L.penalty_parts("elasticnet", 0.1, 0.3)
    assert l2 == pytest.approx(0.07) and l1 == pytest.approx(0.03)
    assert L.penalty_parts(None, 0.1, 0.3) == (0.0, 0.0)
    with pytest.raises(ValueError):
        L.penalty_parts("l3", 0.1, 0.3)
    W = np.array([[1.0, -2.0]])
    assert penalty_value(W, 0.5, 0.1) == pytest.approx(0.5 * 0.5 * 5 + 0.1 * 3)


def test_schedules():
    c = Schedule("constant", 0.4, total_steps=100, warmup_steps=4)
    assert [c(t) for t in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])
    inv = Schedule("invscaling", 1.0, power_t=0.5)
    assert inv(0) == 1.0 and inv(3) == pytest.approx(0.5)
    cos = Schedule("cosine", 1.0, total_steps=110, warmup_steps=10, eta_min=0.1)
    assert cos(10) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.55)
    assert cos(110) == pytest.approx(0.1)
    assert cos(500) == pytest.approx(0.1)
    assert all(cos(t) >= cos(t + 1) for t in range(10, 120))
    assert linear_scaled_eta0(0.1, 256, 1024) == pytest.approx(0.4)
    with pytest.raises(ValueError):
        Schedule("step", 0.1)
    with pytest.raises(ValueError):
        Schedule("constant", 0.0)
    assert math.isclose(Schedule("cosine", 1.0, total_steps=1)(0), 1.0)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_global_plan_partitions_each_global_batch(size):
    n, B, seed = 103, 10, 5
    train = np.flatnonzero(~validation_mask(n, 0.2, seed))
    serial = list(global_epoch_plan(train, 0, n, B, seed, epoch=3))
    plans = []
    for r in range(size):
        start, stop = shard_range(n, r, size)
        plans.append((start, list(global_epoch_plan(train, start, stop, B, seed, epoch=3))))
    assert len(serial) == -(-len(train) // B)
    for j, (rows, gsize) in enumerate(serial):
        union = np.concatenate([p[j][0] + start for start, p in plans])
        assert sorted(union.tolist()) == sorted(rows.tolist())
        assert all(p[j][1] == gsize for _, p in plans)
    # every training row exactly once per epoch
    allrows = np.concatenate([r for r, _ in serial])
    assert sorted(allrows.tolist()) == train.tolist()
    # a different epoch is a different permutation
    other = np.concatenate([r for r, _ in global_epoch_plan(train, 0, n, B, seed, epoch=4)])
    assert not np.array_equal(allrows, other)


def test_validation_mask_is_rank_independent():
    n = 50
    full = validation_mask(n, 0.1, 3)
    assert full.sum() == 5
    parts = [validation_mask(n, 0.1, 3, *shard_range(n, r, 3)) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    assert validation_mask(3, 0.01, 0).sum() == 1  # at least one row held out


def test_local_plan_covers_own_rows_and_pads_with_empty_steps():
    rows = np.arange(10)
    steps = list(local_epoch_plan(rows, 4, 5, seed=0, epoch=0, rank=1))
    assert [len(s) for s in steps] == [4, 4, 2, 0, 0]
    assert sorted(np.concatenate(steps).tolist()) == list(range(10))
    other_rank = np.concatenate(list(local_epoch_plan(rows, 4, 5, seed=0, epoch=0, rank=2)))
    assert not np.array_equal(np.concatenate(steps), other_rank)


def test_shard_range_balanced():
    ranges = [shard_range(10, r, 4) for r in range(4)]
    assert ranges == [(0, 2), (2, 5), (5, 7), (7, 10)]


@pytest.mark.parametrize("n", [1, 2, 5, 63, 64, 65, 1000])
@pytest.mark.parametrize("block", [1, 2, 7, 64])
def test_block_permutation_is_a_permutation_of_runs(n, block):
    for seed in range(4):
        perm = block_permutation(n, block, np.random.default_rng(seed))
        assert sorted(perm.tolist()) == list(range(n))
        if block > 1 and n > 2 * block:
            # consecutive runs: most neighbours differ by exactly one
            assert np.mean(np.diff(perm) == 1) >= 1 - 2.0 / block
    if n >= 4 * block and block > 1:
        a = block_permutation(n, block, np.random.default_rng(0))
        assert not np.array_equal(a, block_permutation(n, block, np.random.default_rng(1)))


def test_local_block_rows():
    assert local_block_rows(4096) == 512  # 8 blocks per local batch
    assert local_block_rows(128) == 16
    assert local_block_rows(15) == 1  # tiny batches: plain row permutation
    assert local_block_rows(4) == 1


def test_contiguous_runs():
    rows = np.array([7, 8, 9, 3, 4, 20])
    assert contiguous_runs(rows) == [(7, 10), (3, 5), (20, 21)]
    X = np.arange(60.0).reshape(30, 2)
    np.testing.assert_array_equal(np.vstack([X[a:b] for a, b in contiguous_runs(rows)]), X[rows])
    assert contiguous_runs(np.arange(0, 40, 2), max_runs=5) is None  # scattered rows: gather instead
    assert contiguous_runs(np.array([], dtype=int)) is None


@pytest.mark.parametrize("loss,n_classes", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_batch_kernel_runs_equal_gathered_rows(loss, n_classes, dtype, weighted):
    rng = np.random.default_rng(5)
    n, d = 90, 6
    k = L.n_outputs(loss, n_classes)
    y = rng.integers(0, n_classes, size=n) if n_classes else rng.normal(scale=2.0, size=n)
    X = rng.normal(size=(n, d)).astype(dtype)
    T = L.encode_target(loss, y, n_classes, dtype=dtype)
    w = rng.uniform(0, 2, size=(n, 1)).astype(dtype) if weighted else None
    W = rng.normal(scale=1.0, size=(d, k)).astype(dtype)
    b = rng.normal(scale=0.3, size=k).astype(dtype)
    rows = np.concatenate([np.arange(40, 52), np.arange(3, 10), np.arange(70, 90)])
    runs = contiguous_runs(rows)
    assert len(runs) == 3
    kern = L.BatchKernel(loss, 64, d, k, dtype, epsilon=0.7)
    g1, b1, g2, b2 = np.empty((d, k)), np.empty(k), np.empty((d, k)), np.empty(k)
    v1 = kern(X[rows], T[rows], W, b, g1, b1, None if w is None else w[rows])
    v2 = kern.runs(X, runs, T[rows], W, b, g2, b2, None if w is None else w[rows])
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert v2 == pytest.approx(v1, rel=rtol)
    np.testing.assert_allclose(g2, g1, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(b2, b1, rtol=rtol, atol=rtol)


def test_local_block_plan_covers_held_out_gaps():
    rows = np.flatnonzero(np.random.default_rng(0).random(500) > 0.1)  # training rows with gaps
    steps = list(local_epoch_plan(rows, 64, 8, seed=0, epoch=0, rank=0, block=8))
    assert [len(s) for s in steps[:-1]] == [64] * 7
    assert sorted(np.concatenate(steps).tolist()) == rows.tolist()


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 65, 1000])
@pytest.mark.parametrize("local_batch", [2, 5, 16, 64, 300])
@pytest.mark.parametrize("block", [2, 3, 8, 64])
def test_local_epoch_runs_are_the_row_plan_as_runs(n, local_batch, block):
    steps = -(-n // local_batch) + 1  # one empty step at the end
    for seed in range(3):
        rows = list(local_epoch_plan(np.arange(n), local_batch, steps, seed, 2, 1, block))
        runs = list(local_epoch_runs(n, local_batch, steps, seed, 2, 1, block))
        assert len(runs) == steps
        for r, rr in zip(rows, runs, strict=True):
            assert rr == (contiguous_runs(r, max_runs=10**9) or [])
            assert all(b1 != a2 for (_, b1), (a2, _) in zip(rr, rr[1:]))  # adjacent runs merged

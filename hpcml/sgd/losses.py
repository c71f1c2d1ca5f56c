"""Pure NumPy losses, their gradients with respect to the raw scores, and penalties.

Every loss works on a mini-batch of raw scores ``Z = X @ W + b`` of shape
``(n_rows, k)`` and an encoded target ``T`` of the same number of rows:

========================  ==========================  ==============================
loss                      target encoding             k
========================  ==========================  ==============================
``log_loss`` (binary)     ``T`` in {-1, +1}, (n, 1)   1
``log_loss`` (multi)      class index, (n,) int       n_classes (softmax)
``hinge``                 ``T`` in {-1, +1}, (n, k)   1 (binary) or n_classes (OvR)
``squared_error``         real, (n, 1)                1
``huber``                 real, (n, 1)                1
========================  ==========================  ==============================

:func:`loss_and_dz` returns the **sum** of the per-row losses and ``dZ`` (the
derivative of that sum with respect to ``Z``); the gradient with respect to
``W`` is ``X.T @ dZ`` and with respect to ``b`` is ``dZ.sum(axis=0)``.  Sums, not
means, are what ranks exchange: dividing the allreduced sum by the global batch
size makes the step independent of how rows are spread over ranks.

Penalties follow scikit-learn: ``alpha * R(w)`` with ``R = ||w||^2 / 2`` (l2),
``||w||_1`` (l1), ``l1_ratio ||w||_1 + (1 - l1_ratio) ||w||^2 / 2``
(elasticnet).  The smooth l2 part enters the gradient; the l1 part is applied by
the proximal operator (soft thresholding) so weights become exactly zero.
"""

from __future__ import annotations

import numpy as np

CLASSIFICATION_LOSSES = ("log_loss", "hinge")
REGRESSION_LOSSES = ("squared_error", "huber")
PENALTIES = ("l2", "l1", "elasticnet", None)


def n_outputs(loss: str, n_classes: int) -> int:
    """Number of score columns ``k`` for ``loss`` and ``n_classes`` (1 for regression)."""
    if loss in REGRESSION_LOSSES:
        return 1
    return 1 if n_classes <= 2 else n_classes


def encode_target(loss: str, y_index: np.ndarray, n_classes: int, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Encode class indices (classification) or values (regression) for :func:`loss_and_dz`.

    Parameters
    ----------
    loss : str
        Loss name.
    y_index : ndarray of shape (n,)
        Class indices into ``classes_`` (classification) or target values.
    n_classes : int
        Number of classes (ignored for regression).
    dtype : dtype
        Floating type of the encoded target.

    Returns
    -------
    ndarray
        See the module table.
    """
    if loss in REGRESSION_LOSSES:
        return np.asarray(y_index, dtype=dtype).reshape(-1, 1)
    k = n_outputs(loss, n_classes)
    if k == 1:
        return np.where(np.asarray(y_index) == 1, 1.0, -1.0).astype(dtype).reshape(-1, 1)
    if loss == "log_loss":
        return np.asarray(y_index, dtype=np.intp)
    t = np.full((len(y_index), k), -1.0, dtype=dtype)
    t[np.arange(len(y_index)), np.asarray(y_index, dtype=np.intp)] = 1.0
    return t


def _log1pexp(x: np.ndarray) -> np.ndarray:
    """``log(1 + exp(x))`` without overflow."""
    return np.logaddexp(0.0, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function (SciPy's ``expit``: stable, one pass)."""
    from scipy.special import expit

    return expit(x)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _weighted_sum(rows: np.ndarray, sample_weight: np.ndarray | None) -> float:
    """Sum of per-row values (summed over columns first), each row weighted."""
    if rows.ndim == 2:
        rows = rows.sum(axis=1)
    if sample_weight is None:
        return float(rows.sum())
    return float(np.dot(rows, sample_weight.astype(rows.dtype, copy=False)))


def loss_and_dz(
    loss: str, Z: np.ndarray, T: np.ndarray, epsilon: float = 0.1, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Sum of per-row losses and its derivative with respect to the raw scores.

    Parameters
    ----------
    loss : {"log_loss", "hinge", "squared_error", "huber"}
        Loss name.
    Z : ndarray of shape (n, k)
        Raw scores.
    T : ndarray
        Encoded target (:func:`encode_target`).
    epsilon : float
        Huber threshold.
    sample_weight : ndarray of shape (n,), optional
        Per-row weights: the sum becomes ``sum_i w_i loss_i`` (and ``dZ`` row
        ``i`` is scaled by ``w_i``).

    Returns
    -------
    loss_sum : float
        (Weighted) sum over rows (and columns for one-vs-rest hinge).
    dZ : ndarray of shape (n, k)
        Derivative of ``loss_sum`` with respect to ``Z``.
    """
    if Z.shape[0] == 0:
        return 0.0, np.zeros_like(Z)
    w = sample_weight
    if loss == "log_loss":
        if Z.shape[1] == 1:
            # one exp for both: e = exp(-|m|); loss = max(-m, 0) + log1p(e); sigmoid(-m) from e
            m = T * Z
            e = np.exp(-np.abs(m))
            value = _weighted_sum(np.maximum(-m, 0.0) + np.log1p(e), w)
            inv = 1.0 / (1.0 + e)
            dz = np.where(m >= 0, e * inv, inv)  # sigmoid(-m)
            dz *= -T
        else:
            zmax = Z.max(axis=1, keepdims=True)
            shifted = Z - zmax
            lse = np.log(np.exp(shifted).sum(axis=1))
            rows = np.arange(Z.shape[0])
            value = _weighted_sum(lse - shifted[rows, T], w)
            dz = softmax(Z.copy())
            dz[rows, T] -= 1.0
    elif loss == "hinge":
        margin = 1.0 - T * Z
        active = margin > 0
        value = _weighted_sum(np.where(active, margin, 0.0), w)
        dz = np.where(active, -T, 0.0).astype(Z.dtype, copy=False)
    elif loss == "squared_error":
        r = Z - T
        value = 0.5 * _weighted_sum(r * r, w)
        dz = r
    elif loss == "huber":
        r = Z - T
        a = np.abs(r)
        value = _weighted_sum(np.where(a <= epsilon, 0.5 * r * r, epsilon * a - 0.5 * epsilon * epsilon), w)
        dz = np.clip(r, -epsilon, epsilon)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    if w is not None:
        dz = dz * w.astype(dz.dtype, copy=False)[:, None]
    return value, dz


def penalty_parts(penalty: str | None, alpha: float, l1_ratio: float) -> tuple[float, float]:
    """Split a penalty into its l2 strength (gradient) and l1 strength (proximal step).

    Returns
    -------
    (l2, l1) : tuple of float
        The objective carries ``l2 * ||w||^2 / 2 + l1 * ||w||_1``.
    """
    if penalty is None or penalty == "none":
        return 0.0, 0.0
    if penalty == "l2":
        return alpha, 0.0
    if penalty == "l1":
        return 0.0, alpha
    if penalty == "elasticnet":
        return alpha * (1.0 - l1_ratio), alpha * l1_ratio
    raise ValueError(f"unknown penalty {penalty!r}")


class CumulativeL1:
    """The L1 step of SGD with the cumulative penalty (Tsuruoka et al., 2009), as scikit-learn's SGD.

    Soft thresholding at every step lets the gradient noise
    of the next step push a weight off zero again.  Instead, ``u`` accumulates
    the penalty every weight could have received so far and ``q`` what each
    actually received; each step clips a weight towards zero by the difference
    and never across it, so weights the data do not support stay exactly 0.

    Parameters
    ----------
    shape : tuple of int
        Shape of the weights.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.u = 0.0
        self.q = np.zeros(shape)
        self._old = np.empty(shape)
        self._down = np.empty(shape)
        self._up = np.empty(shape)

    def __call__(self, W: np.ndarray, threshold: float) -> None:
        """Apply this step's penalty ``threshold`` (learning rate x L1 strength) to ``W`` in place."""
        if threshold <= 0:
            return
        self.u += threshold
        old, down, up, q = self._old, self._down, self._up, self.q
        old[...] = W
        np.subtract(W, self.u, out=down)
        down -= q
        np.maximum(down, 0.0, out=down)  # positive weights: max(0, w - (u + q))
        np.add(W, self.u, out=up)
        up -= q
        np.minimum(up, 0.0, out=up)  # negative weights: min(0, w + (u - q))
        np.copyto(W, down, where=old > 0)
        np.copyto(W, up, where=old < 0)
        np.subtract(W, old, out=old)
        q += old


class BatchKernel:
    """Loss sum and gradient sums of one mini-batch into preallocated buffers (the training hot path).

    The loss sum and ``X.T @ dz``, ``dz.sum(axis=0)`` of one batch, but every intermediate lives in
    a buffer allocated once per fit and the two most common losses have fused
    kernels: binary ``log_loss`` (one ``exp``, one ``log``, no ``log1p``/
    ``where``) and ``squared_error``.  Other losses use :func:`loss_and_dz`.
    Computation is in the data's floating type (float32 data: float32 BLAS);
    the gradient sums are written into float64 buffers (the exchange buffer).

    Parameters
    ----------
    loss : str
        Loss name.
    n_max : int
        Largest batch (rows) that will be passed.
    n_features, n_outputs : int
        Shape ``(d, k)`` of the weights.
    dtype : dtype
        Floating type of the data.
    epsilon : float
        Huber threshold.
    """

    def __init__(
        self, loss: str, n_max: int, n_features: int, n_outputs: int, dtype: np.dtype | type, epsilon: float = 0.1
    ) -> None:
        self.loss = loss
        self.epsilon = float(epsilon)
        self.dtype = np.dtype(dtype)
        self.k = n_outputs
        n_max = max(1, int(n_max))
        self.binary_log = loss == "log_loss" and n_outputs == 1
        self.z = np.empty((n_max, n_outputs), dtype=self.dtype)
        if self.binary_log:
            self.e = np.empty_like(self.z)
            self.p = np.empty_like(self.z)
        self.gw = np.empty((n_features, n_outputs), dtype=self.dtype)
        self.gpart = np.empty_like(self.gw)  # one run's X^T dZ (in-place runs)
        self.wz = np.empty_like(self.z)  # weighted dZ / scratch (sample weights only)
        self.half = self.dtype.type(0.5)
        self.zero = self.dtype.type(0.0)
        self.one = self.dtype.type(1.0)

    def __call__(
        self,
        Xb: np.ndarray,
        Tb: np.ndarray,
        Wc: np.ndarray,
        bc: np.ndarray,
        gW: np.ndarray,
        gb: np.ndarray,
        wb: np.ndarray | None = None,
    ) -> float:
        """Write ``X_b^T dZ`` into ``gW`` and ``sum(dZ)`` into ``gb``; return the loss sum.

        ``Wc``/``bc`` are the weights in the data's type; ``gW``/``gb`` float64 views;
        ``wb`` optional per-row sample weights (shape ``(n, 1)``, the data's type).
        """
        n = Xb.shape[0]
        Z = self.z[:n]
        np.matmul(Xb, Wc, out=Z)
        value, dz = self._loss(Z, bc, Tb, n, wb)
        if gW.dtype == self.dtype:
            np.matmul(Xb.T, dz, out=gW)
        else:
            np.matmul(Xb.T, dz, out=self.gw)
            gW[...] = self.gw
        gb[...] = dz.sum(axis=0)
        return value

    def runs(
        self,
        X: np.ndarray,
        runs: list[tuple[int, int]],
        Tb: np.ndarray,
        Wc: np.ndarray,
        bc: np.ndarray,
        gW: np.ndarray,
        gb: np.ndarray,
        wb: np.ndarray | None = None,
    ) -> float:
        """Same as calling the kernel on ``X[a0:b0], X[a1:b1], ...`` stacked, without copying the rows.

        The batch is a few contiguous runs of ``X`` (``sampling="local"`` shuffles
        blocks of rows): each run is multiplied where it lies, so the rows
        stream from memory once per pass instead of being gathered into a
        buffer first (a read, a write and two more reads of every row).
        ``Tb``/``wb`` are the runs' targets/weights, stacked in run order.
        """
        n = Tb.shape[0]
        Z = self.z[:n]
        off = 0
        for a, b in runs:
            np.matmul(X[a:b], Wc, out=Z[off : off + b - a])
            off += b - a
        value, dz = self._loss(Z, bc, Tb, n, wb)
        acc, part = self.gw, self.gpart
        off = 0
        for i, (a, b) in enumerate(runs):
            if i == 0:
                np.matmul(X[a:b].T, dz[off : off + b - a], out=acc)
            else:
                np.matmul(X[a:b].T, dz[off : off + b - a], out=part)
                acc += part
            off += b - a
        gW[...] = acc
        gb[...] = dz.sum(axis=0)
        return value

    def _loss(
        self, Z: np.ndarray, bc: np.ndarray, Tb: np.ndarray, n: int, wb: np.ndarray | None
    ) -> tuple[float, np.ndarray]:
        """Add the intercepts to the raw scores ``Z`` (in place) and return the loss sum and ``dZ``."""
        Z += bc
        if self.binary_log:
            return self._binary_log_loss(Z, Tb, n, wb)
        if self.loss == "squared_error":
            Z -= Tb
            flat = Z.ravel()
            if wb is None:
                return 0.5 * float(np.dot(flat, flat)), Z
            dz = np.multiply(Z, wb, out=self.wz[:n])
            return 0.5 * float(np.dot(dz.ravel(), flat)), dz
        value, dz = loss_and_dz(self.loss, Z, Tb, self.epsilon, None if wb is None else wb[:, 0])
        return value, dz.astype(self.dtype, copy=False)

    def _binary_log_loss(self, Z: np.ndarray, T: np.ndarray, n: int, w: np.ndarray | None) -> tuple[float, np.ndarray]:
        """``sum softplus(-m)`` and ``dZ = -T sigmoid(-m)`` for margins ``m = T Z``; ``Z`` is overwritten."""
        e, p = self.e[:n], self.p[:n]
        m = np.multiply(Z, T, out=Z)
        np.abs(m, out=e)
        np.negative(e, out=e)
        np.exp(e, out=e)  # e = exp(-|m|) in (0, 1]
        np.add(e, self.one, out=p)  # 1 + e in (1, 2]: log is accurate enough for a loss *sum*
        np.log(p, out=p)
        if w is None:
            value = float(p.sum())
            np.minimum(m, self.zero, out=p)  # softplus(-m) = max(-m, 0) + log(1 + exp(-|m|))
            value -= float(p.sum())
        else:
            p -= np.minimum(m, self.zero, out=self.wz[:n])
            value = float(np.dot(p.ravel(), w.ravel()))
        np.add(e, self.one, out=p)
        np.divide(e, p, out=e)  # s = sigmoid(-|m|)
        np.subtract(self.half, e, out=e)
        np.copysign(e, m, out=e)
        e -= self.half  # sign(m) (1/2 - s) - 1/2 = -sigmoid(-m)
        e *= T
        if w is not None:
            e *= w
        return value, e

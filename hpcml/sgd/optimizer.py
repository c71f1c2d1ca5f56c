"""The parts of an SGD fit that involve no communication: update rules, stop rule, history.

Pure NumPy and Python (no MPI): every rank holds the same summed gradient after
the step's ``Allreduce`` and applies the same :class:`Optimizer` step, so the
rules are unit-tested here on plain arrays (tests/unit/test_sgd_optimizer.py).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from hpcml.sgd.losses import CumulativeL1

#: A training loss this many times above the best one so far (plus 1): warn that the fit diverges.
EXPLODED = 1e4


class Optimizer:
    """Mini-batch SGD update rules on weights ``W`` (d, k) and intercepts ``b`` (k,), in place.

    One :meth:`step` is, in this order: the mean gradient (sum / count), plus the
    L2 term ``l2 * W``; heavy-ball momentum ``v = mu v + g`` (Nesterov: the step
    uses ``g + mu v``, else ``v``); ``W -= lr g`` (``b`` too when
    ``fit_intercept``); the L1 part by the cumulative penalty
    (:class:`~hpcml.sgd.losses.CumulativeL1`, Tsuruoka et al. 2009).

    Parameters
    ----------
    n_features, n_outputs : int
        Shape of the weights.
    dtype : numpy dtype
        The data's floating type: :attr:`Wc`/:attr:`bc` are the weights in it
        (the same arrays as ``W``/``b`` for float64 data), kept in sync by
        :meth:`step` for the gradient kernel.
    momentum : float, default=0.0
        Heavy-ball momentum in [0, 1).
    nesterov : bool, default=False
        Nesterov momentum.
    l2, l1 : float, default=0.0
        Penalty strengths (:func:`hpcml.sgd.losses.penalty_parts`).
    fit_intercept : bool, default=True
        Update the intercepts (never penalised).

    Attributes
    ----------
    W, b : ndarray
        The float64 weights and intercepts, zero at the start.
    t : int
        Steps taken.
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        dtype: Any = np.float64,
        *,
        momentum: float = 0.0,
        nesterov: bool = False,
        l2: float = 0.0,
        l1: float = 0.0,
        fit_intercept: bool = True,
    ) -> None:
        self.W = np.zeros((n_features, n_outputs), dtype=np.float64)
        self.b = np.zeros(n_outputs, dtype=np.float64)
        self.same = np.dtype(dtype) == np.float64
        self.Wc, self.bc = (self.W, self.b) if self.same else (self.W.astype(dtype), self.b.astype(dtype))
        self.mu = float(momentum)
        self.nesterov = bool(nesterov)
        self.l2, self.l1 = l2, l1
        self.fit_intercept = bool(fit_intercept)
        self.vW = np.zeros_like(self.W) if self.mu else None
        self.vb = np.zeros_like(self.b) if self.mu else None
        self._tmp = np.empty_like(self.W)
        self._l1 = CumulativeL1(self.W.shape) if l1 else None
        self.t = 0

    def step(self, gW: np.ndarray, gb: np.ndarray, count: float, lr: float) -> None:
        """Apply one step from the summed gradients of ``count`` rows; ``gW`` and ``gb`` are overwritten.

        Parameters
        ----------
        gW, gb : ndarray
            Sums of the per-row gradients of weights and intercepts (the
            exchange buffers: scaled in place).
        count : float
            Rows (or total sample weight) the sums are over; > 0.
        lr : float
            This step's learning rate.
        """
        W, b, mu, tmp = self.W, self.b, self.mu, self._tmp
        gW *= 1.0 / count
        gb *= 1.0 / count
        if self.l2:
            gW += np.multiply(W, self.l2, out=tmp)
        if mu:
            vW, vb = self.vW, self.vb
            vW *= mu
            vW += gW
            vb *= mu
            vb += gb
            if self.nesterov:
                gW += mu * vW
                gb += mu * vb
            else:
                gW, gb = vW, vb
        W -= np.multiply(gW, lr, out=tmp)
        if self.fit_intercept:
            b -= lr * gb
        if self._l1 is not None:
            self._l1(W, lr * self.l1)
        if not self.same:
            self.Wc[...] = W
            self.bc[...] = b
        self.t += 1

    def finite(self) -> bool:
        """Whether every weight and intercept is finite."""
        return bool(np.isfinite(self.W).all() and np.isfinite(self.b).all())


class StopRule:
    """scikit-learn's ``tol`` rule: stop after ``patience`` epochs without an improvement of ``tol``.

    Parameters
    ----------
    tol : float or None
        Needed improvement of the monitored loss; ``None`` never stops.
    patience : int
        ``n_iter_no_change``.
    """

    def __init__(self, tol: float | None, patience: int) -> None:
        self.tol = None if tol is None else float(tol)
        self.patience = int(patience)
        self.best = np.inf
        self.no_improve = 0

    def __call__(self, score: float) -> bool:
        """Record this epoch's monitored loss; whether the fit should stop."""
        if self.tol is None:
            return False
        if score > self.best - self.tol:
            self.no_improve += 1
        else:
            self.no_improve = 0
        self.best = min(self.best, score)
        return self.no_improve >= self.patience


class DivergenceWatch:
    """Warns once when the training loss explodes (``EXPLODED`` x the best so far, plus 1)."""

    def __init__(self) -> None:
        self.best = np.inf
        self.warned = False

    def __call__(self, train_loss: float, epoch: int, stacklevel: int = 5) -> None:
        """Record the mean training loss of ``epoch`` (1-based); warn if it exploded."""
        if not self.warned and train_loss > EXPLODED * (self.best + 1.0):
            self.warned = True
            warnings.warn(
                f"the fit is diverging: mean training loss {train_loss:.3g} at epoch {epoch}, "
                f"best {self.best:.3g}; lower eta0, or scale the input data (StandardScaler or MinMaxScaler)",
                ConvergenceWarning,
                stacklevel=stacklevel,
            )
        self.best = min(self.best, train_loss)


class History:
    """Per-epoch records and curves of a fit (what becomes ``history_``, ``loss_curve_``, ...)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.loss_curve: list[float] = []
        self.val_loss_curve: list[float] = []
        self.val_scores: list[float] = []
        self.compute_total = 0.0
        self.comm_total = 0.0

    def add(
        self,
        epoch: int,
        train_loss: float,
        lr: float,
        samples: int,
        validation: tuple[float, float] | None,
        seconds: tuple[float, float, float],
    ) -> dict[str, Any]:
        """Record epoch ``epoch`` (1-based); ``seconds`` is (compute, comm, wall).  Returns the record."""
        self.loss_curve.append(train_loss)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": lr, "samples": samples}
        if validation is not None:
            self.val_loss_curve.append(validation[0])
            self.val_scores.append(validation[1])
            record["val_loss"], record["val_score"] = validation
        compute, comm, wall = seconds
        record["compute_s"] = compute
        record["comm_s"] = comm
        record["wall_s"] = wall
        self.compute_total += compute
        self.comm_total += comm
        self.records.append(record)
        return record

    @staticmethod
    def line(record: dict[str, Any]) -> str:
        """The verbose line of one epoch."""
        extra = f", val_loss {record['val_loss']:.6f}" if "val_loss" in record else ""
        return (
            f"epoch {record['epoch']}: loss {record['train_loss']:.6f}{extra}, lr {record['lr']:.4g}, "
            f"{record['wall_s']:.3f} s"
        )

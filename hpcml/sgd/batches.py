"""Rows of every SGD step (:class:`BatchPlan`) and a rank's share of a step's gradient (:class:`LocalGradient`).

The plan's index arithmetic lives in :mod:`hpcml.sgd.sampling`; this module
picks among its three paths once per fit (global permutation; local
block-shuffled rows; local runs of contiguous rows multiplied in place) and
owns the preallocated batch buffers of the gradient step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from hpcml.sgd import losses as L
from hpcml.sgd import sampling
from hpcml.sgd.allreduce import GradientExchange


class BatchPlan:
    """The rows of this rank in every step of every epoch.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        The training ranks (``"local"`` sampling agrees on the steps per epoch:
        one ``allreduce``, collective).
    mode : {"global", "local"}
        The estimator's ``sampling``.
    train_global : ndarray
        Training rows of the whole data set (global indices).
    train_local : ndarray
        Training rows of this rank's shard (local indices).
    bounds : tuple of int
        ``(n_global, start, stop)``: this rank's shard is rows ``start:stop``.
    batch : int
        Global batch size.
    seed : int
        The fit's seed.
    X : ndarray
        This rank's rows (their layout decides whether runs of rows pay off).
    """

    def __init__(
        self,
        comm: Any,
        mode: str,
        train_global: np.ndarray,
        train_local: np.ndarray,
        bounds: tuple[int, int, int],
        batch: int,
        seed: int,
        X: np.ndarray,
    ) -> None:
        from mpi4py import MPI

        self.mode = mode
        self.rank = comm.Get_rank()
        self.train_global, self.train_local = train_global, train_local
        _, self.start, self.stop = bounds
        self.n_local = self.stop - self.start
        self.batch, self.seed = batch, seed
        n_train = train_global.shape[0]
        if mode == "global":
            self.local_batch = 0
            self.steps_per_epoch = -(-n_train // batch)
        else:
            self.local_batch = max(1, batch // comm.Get_size())
            steps = -(-train_local.shape[0] // self.local_batch)
            self.steps_per_epoch = int(comm.allreduce(steps, op=MPI.MAX))
        #: most rows of this rank in one step
        self.max_rows = batch if mode == "global" else self.local_batch
        # local mode: shuffle blocks of consecutive rows (contiguous copies, see sampling.py)
        self.block = sampling.local_block_rows(self.local_batch) if mode == "local" else 1
        # local mode: a batch is a few contiguous runs of X, multiplied in place (no gather)
        # (when the blocks are large enough for that to beat gathering their rows)
        self.in_place = bool(X.flags.c_contiguous and sampling.runs_pay_off(self.block, X.shape[1] * X.itemsize))
        # ... and with every row of the shard in training, the runs come from the block order
        # directly (no per-row permutation, no run detection per step)
        self.by_runs = self.in_place and train_local.shape[0] == self.n_local

    def epoch(self, epoch: int) -> Iterator[tuple[Any, int]]:
        """The steps of ``epoch``: ``(rows, global_count)`` each.

        ``rows`` are local row indices, or with :attr:`by_runs` a list of
        ``(a, b)`` runs; ``global_count`` is the step's row count over all ranks
        when the plan knows it (global sampling), else -1 (the ranks sum it).
        """
        if self.mode == "global":
            return sampling.global_epoch_plan(self.train_global, self.start, self.stop, self.batch, self.seed, epoch)
        args = (self.local_batch, self.steps_per_epoch, self.seed, epoch, self.rank, self.block)
        if self.by_runs:
            return ((r, -1) for r in sampling.local_epoch_runs(self.n_local, *args))
        return ((r, -1) for r in sampling.local_epoch_plan(self.train_local, *args))


class LocalGradient:
    """One rank's share of a step: gradient sums, loss sum and row count, written into the exchange buffer.

    Preallocated batch buffers and loss workspace: a fresh multi-100-KiB array
    per step would cost page faults, and small temporaries cost Python time.

    Parameters
    ----------
    loss : str
        The loss.
    X, T : ndarray
        This rank's rows and encoded targets.
    sw : ndarray or None
        Their sample weights.
    plan : BatchPlan
        The sampling plan (batch size, whether batches come as runs).
    n_outputs : int
        Columns of the weights.
    epsilon : float
        The epsilon of the Huber / epsilon-insensitive losses.
    """

    def __init__(
        self,
        loss: str,
        X: np.ndarray,
        T: np.ndarray,
        sw: np.ndarray | None,
        plan: BatchPlan,
        n_outputs: int,
        epsilon: float,
    ) -> None:
        n_max, d = plan.max_rows, X.shape[1]
        self.X, self.T = X, T
        self.in_place, self.by_runs = plan.in_place, plan.by_runs
        self.xbuf = np.empty((n_max, d), dtype=X.dtype)
        self.tbuf = np.empty((n_max, *T.shape[1:]), dtype=T.dtype)
        # weights as an (n, 1) column of the data's type: they scale dZ rows in the kernel
        self.W1 = None if sw is None else sw.astype(X.dtype).reshape(-1, 1)
        self.wbuf = None if self.W1 is None else np.empty((n_max, 1), dtype=X.dtype)
        self.kernel = L.BatchKernel(loss, n_max, d, n_outputs, X.dtype, epsilon)

    def __call__(self, rows: Any, Wc: np.ndarray, bc: np.ndarray, ex: GradientExchange) -> None:
        """Fill ``ex``'s buffer for the batch ``rows`` at weights ``Wc``, ``bc`` (zeros if this rank has none)."""
        X, T, W1, tbuf, wbuf, kernel = self.X, self.T, self.W1, self.tbuf, self.wbuf, self.kernel
        if self.by_runs:  # rows: the runs of the batch
            nb = stack_runs(rows, T, tbuf, W1, wbuf)
            if nb:
                wb = None if W1 is None else wbuf[:nb]
                ex.extra[0] = kernel.runs(X, rows, tbuf[:nb], Wc, bc, ex.gW, ex.gb, wb)
        elif nb := rows.shape[0]:
            Tb = np.take(T, rows, axis=0, out=tbuf[:nb], mode="clip")  # "raise" would copy via a temporary
            wb = None if W1 is None else np.take(W1, rows, axis=0, out=wbuf[:nb], mode="clip")
            runs = sampling.contiguous_runs(rows) if self.in_place else None
            if runs is not None:
                ex.extra[0] = kernel.runs(X, runs, Tb, Wc, bc, ex.gW, ex.gb, wb)
            else:
                Xb = np.take(X, rows, axis=0, out=self.xbuf[:nb], mode="clip")
                ex.extra[0] = kernel(Xb, Tb, Wc, bc, ex.gW, ex.gb, wb)
        if nb:
            ex.extra[1] = nb
        else:
            ex.buf.fill(0.0)


def stack_runs(
    runs: list[tuple[int, int]], T: np.ndarray, tbuf: np.ndarray, W1: np.ndarray | None, wbuf: np.ndarray | None
) -> int:
    """Copy the targets (and weights) of ``runs`` into the front of ``tbuf`` (``wbuf``); return the row count."""
    off = 0
    for a, b in runs:
        tbuf[off : off + b - a] = T[a:b]
        if W1 is not None:
            wbuf[off : off + b - a] = W1[a:b]
        off += b - a
    return off

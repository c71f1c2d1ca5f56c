"""Gradient exchange: one preallocated, contiguous float64 buffer and one in-place Allreduce.

The buffer holds, back to back, the weight gradient (``d * k`` values), the
intercept gradient (``k``) and ``n_extra`` scalar terms (loss sum, row count).
Views into it are handed out once; the hot path writes into the views, calls
:meth:`GradientExchange.allreduce` (``comm.Allreduce(MPI.IN_PLACE, buf,
op=MPI.SUM)``: buffer based, no pickling, no copies) and reads the views back.
"""

from __future__ import annotations

from time import perf_counter as _perf_counter
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


class GradientExchange:
    """Sum gradients over ranks in one buffer.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Communicator of the ranks that train together.
    n_features, n_outputs : int
        Shape ``(d, k)`` of the weight matrix.
    n_extra : int
        Extra scalar slots after the gradients.

    Attributes
    ----------
    buf : ndarray of float64
        The whole buffer.
    gW : ndarray of shape (d, k)
        View of the weight gradient.
    gb : ndarray of shape (k,)
        View of the intercept gradient.
    extra : ndarray of shape (n_extra,)
        View of the scalar terms.
    comm_time : float
        Seconds spent in ``Allreduce`` so far.
    calls : int
        Number of exchanges so far.
    """

    def __init__(self, comm: MPI.Intracomm, n_features: int, n_outputs: int, n_extra: int = 2) -> None:
        from mpi4py import MPI

        self._in_place = MPI.IN_PLACE
        self._sum = MPI.SUM
        self.comm = comm
        self._Allreduce = comm.Allreduce  # bound once: the hot path does no attribute lookups on comm
        self.size = comm.Get_size()
        nw = n_features * n_outputs
        self.buf = np.zeros(nw + n_outputs + n_extra, dtype=np.float64)
        self.gW = self.buf[:nw].reshape(n_features, n_outputs)
        self.gb = self.buf[nw : nw + n_outputs]
        self.extra = self.buf[nw + n_outputs :]
        self.comm_time = 0.0
        self.calls = 0

    def allreduce(self) -> None:
        """Sum :attr:`buf` over all ranks in place (a no-op on one rank).

        Exactly one ``Allreduce(MPI.IN_PLACE, buf, MPI.SUM)`` on the preallocated
        buffer, bracketed by two ``perf_counter`` reads; the time includes waiting
        for the slowest rank to arrive (load imbalance), which only a separate
        barrier can tell apart (``benchmarks/bench_sgd.py`` does that).
        """
        t0 = _perf_counter()
        if self.size > 1:
            self._Allreduce(self._in_place, self.buf, self._sum)
        self.comm_time += _perf_counter() - t0
        self.calls += 1

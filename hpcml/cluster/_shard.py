"""Distributed primitives of :mod:`hpcml.cluster` over one contiguous shard of rows per rank.

Every function is collective over ``comm`` unless it says otherwise.  Rows are
numbered globally: the rank's rows are ``[start, start + len(X))`` and the
shards of ranks ``0..size-1`` follow each other in order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Index meaning "no row found here" in a MIN reduction of global row indices.
NONE = np.iinfo(np.int64).max


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def allsum(comm: Any, buf: np.ndarray) -> np.ndarray:
    """Sum a float64/int64 buffer over ranks in place (one ``Allreduce``) and return it."""
    if comm.Get_size() > 1:
        MPI = _mpi()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return buf


def allmin(comm: Any, buf: np.ndarray) -> np.ndarray:
    """Element-wise minimum over ranks in place (one ``Allreduce``) and return it."""
    if comm.Get_size() > 1:
        MPI = _mpi()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MIN)
    return buf


def exclusive_offset(comm: Any, value: float) -> tuple[float, float]:
    """``(sum of value over lower ranks, sum over all ranks)`` in float64: one ``Allgather``."""
    parts = np.zeros(comm.Get_size(), dtype=np.float64)
    if comm.Get_size() > 1:
        comm.Allgather(np.array([value], dtype=np.float64), parts)
    else:
        parts[0] = value
    rank = comm.Get_rank()
    return float(parts[:rank].sum()), float(parts.sum())


def search_rows(comm: Any, cum: np.ndarray, targets: np.ndarray, start: int, n: int, side: str) -> np.ndarray:
    """Global ``searchsorted`` of ``targets`` in the rank-concatenated cumulative sums ``cum``.

    ``cum`` is this rank's cumulative sum of its rows' masses, starting from 0;
    the global cumulative sum is the concatenation of every rank's ``cum``
    shifted by the mass of the lower ranks.  Returns the global row index for
    each target (clipped to ``n - 1``, as scikit-learn clips), the same on every
    rank.  Two collectives (the offsets, then a MIN of the candidate rows).

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
    cum : ndarray of float64
        Local cumulative sums.
    targets : ndarray of float64
        Values to place.
    start : int
        Global index of this rank's first row.
    n : int
        Global number of rows.
    side : {"left", "right"}
        As :func:`numpy.searchsorted`.
    """
    local_total = float(cum[-1]) if cum.size else 0.0
    offset, _ = exclusive_offset(comm, local_total)
    found = np.full(targets.shape[0], NONE, dtype=np.int64)
    if cum.size:
        idx = np.searchsorted(cum, targets - offset, side=side)
        ok = idx < cum.size
        found[ok] = idx[ok] + start
    allmin(comm, found)
    found[found == NONE] = n - 1
    return np.minimum(found, n - 1)


def fetch_rows(comm: Any, X: np.ndarray, rows: np.ndarray, start: int) -> np.ndarray:
    """The global rows ``rows`` of the sharded matrix, on every rank (one ``Allreduce``).

    The owner of each row contributes it, every other rank zeros, so the sum is
    the row itself bit for bit.
    """
    out = np.zeros((rows.shape[0], X.shape[1]), dtype=np.float64)
    local = (rows >= start) & (rows < start + X.shape[0])
    mine = X[rows[local] - start]
    out[local] = mine.toarray() if hasattr(mine, "toarray") else mine
    allsum(comm, out)
    return out.astype(X.dtype, copy=False)

"""One materialised fold per node: the current split's rows of X in an MPI shared window.

scikit-learn's ``GridSearchCV(n_jobs=1)`` holds X plus one fold's rows
(``X[train]``, ``X[test]``); with per-rank fold copies, N ranks on a node hold X
(shared, :mod:`hpcml.data.shared`) plus N fold copies.  In ``"node"`` mode the
engine runs the search split by split (a phase per split, see
:func:`hpcml.cv.engine.evaluate`) and the ranks of a node build that split's rows
*together* -- each copies a slice -- into one ``MPI.Win.Allocate_shared``
buffer that all of them fit on, read-only.  Node memory is then X + one fold,
whatever the number of ranks, at the price of a synchronisation per split (the
tail of each phase) and of parallelism when a split has fewer units than there
are ranks.

:func:`choose` decides the mode (``"auto"``: node-shared folds when per-rank fold
copies would take at least :data:`AUTO_MEMORY_FRACTION` of a node's memory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml import env
from hpcml.comm import agree, describe, idle_barrier, node_comm

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

#: Modes of ``[run] fold_copies``.
MODES = ("auto", "rank", "node")

#: Environment variable: the mode used where ``"auto"`` is asked for (e.g. the Python API).
ENV_FOLD_COPIES = env.FOLD_COPIES

#: ``"auto"`` shares folds when the ranks of a node would otherwise hold fold
#: copies of at least this fraction of the node's physical memory.  1/16: node
#: folds hold only the train rows while the first fits of a split run
#: (:class:`hpcml.cv.cow.ShmFolds`) and measured both smaller and not slower than
#: per-rank folds from there on (docs/reuse.md, RidgeClassifier on 0.93 GB).
AUTO_MEMORY_FRACTION = 0.0625


@dataclass
class FoldPlan:
    """The outcome of :func:`choose` (identical on every rank)."""

    mode: str  # "rank" or "node"
    reason: str
    fold_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        """For the run report."""
        return {"copies": self.mode, "reason": self.reason, "fold_bytes": self.fold_bytes}


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def shareable(X: Any) -> bool:
    """Whether X's fold rows can live in a shared window: a plain, C-ordered, 2-D NumPy array."""
    return type(X) is np.ndarray and X.ndim == 2 and X.flags.c_contiguous and X.dtype.kind in "biufc"


def split_rows(indices: Any) -> np.ndarray:
    """Integer row indices of a split part (boolean masks and lists too)."""
    rows = np.asarray(indices)
    return np.flatnonzero(rows) if rows.dtype == bool else rows


def fold_rows(splits: list[tuple[Any, Any]]) -> int:
    """Rows of the largest fold (train + test)."""
    return max((split_rows(train).size + split_rows(test).size for train, test in splits), default=0)


def choose(
    requested: str,
    X: Any,
    splits: list[tuple[Any, Any]],
    comm: MPI.Intracomm,
    *,
    n_candidates: int,
    keeps_estimators: bool = False,
) -> FoldPlan:
    """Decide between per-rank and node-shared folds.  Collective over ``comm``.

    Parameters
    ----------
    requested : {"auto", "rank", "node"}
        The user's choice; ``"node"`` still falls back to ``"rank"`` (with the
        reason) where sharing cannot work.  ``"auto"`` is replaced by
        :data:`ENV_FOLD_COPIES` (``HPCML_FOLD_COPIES``) when that is set.
    X : array-like
        The data (the same kind on every rank).
    splits : list of (train, test)
        The CV splits.
    comm : mpi4py.MPI.Intracomm
        All ranks of the run.
    n_candidates : int
        Units per split.  ``"auto"`` keeps per-rank folds when a split has
        fewer units than there are ranks (a phase could not keep every rank busy).
    keeps_estimators : bool
        Fitted estimators outlive their unit (``return_estimator``); they may
        hold views of the fold (e.g. nearest neighbours), so folds stay per rank.
    """
    from mpi4py import MPI

    if requested == "auto":
        requested = os.environ.get(ENV_FOLD_COPIES, "").strip().lower() or "auto"
    if requested not in MODES:
        raise ValueError(f"fold_copies must be one of {', '.join(MODES)}, got {requested!r}")
    fold_bytes = fold_rows(splits) * (X.shape[1] * X.dtype.itemsize if shareable(X) else 0)
    if requested == "rank":
        return FoldPlan("rank", "fold copies per rank (requested)", fold_bytes)
    local = 1
    if comm.Get_size() > 1:
        node = node_comm(comm)
        local = node.Get_size()
        node.Free()
    # Every rank must come to the same answer: reduce the local views.
    ok = comm.allreduce(int(shareable(X) and not keeps_estimators), op=MPI.MIN)
    max_local = comm.allreduce(local, op=MPI.MAX)
    memory = _physical_memory()
    want = local > 1 and memory is not None and local * fold_bytes >= AUTO_MEMORY_FRACTION * memory
    want_any = comm.allreduce(int(want), op=MPI.MAX)
    if not ok:
        why = "fitted estimators are kept" if keeps_estimators else "X is not a dense C-ordered NumPy array"
        return FoldPlan("rank", f"fold copies per rank: {why}", fold_bytes)
    if max_local == 1:
        return FoldPlan("rank", "fold copies per rank: one rank per node", fold_bytes)
    if requested == "node":
        return FoldPlan("node", "one fold copy per node (requested)", fold_bytes)
    if want_any and n_candidates < comm.Get_size():
        return FoldPlan(
            "rank",
            f"fold copies per rank: a split has {n_candidates} unit(s) for {comm.Get_size()} ranks "
            '(set fold_copies = "node" to trade that parallelism for memory)',
            fold_bytes,
        )
    if want_any:
        return FoldPlan(
            "node",
            f"one fold copy per node: {max_local} per-rank copies of {fold_bytes / 2**30:.2f} GiB "
            f"would take >= {AUTO_MEMORY_FRACTION:.1%} of the node's memory",
            fold_bytes,
        )
    return FoldPlan("rank", "fold copies per rank: they fit in memory comfortably", fold_bytes)


def _take_rows(X: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = X[rows]`` without a temporary copy.

    ``np.take(..., mode="raise")`` buffers ``out`` (a second copy of the slice);
    the indices are checked here instead and taken with ``mode="clip"``.
    """
    n = X.shape[0]
    if rows.size:
        rows = np.where(rows < 0, rows + n, rows) if rows.min() < 0 else rows
        if rows.min() < 0 or rows.max() >= n:
            raise IndexError(f"split index out of range for {n} samples")
    np.take(X, rows, axis=0, out=out, mode="clip")


class NodeFolds:
    """A node-shared buffer holding the rows of one split at a time.

    Create with :meth:`open` (collective over the run's communicator); every
    rank then calls :meth:`load` for the same split at the same time (collective
    over the node) and gets read-only views ``X_train, X_test`` that equal
    ``X[train], X[test]``.  The previous split's views are invalid after the
    next :meth:`load` or :meth:`close`.
    """

    def __init__(self, win: MPI.Win, node: MPI.Intracomm, buffer: np.ndarray) -> None:
        self.win = win
        self.node = node
        self.buffer = buffer
        self.split: int | None = None

    @classmethod
    def open(
        cls, X: np.ndarray, splits: list[tuple[Any, Any]], comm: MPI.Intracomm
    ) -> tuple[NodeFolds | None, str | None]:
        """Allocate the buffer on every node.  Collective over ``comm``.

        Returns
        -------
        folds : NodeFolds or None
            ``None`` on every rank if any node could not allocate (then ``reason`` says why).
        reason : str or None
        """
        from mpi4py import MPI

        from hpcml.data.shared import allocate_shared

        rows = fold_rows(splits)
        node = node_comm(comm)
        try:  # the first failing rank's reason on every rank: all fall back together
            win, mem = agree(comm, allocate_shared, node, rows * X.shape[1] * X.dtype.itemsize)
        except Exception as exc:  # noqa: BLE001 - agreed: the same on every rank
            # A half-made window is left alone: freeing it is collective over a node that may not hold one.
            return None, f"shared fold buffer unavailable ({describe(exc)})"
        win.Lock_all(MPI.MODE_NOCHECK)
        buffer = mem[: rows * X.shape[1] * X.dtype.itemsize].view(X.dtype).reshape(rows, X.shape[1])
        return cls(win, node, buffer), None

    def load(self, X: np.ndarray, train: np.ndarray, test: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Materialise ``X[train]`` and ``X[test]`` in the buffer.  Collective over the node.

        Each rank of the node copies an equal slice of the rows.
        """
        n_train, total = len(train), len(train) + len(test)
        rank, size = self.node.Get_rank(), self.node.Get_size()
        lo, hi = total * rank // size, total * (rank + 1) // size
        self.buffer.flags.writeable = True
        # Nobody may still read the previous split when it is overwritten.
        self.win.Sync()
        idle_barrier(self.node)
        if lo < n_train:
            stop = min(hi, n_train)
            _take_rows(X, train[lo:stop], self.buffer[lo:stop])
        if hi > n_train:
            start = max(lo, n_train)
            _take_rows(X, test[start - n_train : hi - n_train], self.buffer[start:hi])
        self.win.Sync()
        idle_barrier(self.node)
        self.win.Sync()
        self.buffer.flags.writeable = False
        self.split = split
        return self.buffer[:n_train], self.buffer[n_train:total]

    def close(self) -> None:
        """Free the buffer.  Collective over the run's communicator; views are invalid afterwards."""
        if self.win is not None:
            self.win.Unlock_all()
            self.win.Free()
            self.win = None
        if self.node is not None:
            self.node.Free()
            self.node = None
        self.buffer = None  # type: ignore[assignment]
        self.split = None


__all__ = [
    "AUTO_MEMORY_FRACTION",
    "ENV_FOLD_COPIES",
    "MODES",
    "FoldPlan",
    "NodeFolds",
    "choose",
    "fold_rows",
    "shareable",
]

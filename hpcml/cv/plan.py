"""The plan of a search: candidates, splits and the order of the work units.

A unit is ``cand * n_splits + split``.  Candidates and splits are computed once,
on rank 0, and broadcast, so that every rank (and a resumed run) sees exactly
what scikit-learn's ``GridSearchCV`` would use for the same ``cv``, even with an
unseeded splitter or sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcml.comm import bcast_object, idle_barrier, raise_if_any

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


@dataclass(frozen=True)
class UnitIndex:
    """Mapping between unit numbers and (candidate, split) pairs."""

    n_candidates: int
    n_splits: int

    def __len__(self) -> int:
        return self.n_candidates * self.n_splits

    def unit(self, cand: int, split: int) -> int:
        """The unit number of (cand, split)."""
        return cand * self.n_splits + split

    def pair(self, unit: int) -> tuple[int, int]:
        """(candidate, split) of a unit."""
        return divmod(unit, self.n_splits)

    def candidate(self, unit: int) -> Hashable:
        """Cost group of a unit: its candidate."""
        return unit // self.n_splits


def unit_order(
    index: UnitIndex, done: Iterable[int] = (), known_cost: Iterable[int] = ()
) -> tuple[list[int], list[int]]:
    """Default order: first one split of every candidate of unknown cost, then the rest by split.

    The first pass measures every candidate's cost, after which the scheduler
    sorts the rest longest-first; split-major order keeps a rank on the same
    fold for consecutive units (reusing its materialised rows).

    Returns
    -------
    first, rest : list of int
        Units still to run, in order.
    """
    done = set(done)
    known = set(known_cost)
    first: list[int] = []
    for cand in range(index.n_candidates):
        if cand in known:
            continue
        for split in range(index.n_splits):
            unit = index.unit(cand, split)
            if unit not in done:
                first.append(unit)
                break
    taken = set(first)
    rest = [
        index.unit(c, s)
        for s in range(index.n_splits)
        for c in range(index.n_candidates)
        if index.unit(c, s) not in done and index.unit(c, s) not in taken
    ]
    return first, rest


def compute_splits(
    cv: Any,
    X: Any,
    y: Any,
    groups: Any,
    comm: MPI.Intracomm,
    convert: Callable[[Exception], Exception] | None = None,
    check_n_splits: bool = False,
    split_everywhere: bool = True,
    split_params: dict[str, Any] | None = None,
) -> list[tuple[Any, Any]]:
    """``list(cv.split(X, y, groups))`` on rank 0, broadcast to all.  Collective over ``comm``.

    ``split_params`` (the metadata routed to the splitter, ``groups`` among them)
    replaces ``groups``: ``cv.split(X, y, **split_params)``, as scikit-learn calls it.

    ``convert`` may turn the splitter's exception into another (e.g. a config error).
    An exception raised by the splitter is raised on every rank with its type.
    ``check_n_splits`` also compares the count with ``cv.get_n_splits`` (as the
    searches of scikit-learn do; its ``cross_validate`` does not).  With
    ``split_everywhere`` (the API: each rank is a user's scikit-learn call) the
    other ranks run ``cv.split`` as well and discard it, for its warnings and a
    user's RandomState; the CLI reports from rank 0 alone.
    """
    splits = None
    error = None
    args, kwargs = ((groups,), {}) if split_params is None else ((), split_params)
    if comm.Get_rank() == 0:
        try:
            splits = list(cv.split(X, y, *args, **kwargs))
            n_splits = cv.get_n_splits(X, y, *args, **kwargs) if check_n_splits else len(splits)
            if len(splits) != n_splits:
                raise ValueError(
                    "cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {n_splits} splits, got {len(splits)}"
                )
        except Exception as exc:  # noqa: BLE001 - agreed below
            error = convert(exc) if convert is not None else exc
    elif split_everywhere:
        # Rank 0's splits are the run's (an unseeded splitter differs between
        # ranks), but every rank calls split() too, as its own scikit-learn call
        # would: its warnings appear on every rank, and a RandomState the user
        # seeded the splitter with advances the same everywhere.  Nothing is kept.
        try:
            for _ in cv.split(X, y, *args, **kwargs):
                pass
        except Exception:  # noqa: BLE001, S110 - rank 0's outcome decides
            pass
    raise_if_any(comm, error)
    if comm.Get_size() == 1:
        return splits
    return bcast_object(comm, splits, what="the CV splits")


def broadcast(obj: Any, comm: MPI.Intracomm, what: str | None = None) -> Any:
    """Broadcast a (possibly large) object from rank 0.  Collective over ``comm``.

    Objects plain pickle cannot serialise (lambdas in a grid or an estimator)
    go through cloudpickle; if that fails too, or a rank cannot unpickle the
    object, every rank raises :class:`hpcml.errors.SerializationError`
    (:func:`hpcml.comm.bcast_object`).

    Parameters
    ----------
    obj : object
        The object (significant on rank 0 only).
    comm : mpi4py.MPI.Intracomm
        Communicator to broadcast over.
    what : str, optional
        How to name the object in an error message.

    Returns
    -------
    object
        Rank 0's object (a copy on every rank when there is more than one).
    """
    if comm.Get_size() == 1:
        return obj
    idle_barrier(comm)  # ranks waiting for rank 0 sleep instead of spinning in the bcast
    return bcast_object(comm, obj, what=what)

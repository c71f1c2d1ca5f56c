"""Error agreement: if any rank failed, every rank raises the first failure.

:func:`agree` runs a piece of work and then agrees; :func:`raise_if_any` is the
agreement alone, for code that has its exception in hand already.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from hpcml.comm.backoff import idle_barrier
from hpcml.comm.packing import PackedException, mark_agreed, mark_origin
from hpcml.comm.resolve import HOST

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

T = TypeVar("T")


def raise_if_any(comm: MPI.Intracomm, exc: BaseException | None) -> None:
    """Collective error agreement: if any rank failed, every rank raises.

    Collective over ``comm``.  The lowest failing rank's error is broadcast
    (:class:`PackedException`) and raised on every rank with its original type,
    message and attributes; the failing rank re-raises its own exception
    object.  Only an exception that cannot be rebuilt on the other ranks
    (its class cannot be pickled at all) becomes :class:`RemoteError` there.
    Every raised exception is marked agreed (entry points then exit cleanly,
    without ``MPI_Abort``) and carries the failing rank, its host and its
    traceback for error reports (:func:`~hpcml.comm.packing.origin_of`).

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Communicator to agree over.
    exc : BaseException or None
        This rank's exception, or ``None`` if it succeeded.
    """
    from mpi4py import MPI

    size = comm.Get_size()
    rank = comm.Get_rank()
    idle_barrier(comm)  # ranks that arrive early sleep instead of spinning in the allreduce
    first = comm.allreduce(rank if exc is not None else size, op=MPI.MIN)
    if first == size:
        return
    packed = None
    if rank == first:
        assert exc is not None
        packed = PackedException(exc, rank, HOST)
    packed = comm.bcast(packed, root=first)
    if rank == first:
        assert exc is not None
        mark_origin(exc, first, HOST, packed.traceback)
        mark_agreed(exc)
        raise exc
    error = packed.unpack()
    mark_agreed(error)
    raise error from None


def agree(comm: MPI.Intracomm, work: Callable[..., T] | None, *args: Any, **kwargs: Any) -> T | None:
    """Run ``work(*args, **kwargs)`` on this rank, then every rank learns the first failure.

    Collective over ``comm`` (one :func:`raise_if_any`).  This is the pattern
    "try the step, record the exception, agree" in one call: either every rank
    returns (each with its own result) or every rank raises the error of the
    lowest failing rank.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Communicator to agree over.
    work : callable or None
        The step of this rank; ``None`` when this rank has nothing to do but
        must still take part (e.g. every rank but the one reading a file).
    *args, **kwargs
        Passed to ``work``.

    Returns
    -------
    object
        What ``work`` returned on this rank (``None`` for ``work=None``).

    Raises
    ------
    Exception
        The first failing rank's exception, on every rank (see :func:`raise_if_any`).
    """
    result, error = None, None
    if work is not None:
        try:
            result = work(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - agreed below, raised on every rank
            error = exc
    raise_if_any(comm, error)
    return result

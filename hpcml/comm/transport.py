"""Broadcasting Python objects: every rank gets the object or every rank raises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpcml.comm.agree import raise_if_any
from hpcml.comm.packing import describe
from hpcml.comm.pickling import ByValue
from hpcml.errors import SerializationError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


def unsendable(what: str, first: BaseException, second: BaseException) -> SerializationError:
    """The error for an object that neither pickle nor cloudpickle could serialise."""
    return SerializationError(
        f"cannot send {what} to the other ranks: pickle failed ({describe(first)}) "
        f"and cloudpickle failed ({describe(second)})"
    )


class _NotSent:
    """Broadcast instead of an object its root could not serialise."""


def _nothing() -> None:
    return None


class _Pickled:
    """Pickled right after the object it follows: once its ``__reduce__`` ran, that object pickled fine.

    Tells a pickling failure (nothing was sent: retry with cloudpickle) from a
    failure after the message left (the other ranks took part: never retry).
    """

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def __reduce__(self) -> tuple[Any, ...]:
        self.done = True
        return (_nothing, ())


def bcast_object(comm: MPI.Intracomm, obj: Any, root: int = 0, what: str | None = None) -> Any:
    """Broadcast a Python object from ``root``; every rank gets it or every rank raises.

    Collective over ``comm``.  Uses pickle protocol 5 with out-of-band buffers
    and large-message support (``mpi4py.util.pkl5``); objects plain pickle
    cannot serialise are sent through cloudpickle (:class:`ByValue`).  If
    neither can serialise it, or some rank cannot unpickle it, every rank
    raises :class:`~hpcml.errors.SerializationError`.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Communicator to broadcast over.
    obj : object
        The object (significant on ``root`` only).
    root : int
        The sending rank.
    what : str, optional
        How to name the object in an error message (default: its type).

    Returns
    -------
    object
        An unpickled copy of ``obj`` (on ``root`` too, as ``mpi4py``'s ``bcast``).
    """
    from mpi4py import MPI
    from mpi4py.util import pkl5

    big = pkl5.Intracomm(comm)
    rank = comm.Get_rank()
    result, error = None, None
    if rank == root:
        name = what or f"a {type(obj).__name__} object"
        marker = _Pickled()
        try:
            result = big.bcast((obj, marker), root=root)[0]
        except MPI.Exception:
            raise
        except Exception as first:  # noqa: BLE001 - see below
            if marker.done:  # sent; the root's own copy cannot be unpickled
                error = SerializationError(f"cannot unpickle {name} on rank {rank}: {describe(first)}")
            else:  # pickling failed: nothing was sent yet
                try:
                    wrapped: Any = ByValue(obj)
                except Exception as second:  # noqa: BLE001 - reported on every rank below
                    error = unsendable(name, first, second)
                    wrapped = _NotSent()
                try:
                    result = big.bcast((wrapped, None), root=root)[0]
                except MPI.Exception:
                    raise
                except Exception as exc:  # noqa: BLE001 - the copy cannot be unpickled
                    error = error or SerializationError(f"cannot unpickle {name} on rank {rank}: {describe(exc)}")
    else:
        try:
            result = big.bcast(None, root=root)[0]
        except MPI.Exception:
            raise
        except Exception as exc:  # noqa: BLE001 - agreed below
            error = SerializationError(f"rank {rank} cannot unpickle the object sent by rank {root}: {describe(exc)}")
    if isinstance(result, _NotSent):
        result = None
    raise_if_any(comm, error)
    return result

"""MPI plumbing shared by every hpcml tool.

Everything here takes the communicator as an argument; nothing binds a
module-level communicator.  ``mpi4py`` is imported lazily so that importing this
module never loads NumPy (thread limits must be applied first).
"""

from __future__ import annotations

import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from hpcml.errors import EXIT_FAILURE, HpcmlError, RemoteError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

HOST = socket.gethostname()


def resolve_comm(comm: MPI.Intracomm | None = None) -> MPI.Intracomm:
    """Return ``comm`` or ``MPI.COMM_WORLD``, checked to be an intracommunicator.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        Communicator given by the caller; ``None`` means ``MPI.COMM_WORLD``.

    Returns
    -------
    mpi4py.MPI.Intracomm
        The communicator to use (not duplicated; callers that exchange
        point-to-point messages should ``Dup()`` it for the duration of a call).
    """
    from mpi4py import MPI

    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm.Is_inter():
        raise TypeError(f"comm must be an mpi4py intracommunicator, got {comm!r}")
    return comm


def node_comm(comm: MPI.Intracomm) -> MPI.Intracomm:
    """Split ``comm`` into the ranks that share a node (``COMM_TYPE_SHARED``).

    Collective over ``comm``; every rank gets the communicator of its own node.
    """
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())


class Backoff:
    """Exponential sleep for polling loops, so that idle ranks leave the cores free.

    MPICH busy-polls inside blocking calls; hpcml waits with ``Iprobe``/``Test``
    and this sleep instead.  The sleep starts at ``start`` seconds and doubles up
    to ``maximum`` (1 ms, the ceiling ``mpi4py.futures`` uses); after ``patience``
    seconds of waiting it grows further up to ``idle_maximum`` so that ranks that
    wait for a long time (for example 64 ranks on 2 cores) cost next to nothing.
    """

    def __init__(
        self,
        start: float = 1e-5,
        maximum: float = 1e-3,
        idle_maximum: float = 2e-2,
        patience: float = 1.0,
    ) -> None:
        self.start = start
        self.maximum = maximum
        self.idle_maximum = idle_maximum
        self.patience = patience
        self.reset()

    def reset(self) -> None:
        """Start a new wait."""
        self._delay = 0.0
        self._since = time.monotonic()

    def sleep(self) -> None:
        """Sleep for the next delay of the sequence."""
        if self._delay == 0.0:
            self._delay = self.start
        else:
            ceiling = self.maximum
            if time.monotonic() - self._since > self.patience:
                ceiling = self.idle_maximum
            self._delay = min(self._delay * 2.0, ceiling)
        time.sleep(self._delay)


def idle_barrier(comm: MPI.Intracomm) -> None:
    """A barrier that sleeps instead of spinning (``Ibarrier`` + ``Test`` + backoff).

    Collective over ``comm``.
    """
    if comm.Get_size() == 1:
        return
    request = comm.Ibarrier()
    backoff = Backoff()
    while not request.Test():
        backoff.sleep()


def describe(exc: BaseException) -> str:
    """One line naming an exception: ``Type: message`` (just the message for usage errors)."""
    if isinstance(exc, UsageError):
        return str(exc)
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def raise_if_any(comm: MPI.Intracomm, exc: BaseException | None) -> None:
    """Collective error agreement: if any rank failed, every rank raises.

    Collective over ``comm``.  The lowest failing rank's error is broadcast; a
    :class:`UsageError` is re-raised with the same type and message on every
    rank (marked as agreed, so entry points exit cleanly with status 2), any
    other exception becomes :class:`RemoteError` on the other ranks and is
    re-raised unchanged on the rank that raised it.

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
    payload = None
    if rank == first:
        assert exc is not None
        if isinstance(exc, HpcmlError) and not isinstance(exc, RemoteError):
            payload = ("usage", type(exc), str(exc))
        else:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            payload = ("remote", describe(exc), tb)
    payload = comm.bcast(payload, root=first)
    if payload[0] == "usage":
        error = payload[1](payload[2])
        error.agreed = True  # type: ignore[attr-defined]
        if exc is not None and type(exc) is payload[1] and str(exc) == payload[2]:
            exc.agreed = True  # type: ignore[attr-defined]
            raise exc
        raise error from None
    error = RemoteError(first, _host_of(comm, first), payload[1], payload[2])
    error.agreed = True  # type: ignore[attr-defined]
    if rank == first and exc is not None:
        raise error from exc
    raise error


def _host_of(comm: MPI.Intracomm, rank: int) -> str:
    return comm.bcast(HOST if comm.Get_rank() == rank else None, root=rank)


def run_guarded(main: Callable[[], int], comm: MPI.Intracomm | None = None) -> NoReturn:
    """Run an entry point so that no rank is ever left hanging.

    * :class:`UsageError` agreed by every rank (see :func:`raise_if_any`):
      rank 0 prints one ``hpcml: error: ...`` line, every rank exits 2.
    * :class:`Incomplete` agreed by every rank: exit 3.
    * Anything else, or an error only this rank knows about: this rank prints
      ``hpcml: error: rank r/n on host: ...`` (with the traceback for
      unexpected exceptions) and calls ``Abort`` so that MPI ends every rank.

    Parameters
    ----------
    main : callable
        The entry point; returns the exit status.
    comm : mpi4py.MPI.Intracomm, optional
        Communicator whose ranks run ``main``; default ``MPI.COMM_WORLD``.
    """
    code = EXIT_FAILURE
    try:
        code = main()
    except SystemExit as exc:  # argparse and friends
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code not in (None, 0) and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - the last line of defence
        code = _report(exc, comm)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _report(exc: BaseException, comm: MPI.Intracomm | None) -> int:
    agreed = getattr(exc, "agreed", False)
    code = exc.exit_code if isinstance(exc, HpcmlError) else EXIT_FAILURE
    rank, size = 0, 1
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        world = comm if comm is not None else mpi.COMM_WORLD
        rank, size = world.Get_rank(), world.Get_size()
    else:
        world = None
    if isinstance(exc, KeyboardInterrupt):
        code = 130
    if agreed or size == 1:
        if rank == 0:
            where = ""
            if getattr(exc, "rank", None) is not None and not isinstance(exc, RemoteError):
                where = f"rank {exc.rank}/{size} on {getattr(exc, 'host', '?')}: "
            _print_error(exc, prefix=where)
        return code
    _print_error(exc, prefix=f"rank {rank}/{size} on {HOST}: ")
    sys.stdout.flush()
    sys.stderr.flush()
    assert world is not None
    world.Abort(code)
    return code  # pragma: no cover - Abort does not return


def _print_error(exc: BaseException, prefix: str) -> None:
    if isinstance(exc, HpcmlError) and not isinstance(exc, RemoteError):
        print(f"hpcml: error: {prefix}{exc}", file=sys.stderr)
        return
    if isinstance(exc, RemoteError):
        if exc.traceback:
            print(exc.traceback.rstrip(), file=sys.stderr)
        print(f"hpcml: error: {prefix}{exc}", file=sys.stderr)
        return
    if isinstance(exc, KeyboardInterrupt):
        print(f"hpcml: error: {prefix}interrupted", file=sys.stderr)
        return
    remote = getattr(exc, "remote_traceback", None)
    if remote:
        print(remote.rstrip(), file=sys.stderr)
        print(f"hpcml: error: {prefix}{describe(exc)}", file=sys.stderr)
        return
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"hpcml: error: {prefix}{describe(exc)}", file=sys.stderr)

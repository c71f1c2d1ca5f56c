"""The CLI guard: an entry point's exception ends every rank with one clear message and an exit status."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from hpcml.comm.packing import describe, origin_of
from hpcml.comm.resolve import HOST
from hpcml.errors import EXIT_FAILURE, HpcmlError, RemoteError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


def run_guarded(main: Callable[[], int], comm: MPI.Intracomm | None = None) -> NoReturn:
    """Run an entry point so that no rank is ever left hanging.

    * :class:`UsageError` agreed by every rank (see :func:`raise_if_any`):
      rank 0 prints one ``hpcml: error: ...`` line, every rank exits 2.
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
    origin = origin_of(exc)
    agreed = origin.agreed
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
            if origin.rank is not None and not isinstance(exc, HpcmlError):
                where = f"rank {origin.rank}/{size} on {origin.host or '?'}: "
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
    remote = origin_of(exc).traceback
    if remote:
        print(remote.rstrip(), file=sys.stderr)
        print(f"hpcml: error: {prefix}{describe(exc)}", file=sys.stderr)
        return
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"hpcml: error: {prefix}{describe(exc)}", file=sys.stderr)

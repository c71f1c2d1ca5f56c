"""MPI plumbing shared by every hpcml tool.

Everything here takes the communicator as an argument; nothing binds a
module-level communicator.  ``mpi4py`` is imported lazily so that importing this
module never loads NumPy (thread limits must be applied first).
"""

from __future__ import annotations

import io
import pickle
import socket
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from hpcml.errors import EXIT_FAILURE, HpcmlError, RemoteError, SerializationError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

HOST = socket.gethostname()


def resolve_comm(comm: MPI.Intracomm | str | None = None) -> MPI.Intracomm:
    """Return the communicator a ``comm=`` parameter names, checked to be an intracommunicator.

    Parameters
    ----------
    comm : None, "world", "self" or mpi4py.MPI.Intracomm, optional
        Communicator given by the caller: ``None`` or ``"world"`` mean
        ``MPI.COMM_WORLD``, ``"self"`` means ``MPI.COMM_SELF`` (this rank alone;
        what hpcml gives estimators fitted inside one work unit).  The strings
        keep an estimator's parameters picklable and clonable.

    Returns
    -------
    mpi4py.MPI.Intracomm
        The communicator to use (not duplicated; callers that exchange
        point-to-point messages should ``Dup()`` it for the duration of a call).

    Raises
    ------
    ValueError
        For any other string.
    TypeError
        For anything that is not an intracommunicator.
    """
    from mpi4py import MPI

    if comm is None:
        return MPI.COMM_WORLD
    if isinstance(comm, str):
        if comm == "world":
            return MPI.COMM_WORLD
        if comm == "self":
            return MPI.COMM_SELF
        raise ValueError(f"comm must be None, 'world', 'self' or an mpi4py intracommunicator; got {comm!r}")
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

    Collective over ``comm``.  The lowest failing rank's error is broadcast
    (:class:`PackedException`) and raised on every rank with its original type,
    message and attributes; the failing rank re-raises its own exception
    object.  Only an exception that cannot be rebuilt on the other ranks
    (its class cannot be pickled at all) becomes :class:`RemoteError` there.
    Every raised exception is marked ``agreed`` (entry points then exit
    cleanly, without ``MPI_Abort``) and carries ``hpcml_rank``, ``hpcml_host``
    and ``remote_traceback`` (the failing rank's traceback) for error reports.

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
        exc.agreed = True  # type: ignore[attr-defined]
        raise exc
    error = packed.unpack()
    error.agreed = True  # type: ignore[attr-defined]
    raise error from None


# -- sending Python objects between ranks --------------------------------------------------
#
# mpi4py pickles with the standard pickle module.  Users' objects (lambdas in a
# grid or inside an estimator, locally defined classes) may need cloudpickle,
# which is what joblib's loky backend uses, so scikit-learn accepts them.  hpcml
# keeps plain pickle as the fast path and falls back to cloudpickle only when
# pickle fails.  Pickling happens on the sender before any message leaves, so a
# failed attempt can be retried with the fallback without confusing the receiver.
# Every rank runs the same program (SPMD), so classes and functions that can be
# found by name, those of ``__main__`` included, still go by reference (each rank
# gets its own class: isinstance keeps working); only lambdas, local functions and
# classes travel by value.


def _cloudpickle() -> Any:
    """The cloudpickle module (a joblib dependency; vendored by joblib < 1.6), or None."""
    try:
        import cloudpickle
    except ImportError:  # pragma: no cover - older joblib vendors it
        try:
            from joblib.externals import cloudpickle  # type: ignore[no-redef]
        except ImportError:
            return None
    return cloudpickle


def _by_name(obj: Any) -> bool:
    """Whether ``obj`` (a class or function) is what its module and qualified name lead to."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    target: Any = module
    for part in getattr(obj, "__qualname__", "<>").split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is obj


_PICKLERS: dict[int, type] = {}


def _spmd_pickler(cloudpickle: Any) -> type:
    """The Pickler of cloudpickle, except that classes and functions found by name go by reference."""
    cls = _PICKLERS.get(id(cloudpickle))
    if cls is None:

        class SPMDPickler(cloudpickle.Pickler):  # type: ignore[name-defined, misc]
            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, type | types.FunctionType) and _by_name(obj):
                    return NotImplemented  # plain pickle's save_global: by reference
                return super().reducer_override(obj)

        cls = _PICKLERS[id(cloudpickle)] = SPMDPickler
    return cls


def cloud_dumps(obj: Any) -> bytes:
    """Pickle ``obj`` with cloudpickle (lambdas and local objects by value, the rest by reference).

    Parameters
    ----------
    obj : object
        The object.

    Returns
    -------
    bytes
        A pickle that ``pickle.loads`` reads on any rank of the same program.

    Raises
    ------
    Exception
        Whatever cloudpickle raises (``pickle.PicklingError`` if cloudpickle is missing).
    """
    cloudpickle = _cloudpickle()
    if cloudpickle is None:
        raise pickle.PicklingError("cloudpickle is not installed")
    with io.BytesIO() as buffer:
        _spmd_pickler(cloudpickle)(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buffer.getvalue()


def _load_by_value(data: bytes) -> Any:
    return pickle.loads(data)


class ByValue:
    """Wrap an object so that it pickles through cloudpickle; unpickling gives the object back.

    The serialisation happens in the constructor, so an object that even
    cloudpickle cannot serialise fails there, before anything is sent.

    Parameters
    ----------
    obj : object
        The object to send (e.g. an estimator holding a lambda).

    Raises
    ------
    Exception
        Whatever cloudpickle raises (``pickle.PicklingError`` if cloudpickle is missing).
    """

    __slots__ = ("data",)

    def __init__(self, obj: Any) -> None:
        self.data = cloud_dumps(obj)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load_by_value, (self.data,))


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


# -- exceptions between ranks ---------------------------------------------------------------


def mark_origin(exc: BaseException, rank: int, host: str, tb: str | None = None) -> None:
    """Record where ``exc`` was raised (``hpcml_rank``, ``hpcml_host``, ``remote_traceback``)."""
    values: dict[str, Any] = {"hpcml_rank": rank, "hpcml_host": host}
    if tb and not getattr(exc, "remote_traceback", None):
        values["remote_traceback"] = tb
    for name, value in values.items():
        try:
            setattr(exc, name, value)
        except Exception:  # noqa: BLE001 - an exception type that refuses attributes
            pass


def _dumps_checked(obj: Any) -> bytes | None:
    """``obj`` pickled (plain pickle, else cloudpickle) so that it also unpickles; None if it cannot be."""
    for dumps in (lambda o: pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL), cloud_dumps):
        try:
            data = dumps(obj)
            pickle.loads(data)
            return data
        except Exception:  # noqa: BLE001 - try the next way
            continue
    return None


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """Make an exception of type ``cls`` without calling its ``__init__``."""
    try:
        exc = cls.__new__(cls, *args)
    except Exception:  # noqa: BLE001 - a __new__ with its own signature
        exc = cls.__new__(cls)
    exc.args = args
    if state:
        exc.__dict__.update(state)
    return exc


class _Rebuilt:
    """Pickles as ``_rebuild_exception(cls, args, state)``: an exception without its ``__init__``.

    Exceptions whose ``__init__`` does not take ``self.args`` back (for example
    ``def __init__(self, code, detail): super().__init__(f"{code}: {detail}")``)
    pickle but cannot be unpickled; this rebuilds them from their class, args
    and attributes instead.  Attributes that cannot travel are dropped.
    """

    __slots__ = ("cls", "args", "state")

    def __init__(self, exc: BaseException, depth: int = 0) -> None:
        self.cls = type(exc)
        self.args = exc.args if _dumps_checked(exc.args) is not None else (str(exc),)
        self.state: dict[str, Any] = {}
        for name, value in getattr(exc, "__dict__", {}).items():
            if _dumps_checked(value) is not None:
                self.state[name] = value
            elif isinstance(value, BaseException) and depth < 3:
                self.state[name] = _Rebuilt(value, depth + 1)  # e.g. FitRaised.original

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_exception, (self.cls, self.args, self.state))


class PackedException:
    """An exception in a form that always pickles and unpickles: how errors travel between ranks.

    Parameters
    ----------
    exc : BaseException
        The exception.
    rank : int
        The rank it was raised on.
    host : str
        That rank's host name.
    """

    def __init__(self, exc: BaseException, rank: int, host: str) -> None:
        self.rank = rank
        self.host = host
        self.summary = describe(exc)
        self.traceback = getattr(exc, "remote_traceback", None) or "".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__)
        )
        data = _dumps_checked(exc)
        if data is None:
            try:
                data = _dumps_checked(_Rebuilt(exc))
            except Exception:  # noqa: BLE001 - then a RemoteError it is
                data = None
        self.data = data

    def unpack(self) -> BaseException:
        """The exception: its original type where it can be rebuilt, else :class:`RemoteError`."""
        error: Any = None
        if self.data is not None:
            try:
                error = pickle.loads(self.data)
            except Exception:  # noqa: BLE001 - fall back to RemoteError
                error = None
        if not isinstance(error, BaseException):
            error = RemoteError(self.rank, self.host, self.summary, self.traceback)
        mark_origin(error, self.rank, self.host, self.traceback)
        return error


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
            origin = getattr(exc, "hpcml_rank", None)
            if origin is not None and not isinstance(exc, HpcmlError):
                where = f"rank {origin}/{size} on {getattr(exc, 'hpcml_host', '?')}: "
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

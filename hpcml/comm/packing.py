"""Exceptions between ranks: :class:`Origin` (where an error came from) and :class:`PackedException`.

An error shared between ranks keeps its original type; what hpcml knows about
it (the rank and host it was raised on, that rank's traceback, whether every
rank agreed on it) travels in one typed :class:`Origin` record, read with
:func:`origin_of` and written with :func:`mark_origin`, :func:`mark_agreed`
and :func:`keep_traceback`.
"""

from __future__ import annotations

import dataclasses
import pickle
import traceback
from typing import Any

from hpcml.comm.pickling import cloud_dumps
from hpcml.errors import RemoteError, UsageError


def describe(exc: BaseException) -> str:
    """One line naming an exception: ``Type: message`` (just the message for usage errors)."""
    if isinstance(exc, UsageError):
        return str(exc)
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class Origin:
    """What hpcml knows about an error shared between ranks.

    Parameters
    ----------
    rank, host : int and str, or None
        Where it was raised (None: not known, e.g. a local error).
    traceback : str or None
        The traceback on that rank, printed once by rank 0.
    agreed : bool
        Every rank raises it at the same point (entry points then exit cleanly,
        without ``MPI_Abort``).
    """

    rank: int | None = None
    host: str | None = None
    traceback: str | None = None
    agreed: bool = False


#: The one attribute hpcml sets on an exception (an :class:`Origin`).
_ORIGIN = "hpcml_origin"
#: Attributes of earlier versions, still read (and merged) so that code setting them keeps working.
_LEGACY = {"rank": "hpcml_rank", "host": "hpcml_host", "traceback": "remote_traceback", "agreed": "agreed"}


def origin_of(exc: BaseException) -> Origin:
    """The :class:`Origin` of ``exc`` (empty if hpcml never marked it)."""
    found = getattr(exc, _ORIGIN, None)
    origin = found if isinstance(found, Origin) else Origin()
    legacy = {field: getattr(exc, name, None) for field, name in _LEGACY.items()}
    if not any(value is not None for value in legacy.values()):
        return origin
    return Origin(
        origin.rank if origin.rank is not None else legacy["rank"],
        origin.host if origin.host is not None else legacy["host"],
        origin.traceback or legacy["traceback"] or None,
        origin.agreed or bool(legacy["agreed"]),
    )


def _set(exc: BaseException, origin: Origin) -> None:
    try:
        setattr(exc, _ORIGIN, origin)
    except Exception:  # noqa: BLE001 - an exception type that refuses attributes
        pass


def mark_origin(exc: BaseException, rank: int, host: str, tb: str | None = None) -> None:
    """Record where ``exc`` was raised, and ``tb`` as its traceback unless it has one."""
    origin = origin_of(exc)
    _set(exc, dataclasses.replace(origin, rank=rank, host=host, traceback=origin.traceback or tb or None))


def keep_traceback(exc: BaseException, tb: str) -> None:
    """Record ``tb`` as the traceback of ``exc`` unless it has one (printed by the entry points)."""
    origin = origin_of(exc)
    if not origin.traceback:
        _set(exc, dataclasses.replace(origin, traceback=tb))


def mark_agreed(exc: BaseException) -> None:
    """Record that every rank raises ``exc`` at this point."""
    _set(exc, dataclasses.replace(origin_of(exc), agreed=True))


def is_agreed(exc: BaseException) -> bool:
    """Whether every rank raises ``exc`` (see :func:`mark_agreed`)."""
    return origin_of(exc).agreed


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
        self.traceback = origin_of(exc).traceback or "".join(
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

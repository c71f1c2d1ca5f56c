"""Serialising Python objects for other ranks: plain pickle first, cloudpickle for the rest.  No MPI."""

from __future__ import annotations

import io
import pickle
import sys
import types
from typing import Any

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

"""MPI plumbing shared by every hpcml tool, one module per job.

========================  ===========================================================
:mod:`.resolve`           ``resolve_comm`` (what a ``comm=`` parameter names), ``node_comm``, ``HOST``
:mod:`.backoff`           ``Backoff`` (polling without spinning), ``idle_barrier``
:mod:`.agree`             ``agree`` (run, then every rank learns the first failure), ``raise_if_any``
:mod:`.pickling`          ``cloud_dumps``, ``ByValue``: plain pickle first, cloudpickle for the rest
:mod:`.transport`         ``bcast_object``: every rank gets the object or every rank raises
:mod:`.packing`           ``PackedException``, ``Origin`` (where an error came from), ``describe``
:mod:`.guard`             ``run_guarded``: the CLI guard (one message, exit status, ``MPI_Abort``)
========================  ===========================================================

Everything takes the communicator as an argument; nothing binds a
module-level communicator.  ``mpi4py`` is imported lazily so that importing this
package never loads NumPy (thread limits must be applied first).
Every name stays importable from ``hpcml.comm``.
"""

from hpcml.comm.agree import agree, raise_if_any
from hpcml.comm.backoff import Backoff, idle_barrier
from hpcml.comm.guard import run_guarded
from hpcml.comm.packing import (
    Origin,
    PackedException,
    describe,
    is_agreed,
    keep_traceback,
    mark_agreed,
    mark_origin,
    origin_of,
)
from hpcml.comm.pickling import ByValue, cloud_dumps
from hpcml.comm.resolve import HOST, node_comm, resolve_comm
from hpcml.comm.transport import bcast_object, unsendable

__all__ = [
    "HOST",
    "Backoff",
    "ByValue",
    "Origin",
    "PackedException",
    "agree",
    "bcast_object",
    "cloud_dumps",
    "describe",
    "idle_barrier",
    "is_agreed",
    "keep_traceback",
    "mark_agreed",
    "mark_origin",
    "node_comm",
    "origin_of",
    "raise_if_any",
    "resolve_comm",
    "run_guarded",
    "unsendable",
]

"""Communicator resolution: what a ``comm=`` parameter names, and the ranks of one node."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

#: This process's host name (in error reports).
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

"""Loading X/y on every rank of a run, one copy per node (collective).

:func:`load_arrays` gives every rank the full arrays.  Ranks that share a node
(``MPI.COMM_TYPE_SHARED``) share one copy: the node's first rank reads the HDF5
file into an ``MPI.Win.Allocate_shared`` window and the other ranks map the same
memory (``Win.Shared_query(0)``), read-only.  Where shared windows cannot be
used (sparse X, ``HPCML_SHARED_MEMORY=0``, a single rank, an MPI without shared
windows, too little room in ``/dev/shm``) every rank reads its own copy; the
returned ``info`` says which path ran and why.

How the node copies are filled (``load``): ``"read"``, every node's first rank
reads the file (N nodes open it at once); ``"broadcast"``, only the run's first
rank reads it and the other nodes' first ranks receive it by ``MPI_Bcast`` in
:data:`BCAST_CHUNK` pieces (one reader on the parallel file system whatever the
node count); ``"auto"`` (default) broadcasts from :data:`BROADCAST_AUTO_NODES`
nodes on.  ``HPCML_DATA_LOAD`` overrides the default; docs/data.md gives the
measured crossover.

Lifetime
--------
The window lives as long as the returned arrays need it: each array holds a
reference to the window (through the buffer it views), and hpcml never frees a
window behind the caller's back.  :meth:`SharedArrays.close` frees it
collectively when the caller is done; otherwise ``MPI_Finalize`` releases it at
exit.  Do not touch the arrays after ``close()``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from hpcml import env
from hpcml._faults import hook as fault_hook
from hpcml.comm import agree, describe, idle_barrier, node_comm, raise_if_any, resolve_comm

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

    from hpcml.data.h5 import H5Dataset

#: Environment variable: ``0``/``false``/``no``/``off`` forces per-rank reads.
ENV_SHARED = env.SHARED_MEMORY

#: Environment variable: ``read``, ``broadcast`` or ``auto`` (see :func:`load_mode`).
ENV_LOAD = "HPCML_DATA_LOAD"
LOAD_MODES = ("auto", "read", "broadcast")
#: ``load="auto"`` broadcasts from this many nodes on (docs/data.md: the crossover).
BROADCAST_AUTO_NODES = 8
#: Bytes per ``MPI_Bcast`` call of the broadcast mode (below MPI's 2 GiB count limit).
BCAST_CHUNK = 64 * 2**20

ROLES = ("X", "y", "groups", "sample_weight")
_ALIGN = 64


class SharedArrays(dict):
    """``{role: array}`` returned by :func:`load_arrays`, plus the window backing it.

    A plain ``dict`` for every purpose; :meth:`close` additionally releases the
    node-shared window (collective).
    """

    def __init__(self, arrays: dict[str, Any], window: Any = None, node: Any = None) -> None:
        super().__init__(arrays)
        self.window = window
        self.node = node

    def close(self) -> None:
        """Free the shared window.  Collective over the communicator given to :func:`load_arrays`.

        Every rank must call it, after dropping every use of the arrays (they
        point into the freed memory afterwards; this method sets the dict's
        values to ``None``).  A no-op for per-rank loads and on the second call.
        """
        for key in list(self):
            self[key] = None
        if self.window is not None:
            self.window.Free()
            self.window = None
        if self.node is not None:
            self.node.Free()
            self.node = None


def shared_memory_enabled(default: bool = True) -> bool:
    """Read :data:`ENV_SHARED` (``HPCML_SHARED_MEMORY``); unset means ``default``."""
    value = os.environ.get(ENV_SHARED, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return default


def load_mode(load: str | None, n_nodes: int) -> tuple[str, str]:
    """Decide how node copies are filled: ``("read" | "broadcast", why)``.

    Parameters
    ----------
    load : {"auto", "read", "broadcast"}, optional
        The caller's choice; ``None`` means ``HPCML_DATA_LOAD`` if set, else ``"auto"``.
    n_nodes : int
        Nodes of the run (``COMM_TYPE_SHARED`` groups).

    Returns
    -------
    mode : str
        ``"read"`` or ``"broadcast"`` (one node always reads).
    why : str
        The reason, for the run report.
    """
    if load is None:
        load = os.environ.get(ENV_LOAD, "").strip().lower() or "auto"
    if load not in LOAD_MODES:
        raise ValueError(f"load must be one of {', '.join(map(repr, LOAD_MODES))}, got {load!r}")
    if n_nodes <= 1:
        return "read", "one node"
    if load == "auto":
        if n_nodes >= BROADCAST_AUTO_NODES:
            return "broadcast", f"auto: {n_nodes} nodes >= {BROADCAST_AUTO_NODES}"
        return "read", f"auto: {n_nodes} nodes < {BROADCAST_AUTO_NODES}"
    return load, f"{load} (requested)"


def _allocate_window(node: MPI.Intracomm, nbytes: int) -> MPI.Win:
    """``MPI.Win.Allocate_shared`` of ``nbytes`` on this rank (a hook for tests)."""
    from mpi4py import MPI

    return MPI.Win.Allocate_shared(nbytes, 1, comm=node)


def _shm_room() -> int | None:
    """Free bytes in ``/dev/shm`` (where MPICH and Open MPI back shared windows), if known."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def allocate_shared(node: MPI.Intracomm, nbytes: int) -> tuple[MPI.Win, Any]:
    """Allocate ``nbytes`` on the node's first rank in a shared window.  Collective over ``node``.

    Returns
    -------
    win : mpi4py.MPI.Win
        The window (free it collectively with ``win.Free()``).
    mem : numpy.ndarray
        Every rank's ``uint8`` view of the whole buffer.

    Raises
    ------
    MemoryError
        On every rank of the node, when ``/dev/shm`` lacks the room.
    Exception
        Whatever the MPI library raises (possibly on some ranks only).
    """
    import numpy as np

    leader = node.Get_rank() == 0
    shortage = None
    if leader:
        room = _shm_room()
        if room is not None and room < nbytes:
            shortage = f"/dev/shm has {room} bytes free, {nbytes} are needed"
    # The leader's check must reach its node before the collective allocation.
    shortage = node.bcast(shortage, root=0)
    if shortage is not None:
        raise MemoryError(shortage)
    win = _allocate_window(node, max(nbytes, 1) if leader else 0)
    buf, _ = win.Shared_query(0)
    mem = np.frombuffer(buf, dtype=np.uint8)
    if mem.size < nbytes:
        raise RuntimeError(f"shared window has {mem.size} bytes, need {nbytes}")
    return win, mem


def _layout(meta: dict[str, Any]) -> tuple[dict[str, tuple[int, tuple[int, ...], Any]], int]:
    import numpy as np

    offsets: dict[str, tuple[int, tuple[int, ...], Any]] = {}
    total = 0
    for role in ROLES:
        if role not in meta:
            continue
        shape, dtype = meta[role]
        dtype = np.dtype(dtype)
        offsets[role] = (total, tuple(shape), dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        total += -(-nbytes // _ALIGN) * _ALIGN
    return offsets, total


def load_arrays(
    dataset: H5Dataset,
    comm: MPI.Intracomm | None = None,
    *,
    shared: bool | None = None,
    check_nan_y: bool = True,
    load: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Give every rank the full X/y (and groups, sample_weight).  Collective over ``comm``.

    Parameters
    ----------
    dataset : hpcml.data.H5Dataset
        What to load.
    comm : mpi4py.MPI.Intracomm, optional
        Ranks that load; default ``MPI.COMM_WORLD``.
    shared : bool, optional
        Use node-shared windows (``True``) or per-rank reads (``False``); default:
        ``HPCML_SHARED_MEMORY`` if set, else shared.  Must agree on every rank.
    check_nan_y : bool, default True
        Reject NaN/inf in ``y``.
    load : {"auto", "read", "broadcast"}, optional
        How node copies are filled (see :func:`load_mode`); default
        ``HPCML_DATA_LOAD`` if set, else ``"auto"``.  Must agree on every rank.

    Returns
    -------
    arrays : SharedArrays
        A dict ``{"X": ..., "y": ..., "groups": ..., "sample_weight": ...}`` (absent
        roles ``None``).  With shared windows the arrays are read-only views of
        node-shared memory; ``arrays.close()`` (collective) frees it.
    info : dict
        For the run report: ``method`` (``"shared-window"`` or ``"per-rank"``),
        ``reason``, ``nodes``, ``copies`` (copies held in memory over all
        nodes), ``bytes`` (of one copy), ``local_bytes`` (bytes this rank
        allocated) and ``seconds``; with shared windows also ``load``
        (``"read"``/``"broadcast"``), ``load_reason``, ``readers`` (ranks that
        read the file), ``read_seconds`` and ``bcast_seconds`` (this rank's).

    Raises
    ------
    hpcml.errors.DataError
        On every rank, if any rank could not read or validate the data.
    """
    comm = resolve_comm(comm)
    t0 = time.perf_counter()
    validate = dataset.validate if comm.Get_rank() == 0 else None
    meta = comm.bcast(agree(comm, validate, check_nan_y=check_nan_y), root=0)
    shared, reason = _shared_or_why(shared, meta, comm.Get_size())
    if shared:
        result, reason = _load_shared(dataset, comm, meta, load)
        if result is not None:
            arrays, info = result
            info["seconds"] = time.perf_counter() - t0
            return arrays, info
        # every rank got the same failure reason: fall back to per-rank reads
    arrays = agree(comm, _read_every_role, dataset)
    one_copy = sum(_nbytes(a) for a in arrays.values() if a is not None)
    info = {
        "method": "per-rank",
        "reason": reason,
        "nodes": _count_nodes(comm),
        "copies": comm.Get_size(),
        "bytes": one_copy,
        "local_bytes": one_copy,
        "seconds": time.perf_counter() - t0,
    }
    return SharedArrays(arrays), info


def _shared_or_why(shared: bool | None, meta: dict[str, Any], n_ranks: int) -> tuple[bool, str]:
    """Whether to use node-shared windows, and why not (``""`` when they are used)."""
    if shared is None:
        shared = shared_memory_enabled()
    if not shared:
        return False, f"shared windows disabled ({ENV_SHARED}=0 or shared=False)"
    if meta["sparse"]:
        return False, "X is sparse (CSR): shared windows hold dense arrays only"
    if meta.get("text"):
        return False, "X is text: shared windows hold dense arrays only"
    if n_ranks == 1:
        return False, "single rank"
    return True, ""


def _read_every_role(dataset: H5Dataset) -> dict[str, Any]:
    """Read every named role into this process (the per-rank path)."""
    return {role: dataset.read(role) if dataset.names.get(role) is not None else None for role in ROLES}


def _open_window(comm: MPI.Intracomm, total: int) -> tuple[MPI.Intracomm, Any, Any]:
    """The node communicator and a node-shared window of ``total`` bytes; a failure says which step failed."""
    try:
        node = node_comm(comm)
    except Exception as exc:  # noqa: BLE001 - reworded, agreed by the caller
        raise RuntimeError(f"cannot split the communicator by node ({describe(exc)})") from None
    try:
        win, mem = allocate_shared(node, total)
    except Exception as exc:  # noqa: BLE001 - reworded, agreed by the caller
        raise RuntimeError(f"shared window unavailable ({describe(exc)})") from None
    return node, win, mem


def _nbytes(a: Any) -> int:
    if getattr(a, "dtype", None) is not None and a.dtype.kind == "O":  # text: the strings themselves
        return int(a.nbytes + sum(len(v) for v in a))
    if hasattr(a, "nbytes"):
        return int(a.nbytes)
    return int(a.data.nbytes + a.indices.nbytes + a.indptr.nbytes)  # scipy.sparse


def _count_nodes(comm: MPI.Intracomm) -> int:
    if comm.Get_size() == 1:
        return 1
    try:
        node = node_comm(comm)
    except Exception:  # noqa: BLE001 - informational only
        return -1
    leaders = comm.allreduce(1 if node.Get_rank() == 0 else 0)
    node.Free()
    return int(leaders)


def _load_shared(
    dataset: H5Dataset, comm: MPI.Intracomm, meta: dict[str, Any], load: str | None = None
) -> tuple[tuple[SharedArrays, dict[str, Any]] | None, str]:
    """The shared-window path; ``(None, reason)`` on every rank if windows are unavailable."""
    import numpy as np
    from mpi4py import MPI

    offsets, total = _layout(meta)
    try:  # the first failing rank's reason on every rank: all fall back together
        node, win, mem = agree(comm, _open_window, comm, total)
    except Exception as exc:  # noqa: BLE001 - agreed: the same on every rank
        # Leave a half-made window alone: freeing it is collective and some ranks may not hold one.
        return None, str(exc) or "shared window failed"

    views: dict[str, Any] = {role: None for role in ROLES}
    for role, (offset, shape, dtype) in offsets.items():
        count = int(np.prod(shape, dtype=np.int64))
        views[role] = mem[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)
    n_nodes = int(comm.allreduce(1 if node.Get_rank() == 0 else 0))
    mode, why = load_mode(load, n_nodes)

    win.Lock_all(MPI.MODE_NOCHECK)
    error, seconds = _fill(dataset, comm, node, views, mem[:total], mode)
    win.Sync()
    idle_barrier(comm)  # the other ranks sleep while the node's reader works
    win.Sync()
    win.Unlock_all()
    raise_if_any(comm, error)
    for view in views.values():
        if view is not None:
            view.flags.writeable = False

    info = {
        "method": "shared-window",
        "reason": f"one copy per node: node rank 0 {'receives' if mode == 'broadcast' and comm.Get_rank() else 'reads'}"
        f", {node.Get_size()} rank(s) on this node map it",
        "nodes": n_nodes,
        "copies": n_nodes,
        "ranks_on_node": node.Get_size(),
        "bytes": total,
        "local_bytes": total if node.Get_rank() == 0 else 0,
        "load": mode,
        "load_reason": why,
        "readers": n_nodes if mode == "read" else 1,
        **seconds,
    }
    return (SharedArrays(views, window=win, node=node), info), info["reason"]


def _fill(
    dataset: H5Dataset, comm: MPI.Intracomm, node: MPI.Intracomm, views: dict[str, Any], mem: Any, mode: str
) -> tuple[BaseException | None, dict[str, float]]:
    """Fill the node copies: each node leader reads, or rank 0 reads and leaders receive by Bcast.

    Collective over ``comm``; returns this rank's error (to be agreed) and timings.
    """
    from mpi4py import MPI

    rank = comm.Get_rank()
    leader = node.Get_rank() == 0
    reader = leader if mode == "read" else rank == 0
    error: BaseException | None = None
    t0 = time.perf_counter()
    if reader:
        try:
            read_fault = fault_hook("shared-read", rank)  # None unless HPCML_INJECT_FAULT names it (tests)
            if read_fault is not None:
                read_fault()
            for role, view in views.items():
                if view is not None:
                    dataset.read(role, out=view)
        except Exception as exc:  # noqa: BLE001 - agreed by the caller
            error = exc
    t1 = time.perf_counter()
    if mode != "broadcast":
        return error, {"read_seconds": t1 - t0, "bcast_seconds": 0.0}
    # Did the one reader fail?  Then nothing is broadcast (the caller raises its error everywhere).
    idle_barrier(comm)
    failed = comm.allreduce(int(error is not None))
    t1 = time.perf_counter()
    leaders = comm.Split(0 if leader else MPI.UNDEFINED, key=rank)
    if leaders != MPI.COMM_NULL:
        try:
            if not failed:
                for start in range(0, mem.size, BCAST_CHUNK):
                    leaders.Bcast(mem[start : start + BCAST_CHUNK], root=0)
        finally:
            leaders.Free()
    return error, {"read_seconds": t1 - t0, "bcast_seconds": time.perf_counter() - t1}

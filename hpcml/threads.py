"""Per-rank thread budget: OpenMP/BLAS limits and CPU affinity.

Ranks x threads must never oversubscribe a node.  :func:`plan_layout` finds the
ranks that share a node (``MPI.COMM_TYPE_SHARED``), gives each rank
``threads_per_rank`` threads (default: the node's CPUs divided by its ranks, at
least 1, or ``SLURM_CPUS_PER_TASK`` inside a Slurm step) and, where the ranks
fit, a disjoint CPU set.  :func:`apply_layout` exports the thread variables
(effective only before NumPy loads, which is why the entry points call it
before importing anything heavy), pins the affinity and, once NumPy is loaded,
:func:`limit_loaded_pools` enforces the limit with threadpoolctl.

This module does not import NumPy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

#: Environment variables read by OpenMP and the BLAS/numexpr/numba runtimes
#: (joblib's ``MAX_NUM_THREADS_VARS``).
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


@dataclass
class RankLayout:
    """Where one rank runs and how many threads it may use."""

    rank: int
    host: str
    node: int
    local_rank: int
    local_size: int
    threads: int
    cpus: list[int]
    pinned: bool
    env_applied: bool = False
    pools: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)


def _available_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def default_threads(node_cpus: int, local_size: int) -> int:
    """Threads per rank when the user gave none: Slurm's ``--cpus-per-task`` or CPUs / ranks."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm and slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    return max(1, node_cpus // max(1, local_size))


def plan_layout(comm: MPI.Intracomm, threads_per_rank: int | None = None) -> RankLayout:
    """Decide this rank's threads and CPU set.  Collective over ``comm``.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        The communicator of the run.
    threads_per_rank : int, optional
        Explicit thread count; default see :func:`default_threads`.

    Returns
    -------
    RankLayout
        This rank's layout (each rank gets its own).
    """
    from hpcml.comm import HOST, node_comm

    node = node_comm(comm)
    local_rank, local_size = node.Get_rank(), node.Get_size()
    mine = _available_cpus()
    masks = node.allgather(mine)
    node_cpus = sorted(set().union(*masks))
    # Number the nodes: the lowest world rank on each node names it.
    leader = node.bcast(comm.Get_rank(), root=0)
    leaders = sorted(set(comm.allgather(leader)))
    node.Free()
    threads = threads_per_rank or default_threads(len(node_cpus), local_size)
    threads = max(1, int(threads))
    pinned = False
    cpus = mine
    # Pin only when every rank still sees the same mask (nobody bound them
    # already) and the ranks fit: oversubscribed ranks are better left to the
    # OS scheduler than stacked on fixed cores.
    if all(m == masks[0] for m in masks) and local_size * threads <= len(node_cpus):
        cpus = node_cpus[local_rank * threads : (local_rank + 1) * threads]
        pinned = True
    return RankLayout(
        rank=comm.Get_rank(),
        host=HOST,
        node=leaders.index(leader),
        local_rank=local_rank,
        local_size=local_size,
        threads=threads,
        cpus=cpus,
        pinned=pinned,
    )


def apply_layout(layout: RankLayout) -> RankLayout:
    """Export the thread variables and pin the affinity of this process.

    The variables only take effect for runtimes not loaded yet, so call this
    before importing NumPy; ``layout.env_applied`` records whether NumPy was
    still unloaded.  Already-loaded pools are limited by
    :func:`limit_loaded_pools`.
    """
    layout.env_applied = "numpy" not in sys.modules
    for var in THREAD_VARS:
        os.environ[var] = str(layout.threads)
    if layout.pinned:
        try:
            os.sched_setaffinity(0, layout.cpus)
        except (AttributeError, OSError):  # pragma: no cover - not Linux / not allowed
            layout.pinned = False
    return layout


def limit_loaded_pools(layout: RankLayout) -> RankLayout:
    """Limit every loaded OpenMP/BLAS pool with threadpoolctl and record what it sees."""
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=layout.threads)
    layout.pools = [
        {k: info.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "filepath")}
        for info in threadpool_info()
    ]
    return layout


def describe_layouts(layouts: list[dict[str, Any]]) -> str:
    """A table of per-rank layouts for ``--dry-run`` and the run report."""
    lines = [f"{'rank':>4} {'host':<16} {'node':>4} {'local':>5} {'threads':>7}  {'cpus':<12} blas/openmp"]
    for lay in layouts:
        pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in lay.get("pools", [])) or "-"
        cpus = _ranges(lay["cpus"]) + ("" if lay["pinned"] else " (unpinned)")
        lines.append(
            f"{lay['rank']:>4} {lay['host'][:16]:<16} {lay['node']:>4} "
            f"{lay['local_rank']:>2}/{lay['local_size']:<2} {lay['threads']:>7}  {cpus:<12} {pools}"
        )
    return "\n".join(lines)


def _ranges(cpus: list[int]) -> str:
    if not cpus:
        return "-"
    out, start, prev = [], cpus[0], cpus[0]
    for c in cpus[1:] + [None]:  # type: ignore[list-item]
        if c is not None and c == prev + 1:
            prev = c
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if c is not None:
            start = prev = c
    return ",".join(out)

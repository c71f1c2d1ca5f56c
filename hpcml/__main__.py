"""``python -m hpcml``: versions, the MPI library and the per-rank layout of this launch.

    mpiexec -n 4 python -m hpcml

Useful to check what a batch allocation gives you (hosts, ranks per node, CPUs
and BLAS/OpenMP threads per rank) before starting a long search.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Print the report on rank 0 (collective over ``COMM_WORLD``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hpcml", description=__doc__.splitlines()[0])
    parser.add_argument("--threads-per-rank", type=int, metavar="T", help="as for python -m hpcml.cv")
    args = parser.parse_args(argv)
    from mpi4py import MPI

    from hpcml.threads import apply_layout, describe_layouts, limit_loaded_pools, plan_layout

    comm = MPI.COMM_WORLD
    layout = apply_layout(plan_layout(comm, args.threads_per_rank))
    import numpy  # noqa: F401 - load BLAS so that threadpoolctl sees it

    limit_loaded_pools(layout)
    layouts = comm.gather(layout.as_dict(), root=0)
    if comm.Get_rank() == 0:
        from hpcml.cv.runner import _versions

        for name, version in _versions().items():
            print(f"{name:>14}  {version}")
        hosts = sorted({lay["host"] for lay in layouts})
        print(f"{'ranks':>14}  {comm.Get_size()} on {len(hosts)} node(s): {', '.join(hosts)}")
        print(f"{'thread level':>14}  {MPI.Query_thread()} (MULTIPLE={MPI.THREAD_MULTIPLE})")
        print(describe_layouts(layouts))
    return 0


if __name__ == "__main__":
    from hpcml.comm import run_guarded

    run_guarded(lambda: main(sys.argv[1:]))

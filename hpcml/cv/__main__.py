"""``python -m hpcml.cv``: MPI cross-validation and hyperparameter search from a TOML config.

    mpiexec -n N python -m hpcml.cv CONFIG.toml [--out DIR] [--threads-per-rank T]
                                    [--dry-run] [--quiet] [--resume | --overwrite]
                                    [--grace S] [--time-limit S]
    mpiexec -n N python -m hpcml.cv --demo [--out DIR]

Exit status: 0 done, 2 bad usage/config/data, 3 stopped early (resumable),
1 anything else.  Thread limits are applied before NumPy is imported, so this
module and everything it imports first must stay NumPy-free.
"""

from __future__ import annotations

import argparse
import sys

from hpcml.cliargs import Parser, check_out, check_seconds, launch_rank, parse_once
from hpcml.errors import UsageError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = Parser(
        prog="python -m hpcml.cv",
        description="MPI cross-validation and hyperparameter search over scikit-learn estimators.",
        epilog="Run under mpiexec/srun: every rank, rank 0 included, fits work units. "
        "Exit status: 0 done, 2 bad usage/config/data, 3 stopped early (resumable with --resume).",
    )
    parser.add_argument("config", nargs="?", help="search config (TOML)")
    parser.add_argument("--demo", action="store_true", help="run the built-in digits demo (SVC + LogisticRegression)")
    parser.add_argument("--out", help="output folder (default: [run] out, else hpcml-out; hpcml-demo for --demo)")
    parser.add_argument(
        "--threads-per-rank",
        type=int,
        metavar="T",
        help="BLAS/OpenMP threads per rank (default: SLURM_CPUS_PER_TASK, else the node's CPUs / its ranks)",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate config and data, print the plan, fit nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the search journaled in the output folder")
    group.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    parser.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="S",
        help="after SIGTERM/SIGINT/SIGUSR1, seconds running units may take to finish (default 60)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        metavar="S",
        help="stop starting units that would not finish within S seconds of the start",
    )
    args = parse_once(parser, argv)
    try:
        if args.demo == (args.config is not None):
            parser.error("give a CONFIG.toml or --demo (one of them)")
        if args.threads_per_rank is not None and args.threads_per_rank < 1:
            parser.error("--threads-per-rank must be at least 1")
        check_seconds(args.grace, "--grace")
        check_seconds(args.time_limit, "--time-limit", allow_zero=False)
        check_out(args.out)
        from hpcml._faults import check_env
        from hpcml.env import check_values

        check_env()  # HPCML_INJECT_FAULT, read once; malformed = usage error
        check_values()  # the other HPCML_* variables with a few allowed values
    except UsageError:
        if launch_rank() != 0:  # printed once, by rank 0
            raise SystemExit(2) from None
        raise
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point (every rank)."""
    from hpcml.startup import Startup

    startup = Startup()  # run.json's per-rank start-up breakdown
    args = parse_args(argv)
    from hpcml.signals import StopFlag

    stop = StopFlag()
    stop.install()  # before anything slow: a signal during imports or data loading is kept
    from mpi4py import MPI  # does not import NumPy

    startup.mark("mpi_init")
    from hpcml.threads import apply_layout, plan_layout

    comm = MPI.COMM_WORLD
    layout = apply_layout(plan_layout(comm, args.threads_per_rank))
    startup.mark("layout")

    from hpcml.cv.runner import Options, run

    startup.mark("imports")

    opts = Options(
        config=args.config,
        demo=args.demo,
        out=args.out,
        dry_run=args.dry_run,
        quiet=args.quiet,
        resume=args.resume,
        overwrite=args.overwrite,
        grace=args.grace,
        time_limit=args.time_limit,
        stop=stop,
        startup=startup,
    )
    return run(opts, layout, comm)


if __name__ == "__main__":
    from hpcml.comm import run_guarded

    run_guarded(lambda: main(sys.argv[1:]))

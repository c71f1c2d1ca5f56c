"""Command line: ``python -m hpcml.data {convert,synth,info}``.

``convert`` and ``info`` are serial and never load MPI; ``synth`` runs under
``mpiexec -n N`` (or alone).  Errors are one ``hpcml: error: ...`` line, exit 2.
``convert`` and ``synth`` refuse an existing output file unless ``--overwrite``
and write nothing with ``--dry-run`` (docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hpcml.cliargs import Parser, check_once, check_threads, parse_once
from hpcml.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m hpcml.data``."""
    p = Parser(prog="python -m hpcml.data", description="HDF5 data sets for hpcml.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    c = sub.add_parser("convert", help="convert .npy/.npz/.csv/.svmlight to hpcml HDF5 (streaming)")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--target", help="column holding y: header name or 0-based index (CSV default: last column)")
    c.add_argument("--dtype", default=None, help="float type of X (default: input's float type, else float64)")
    c.add_argument("--chunk-rows", type=int, default=None, help="rows per HDF5 chunk (default ~4 MiB)")
    c.add_argument("--format", dest="fmt", default=None, choices=["npy", "npz", "csv", "svmlight"])
    c.add_argument("--block-rows", type=int, default=65536, help="rows read per block (bounds memory)")
    c.add_argument(
        "--header",
        default="auto",
        choices=["auto", "yes", "no"],
        help="CSV first line names the columns (auto: a non-number field, or exactly 0,1,...,n-1)",
    )
    c.add_argument("--no-progress", action="store_true")
    c.add_argument("--text", default=None, metavar="COLUMN", help="CSV: keep this column as string X (documents)")
    _output_flags(c)

    s = sub.add_parser("synth", help="generate a synthetic data set in parallel (mpiexec -n N)")
    s.add_argument("output")
    s.add_argument("--n-samples", type=int, required=True)
    s.add_argument("--n-features", type=int, required=True)
    s.add_argument("--kind", default="classification", choices=["blobs", "classification", "regression"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-classes", type=int, default=None)
    s.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    s.add_argument("--block-rows", type=int, default=None)
    s.add_argument("--centers", default=None, help="blobs: .npy file of the cluster centres (n_clusters x n_features)")
    s.add_argument("--cluster-std", type=float, default=1.0, help="blobs: standard deviation of the clusters")
    s.add_argument("--json", action="store_true", help="print the timing summary as JSON")
    s.add_argument(
        "--threads-per-rank",
        type=int,
        metavar="T",
        help="BLAS/OpenMP threads per rank (default: SLURM_CPUS_PER_TASK, else the node's CPUs / its ranks)",
    )
    _output_flags(s)

    i = sub.add_parser("info", help="shape, dtype, chunking, class balance, NaN count")
    i.add_argument("file")
    i.add_argument("--X", dest="x_name", default="X")
    i.add_argument("--y", dest="y_name", default="y")
    i.add_argument("--json", action="store_true")
    return p


def _output_flags(p: argparse.ArgumentParser) -> None:
    """``--overwrite`` and ``--dry-run``, as every tool has them (docs/cli.md)."""
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (default: refuse)")
    p.add_argument("--dry-run", action="store_true", help="check the arguments and the input, write nothing")


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status."""
    args = parse_once(build_parser(), sys.argv[1:] if argv is None else argv)
    if args.command == "synth":
        check_once(lambda: check_threads(args.threads_per_rank))
    if args.command == "convert":
        return _convert(args)
    if args.command == "synth":
        return _synth(args)
    return _info(args)


def _convert(args: Any) -> int:
    from hpcml.data.convert import convert

    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be positive, got {args.chunk_rows}")
    if args.block_rows < 1:
        raise UsageError(f"--block-rows must be positive, got {args.block_rows}")
    try:
        import numpy as np

        dtype = None if args.dtype is None else np.dtype(args.dtype)
    except TypeError:
        raise UsageError(f"--dtype: unknown type '{args.dtype}'") from None
    result = convert(
        args.input,
        args.output,
        target=args.target,
        dtype=dtype,
        chunk_rows=args.chunk_rows,
        fmt=args.fmt,
        block_rows=args.block_rows,
        progress=False if args.no_progress else None,
        header=args.header,
        text=args.text,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(f"dry run: would convert {args.input} ({result['format']}) to {args.output}; nothing written")
        return 0
    kind = "text " if result.get("text") else "sparse " if result["sparse"] else ""
    print(f"wrote {args.output}: {result['rows']} x {result['features']} {kind}({result['format']} input)")
    return 0


def _synth(args: Any) -> int:
    from mpi4py import MPI

    from hpcml.threads import apply_layout, limit_loaded_pools, plan_layout

    layout = apply_layout(plan_layout(MPI.COMM_WORLD, args.threads_per_rank))
    from hpcml.data.synth import synth  # NumPy only now, after the thread limits

    limit_loaded_pools(layout)

    centers = None
    if args.centers is not None:
        import numpy as np

        try:
            centers = np.load(args.centers, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--centers: cannot read {args.centers} ({exc})") from None
    result = synth(
        args.output,
        args.n_samples,
        args.n_features,
        kind=args.kind,
        seed=args.seed,
        n_classes=args.n_classes,
        dtype=args.dtype,
        block_rows=args.block_rows,
        centers=centers,
        cluster_std=args.cluster_std,
        overwrite=args.overwrite,
        dry_run=args.dry_run,
    )
    if MPI.COMM_WORLD.Get_rank() == 0:
        if args.dry_run:
            print(
                f"dry run: would write {args.output}: {result['rows']} x {result['features']} {args.kind} "
                f"({result['bytes']} bytes in {result['blocks']} block(s) of {result['block_rows']} rows), "
                f"{result['ranks']} rank(s), {layout.threads} thread(s) per rank; nothing written"
            )
        elif args.json:
            print(json.dumps(result))
        else:
            gbs = result["bytes"] / max(result["seconds"], 1e-9) / 1e9
            print(
                f"wrote {args.output}: {result['rows']} x {result['features']} {args.kind} in "
                f"{result['seconds']:.2f} s ({gbs:.2f} GB/s, {result['ranks']} rank(s))"
            )
    return 0


def _info(args: Any) -> int:
    from hpcml.data.info import describe_file, format_info

    info = describe_file(args.file, X=args.x_name, y=args.y_name)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0

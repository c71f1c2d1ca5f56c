"""Command-line conventions shared by ``hpcml.cv``, ``hpcml.sgd`` and ``hpcml.data`` (docs/cli.md).

NumPy-free and MPI-free: parsing happens before the thread layout is applied
and before MPI starts.  Bad usage (an unknown flag included) is one
``hpcml: error: ...`` line and exit status 2, printed by the launch's rank 0
only: the rank is read from the launcher's environment, since MPI is not
initialised yet.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence

from hpcml.errors import UsageError

#: Environment variables that hold a process's rank, by launcher (first set wins).
RANK_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MPI_LOCALRANKID", "SLURM_PROCID")


def launch_rank() -> int:
    """The process's rank as the launcher set it in the environment (0 when not launched)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`hpcml.errors.UsageError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Raise :class:`UsageError` instead of printing the usage text and exiting."""
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_once(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; on bad usage rank 0 raises (and prints), the other ranks exit 2 silently.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Usually a :class:`Parser`.
    argv : sequence of str or None
        The arguments (``None``: ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
    """
    try:
        return parser.parse_args(argv)
    except UsageError:
        if launch_rank() != 0:
            raise SystemExit(2) from None
        raise


def check_seconds(value: float | None, flag: str, allow_zero: bool = True) -> None:
    """Refuse a negative, NaN or infinite number of seconds for ``flag``."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "positive"
        raise UsageError(f"{flag} must be a finite number of seconds, {bound}; got {value}")


def check_out(value: str | None) -> None:
    """Refuse an empty ``--out`` (it would silently mean the default folder) or an existing non-folder."""
    if value is None:
        return
    if not value.strip():
        raise UsageError("--out must name a folder, got an empty string")
    if os.path.exists(value) and not os.path.isdir(value):
        raise UsageError(f"--out {value}: exists and is not a folder")


def make_out_dir(folder: str) -> None:
    """Create the output folder; a file in the way or a read-only file system is a usage error (exit 2)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{folder}: output folder is a file") from None
    except OSError as exc:
        raise UsageError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{folder}: output folder is not writable")

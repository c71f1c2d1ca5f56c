"""Command-line conventions shared by ``hpcml.cv``, ``hpcml.sgd``, ``hpcml.cluster`` and ``hpcml.data`` (docs/cli.md).

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
from collections.abc import Callable, Sequence

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
    # a file made and removed, not os.access: root passes access() where the file system still refuses (sysfs,
    # root-squashed NFS, ACLs), and the run would fail at its first write, after the work (a traceback, exit 1)
    import tempfile

    try:
        handle, probe = tempfile.mkstemp(prefix=".hpcml-probe-", dir=folder)
    except OSError as exc:
        raise UsageError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from None
    os.close(handle)
    os.unlink(probe)


def config_path_value(value: str, config: str | None) -> str:
    """A path given in a config file: relative paths are relative to the config file's folder.

    The one rule of every tool (docs/cli.md): a path on the command line
    (``--out``) is relative to the working directory, a path in a config file
    (``[output] dir``, ``[run] out``, ``[data] path``) to the config file.  A
    config that is not a file (``None``, ``"<demo>"``) resolves against the
    working directory.
    """
    if config is None or config.startswith("<") or os.path.isabs(value):
        return value
    return os.path.join(os.path.dirname(os.path.abspath(config)), value)


def results_in(folder: str, names: Sequence[str]) -> list[str]:
    """The result files of ``names`` that exist in ``folder``."""
    return [name for name in names if os.path.exists(os.path.join(folder, name))]


def claim_out(folder: str, names: Sequence[str], overwrite: bool, create: bool = True) -> None:
    """Check (and create) an output folder; refuse one that holds results unless ``overwrite``.

    With ``overwrite`` the earlier results are removed first, so that a run
    failing half-way never leaves old and new files side by side.  Run on one
    rank (rank 0) inside :func:`hpcml.comm.agree`.

    Parameters
    ----------
    folder : str
        The output folder.
    names : sequence of str
        The tool's result files.
    overwrite : bool
        ``--overwrite`` was given.
    create : bool
        Create the folder (``False`` for ``--dry-run``, which writes nothing).

    Raises
    ------
    UsageError
        One line naming the folder, the files found and the flags (exit 2).
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{folder}: output folder is a file")
    present = results_in(folder, names) if os.path.isdir(folder) else []
    if present and not overwrite:
        raise UsageError(
            f"{folder}: output folder already holds results ({', '.join(present)}); "
            "use --overwrite to replace them or another --out"
        )
    if not create:
        return
    make_out_dir(folder)
    for name in present:
        os.unlink(os.path.join(folder, name))


def check_threads(value: int | None) -> None:
    """Refuse ``--threads-per-rank`` below 1."""
    if value is not None and value < 1:
        raise UsageError("--threads-per-rank must be at least 1")


def check_once(check: Callable[[], None]) -> None:
    """Run the argument checks ``check()`` before MPI starts; a :class:`UsageError` is printed by rank 0 only.

    The other ranks exit 2 silently (as :func:`parse_once`), so bad usage under
    ``mpiexec -n N`` is one line, not N.
    """
    try:
        check()
    except UsageError:
        if launch_rank() != 0:
            raise SystemExit(2) from None
        raise


def parse_tool_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check a tool's ``--out`` and ``--threads-per-rank``; bad usage is one line from rank 0 (exit 2)."""
    args = parse_once(parser, argv)

    def check() -> None:
        check_out(args.out)
        check_threads(args.threads_per_rank)

    check_once(check)
    return args

"""Shared test helpers: launching real ``mpiexec`` under a hard timeout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def mpiexec_path() -> str:
    """The ``mpiexec`` beside this Python (the PyPI ``mpich`` wheel) or on PATH."""
    here = Path(PYTHON).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        raise RuntimeError("mpiexec not found: pip install 'hpcml[mpich]' or load your MPI module")
    return found


def mpi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for launched ranks: no BLAS oversubscription, MPICH yields when idle."""
    env = dict(os.environ)
    env.setdefault("MPIR_CVAR_POLLS_BEFORE_YIELD", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("PYTEST_CURRENT_TEST", None)
    if extra:
        env.update(extra)
    return env


def run(
    args: list[str],
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; kill the whole group on timeout.

    A hang therefore fails the test (``subprocess.TimeoutExpired`` is re-raised
    with the output so far) instead of blocking CI.
    """
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=mpi_env(env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(args, timeout, output=out, stderr=err) from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def run_mpi(
    n: int,
    args: list[str],
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n n python ARGS...`` under :func:`run`."""
    return run([mpiexec_path(), "-n", str(n), PYTHON, *args], timeout=timeout, env=env, cwd=cwd)

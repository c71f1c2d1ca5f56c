"""Shared test helpers: launching real ``mpiexec`` under a hard timeout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


#: Seconds between a launch's own timeout and the end of the test's pytest-timeout budget.
MARGIN = 15.0
#: Processes started by :func:`start` in the running test (their groups are killed at its teardown).
_STARTED: list[subprocess.Popen[str]] = []
#: time.monotonic() by which the running test's launches must have ended (set by conftest.py).
_DEADLINE: list[float] = []


def begin_test(budget: float | None) -> None:
    """Called by conftest.py before each test: the test's pytest-timeout ``budget`` in seconds (None: none)."""
    _DEADLINE[:] = [] if not budget else [time.monotonic() + budget - MARGIN]


def end_test() -> None:
    """Called by conftest.py after each test: kill the process group of every launch still running."""
    while _STARTED:
        kill_group(_STARTED.pop())


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group of ``proc`` (started in its own session) and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def launch_timeout(timeout: float) -> float:
    """``timeout``, cut so that the launch ends before pytest-timeout would interrupt the test.

    A timeout of pytest-timeout itself would leave the launched process group
    running; a launch's own timeout kills it.  Fails if no time is left.
    """
    if not _DEADLINE:
        return timeout
    left = _DEADLINE[0] - time.monotonic()
    if left <= 1.0:
        raise RuntimeError(f"no time left in this test's pytest-timeout budget for a launch of {timeout} s")
    return min(timeout, left)


def start(
    args: list[str],
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.Popen[str]:
    """Start a command in its own process group (killed at the test's teardown if still running)."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=mpi_env(env),
        cwd=cwd,
        start_new_session=True,
    )
    _STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for ``proc`` at most ``timeout`` seconds (see :func:`launch_timeout`); kill its group if it hangs.

    A hang fails the test (``subprocess.TimeoutExpired`` is re-raised with the
    output so far) instead of blocking CI; so does any exception while waiting
    (pytest-timeout's included), after the group is killed.
    """
    timeout = launch_timeout(timeout)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if proc.returncode is not None and proc in _STARTED:
            _STARTED.remove(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(
    args: list[str],
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; kill the whole group on timeout (:func:`finish`)."""
    return finish(start(args, env=env, cwd=cwd), timeout)


def wait_until(condition, proc: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    """Poll ``condition()`` until it holds; fail if ``proc`` ends first or ``timeout`` passes.

    This waits for a *state* of the launched program (handlers installed, units
    journaled), never for a guessed time.
    """
    deadline = time.monotonic() + launch_timeout(timeout)
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"exited with {proc.returncode} before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling interval of the wait, not a stand-in for it


def journal_records(folder: Path, kind: str | None = None) -> list[dict]:
    """The records of ``folder``'s ``journal.jsonl`` (only those of type ``kind`` if given).

    A line still being written, or torn by a killed rank, is skipped, as ``--resume`` does.
    """
    path = folder / "journal.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if kind is None or record.get("type") == kind:
            records.append(record)
    return records


def ready_count(prefix: Path) -> int:
    """How many processes announced their signal handlers (``HPCML_READY_FILE=prefix``)."""
    return len(list(prefix.parent.glob(prefix.name + ".*")))


def run_mpi(
    n: int,
    args: list[str],
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n n python ARGS...`` under :func:`run`."""
    return run([mpiexec_path(), "-n", str(n), PYTHON, *args], timeout=timeout, env=env, cwd=cwd)

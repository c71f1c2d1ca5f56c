"""Per-rank start-up breakdown for run.json: where each rank's first seconds went.

A :class:`Startup` is created when an entry point's ``main`` starts and
:meth:`Startup.mark` closes one phase at a time (``mpi_init``, ``layout``,
``imports``, ``config``, ``data``, ``plan``).  ``interpreter`` is the time from
the process's creation (``/proc/self/stat``) to ``main``: the interpreter, the
site packages and the entry point's own imports.  Every mark also records
``len(sys.modules)``.

With ``HPCML_STARTUP_FILES=1`` an audit hook (:pep:`578`) also counts the file
system calls Python itself audits while the rank starts: ``open`` (source,
bytecode and data files: ``open``/``io.open_code``), ``os.listdir``/``os.scandir``
(the import system lists each ``sys.path`` directory once) and ``import``.
``stat`` calls are not audited; ``benchmarks/bench_startup.py`` counts every
file system call with ``strace -f -c`` instead.  The hook cannot be removed, so
it stops counting after the ``plan`` mark.

This module does not import NumPy.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

#: Environment variable: ``1`` counts audited file accesses during start-up.
ENV_FILES = "HPCML_STARTUP_FILES"
#: Phases in the order the entry points mark them.
PHASES = ("interpreter", "mpi_init", "layout", "imports", "config", "data", "plan")


def process_age() -> float | None:
    """Seconds since this process was created (Linux ``/proc``), or ``None``."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None


class Startup:
    """Phase timer of one rank (no MPI: the caller gathers :meth:`as_dict`).

    Parameters
    ----------
    count_files : bool, optional
        Count audited file accesses (default: ``HPCML_STARTUP_FILES=1``).
    """

    def __init__(self, count_files: bool | None = None) -> None:
        self._last = time.perf_counter()
        self.phases: dict[str, float] = {}
        self.modules: dict[str, int] = {}
        age = process_age()
        if age is not None:
            self.phases["interpreter"] = age
        self.modules["interpreter"] = len(sys.modules)
        if count_files is None:
            count_files = os.environ.get(ENV_FILES, "") in ("1", "true", "yes", "on")
        self.files: dict[str, int] | None = None
        self._counting = False
        if count_files:
            self.files = {"open": 0, "listdir": 0, "import": 0}
            self._counting = True
            sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._counting:
            return
        if event == "open":
            self.files["open"] += 1  # type: ignore[index]
        elif event in ("os.listdir", "os.scandir"):
            self.files["listdir"] += 1  # type: ignore[index]
        elif event == "import":
            self.files["import"] += 1  # type: ignore[index]

    def mark(self, phase: str) -> None:
        """Close ``phase``: the time since the previous mark (or since ``main``)."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self.modules[phase] = len(sys.modules)
        self._last = now
        if phase == "plan":
            self._counting = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``seconds`` per phase, ``total``, ``modules`` after each phase, ``files``."""
        out: dict[str, Any] = {
            "seconds": dict(self.phases),
            "total": sum(self.phases.values()),
            "modules": dict(self.modules),
        }
        if self.files is not None:
            out["files"] = dict(self.files)
        return out


def summarize(per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and max over ranks of every phase (for run.json's ``startup``).

    Parameters
    ----------
    per_rank : list of dict
        :meth:`Startup.as_dict` of every rank, in rank order.

    Returns
    -------
    dict
        ``{"median": {phase: s}, "max": {phase: s}, "slowest_rank": {phase: rank},
        "per_rank": per_rank}``.
    """
    phases = [p for p in (*PHASES, "total") if all(p in _flat(r) for r in per_rank)]
    median, maximum, slowest = {}, {}, {}
    for phase in phases:
        values = [_flat(r)[phase] for r in per_rank]
        ordered = sorted(values)
        mid = len(ordered) // 2
        median[phase] = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        maximum[phase] = ordered[-1]
        slowest[phase] = values.index(ordered[-1])
    return {"median": median, "max": maximum, "slowest_rank": slowest, "per_rank": per_rank}


def _flat(record: dict[str, Any]) -> dict[str, float]:
    return {**record["seconds"], "total": record["total"]}

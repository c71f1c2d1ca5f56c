"""Helpers shared by the cross-validation benchmarks (bench_dispatch/search/scale/pinning).

Nothing here imports NumPy at module level: ``--worker`` modes of the scripts
import this module inside MPI ranks before thread limits may matter.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = sys.executable


def mpiexec() -> str:
    """The ``mpiexec`` next to this Python (the venv's MPICH wheel), else the one on PATH."""
    local = os.path.join(os.path.dirname(PYTHON), "mpiexec")
    if os.path.exists(local):
        return local
    found = shutil.which("mpiexec")
    if not found:
        raise SystemExit("mpiexec not found")
    return found


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("hpcml", "numpy", "scipy", "sklearn", "joblib", "mpi4py", "threadpoolctl", "h5py"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001
            out[mod] = None
    try:
        from mpi4py import MPI  # noqa: PLC0415 - only to read the library version (no MPI_Init)

        out["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    except Exception:  # noqa: BLE001
        pass
    return out


def environment() -> dict[str, Any]:
    """What the run is measured on (call at start; :func:`finish` adds the end)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("MPIR_CVAR", "OMP_", "OPENBLAS", "MKL_", "HPCML_"))}
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_gib": _mem_gib(),
        "versions": versions(),
        "mpiexec": mpiexec(),
        "env": env,
        "loadavg_start": loadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv,
    }


def _mem_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001
        return None


def save_figure(fig: Any, doc: dict[str, Any], title: str, path: str) -> None:
    """Title a figure with the run's load average and write it to ``path``."""
    fig.suptitle(f"{title} (load {doc['environment']['loadavg_start']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def finish(doc: dict[str, Any], args: Any, plot: Any = None) -> None:
    """Draw ``--plot`` with ``plot(doc, path)``, add the end load average, print the JSON, write ``--json``."""
    if plot is not None and getattr(args, "plot", None):
        plot(doc, args.plot)
        doc["plot"] = args.plot
    doc["environment"]["loadavg_end"] = loadavg()
    doc["environment"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    text = json.dumps(doc, indent=2, default=_default)
    if getattr(args, "json", None):
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    print(text)


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def child_env(extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """Environment for subprocesses: benchmarks/ and the project on PYTHONPATH."""
    env = dict(os.environ)
    for k in drop:
        env.pop(k, None)
    path = [HERE, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env.update(extra or {})
    return env


def run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None, cwd: str | None = None
) -> tuple[float, str, str]:
    """Run ``cmd``; returns (process wall seconds, stdout, stderr).  Raises on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout, proc.stderr


def last_json(stdout: str) -> Any:
    """The JSON document on the last non-empty line of ``stdout``."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in output:\n{stdout[-2000:]}")


def busy_wait(seconds: float) -> None:
    """Spin (holding the GIL, like pure-Python work) for ``seconds``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def empty(_: Any = None) -> None:
    """An empty unit."""
    return None


def busy_1ms(_: Any = None) -> None:
    busy_wait(1e-3)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "all": [round(v, 6) for v in values],
    }


def write_digits(folder: str) -> str:
    """digits (1797 x 64) as hpcml HDF5 in ``folder``; returns the path."""
    from sklearn.datasets import load_digits

    from hpcml.data.h5 import write_dataset

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "digits.h5")
    if not os.path.exists(path):
        X, y = load_digits(return_X_y=True)
        write_dataset(path, X, y, source="benchmarks (sklearn.datasets.load_digits)")
    return path


def pin_blas_env(threads: int = 1) -> dict[str, str]:
    """Thread variables (hpcml's own list, joblib's ``MAX_NUM_THREADS_VARS``) set to ``threads``."""
    from hpcml.threads import THREAD_VARS

    return {v: str(threads) for v in THREAD_VARS}


def bar_walls(ax: Any, rows: dict[str, Any], process_label: str = "process wall") -> None:
    """Paired bars of the median process and search walls of each contender, labelled with their values."""
    names = list(rows)
    x = range(len(names))
    proc = [rows[n]["process_wall"]["median"] or 0 for n in names]
    srch = [rows[n]["search_wall"]["median"] or 0 for n in names]
    ax.bar([i - 0.2 for i in x], proc, 0.4, label=process_label, color="tab:gray")
    ax.bar([i + 0.2 for i in x], srch, 0.4, label="search wall", color="tab:blue")
    for i, (a, b) in enumerate(zip(proc, srch)):
        ax.text(i - 0.2, a, f"{a:.1f}", ha="center", va="bottom", fontsize=8)
        ax.text(i + 0.2, b, f"{b:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), names)
    ax.set_ylabel("seconds (median)")

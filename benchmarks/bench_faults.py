"""Fault table for the reliability report: inject each fault into a 4-rank search, time the exit, resume.

    python benchmarks/bench_faults.py [--dir DIR] > benchmarks/results/faults.json

Uses the same injections as tests/launch/test_faults.py (``HPCML_INJECT_FAULT``, signals
to mpiexec, SIGKILL of one rank) on the same 75-unit search.  Prints JSON; the markdown
table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "launch")]

from cvfixtures import write_config, write_digits  # noqa: E402
from helpers import PYTHON, mpi_env, mpiexec_path  # noqa: E402
from test_faults import N_UNITS, SLOW, _journal_units, _rank_pids  # noqa: E402

RANKS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hpcml-faults-"))
    tmp.mkdir(parents=True, exist_ok=True)
    write_digits(tmp / "digits.h5", n=1797)
    cfg = write_config(tmp / "s.toml", SLOW)

    def start(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        cmd = [mpiexec_path(), "-n", str(RANKS), PYTHON, "-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"]
        return subprocess.Popen(
            [*cmd, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=mpi_env(env),
            start_new_session=True,
        )

    def results(out: Path) -> dict:
        return json.loads((out / "cv_results.json").read_text())

    t = time.monotonic()
    start(tmp / "ref").communicate(timeout=300)
    base = time.monotonic() - t
    reference = results(tmp / "ref")

    def same(out: Path) -> str:
        ours = results(out)
        return "y" if all(ours[k] == v for k, v in reference.items() if "time" not in k) else "n"

    def wait_units(out: Path, count: int, proc: subprocess.Popen) -> None:
        while len(_journal_units(out)) < count:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)

    def resume(out: Path) -> tuple[int, list[int]]:
        proc = start(out, "--resume")
        proc.communicate(timeout=300)
        return proc.returncode, _journal_units(out)

    rows = []
    for point in ("load", "unit", "worker"):
        t = time.monotonic()
        proc = start(tmp / point, env={"HPCML_INJECT_FAULT": f"{point}:2"})
        _, err = proc.communicate(timeout=120)
        line = next((ln for ln in err.splitlines() if ln.startswith("hpcml: error")), "")
        rows.append(
            (
                f"exception on rank 2 ({point})",
                f"exit {proc.returncode}; {line[:100]}",
                f"{time.monotonic() - t:.1f} s after launch",
                "-",
                "-",
            )
        )
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        out = tmp / sig.name
        proc = start(out)
        wait_units(out, 15, proc)
        t = time.monotonic()
        proc.send_signal(sig)
        proc.communicate(timeout=120)
        took = time.monotonic() - t
        first = _journal_units(out)
        code, units = resume(out)
        complete = sorted(units) == list(range(N_UNITS))
        rows.append(
            (
                f"{sig.name} to mpiexec mid-run",
                f"exit {proc.returncode}, {len(first)}/{N_UNITS} units journaled; --resume exit {code}",
                f"{took:.1f} s after the signal",
                f"{len(units) - len(set(units))} recomputed",
                same(out) if complete else "n",
            )
        )
    out = tmp / "kill"
    proc = start(out)
    wait_units(out, 15, proc)
    pids = _rank_pids(proc.pid)
    t = time.monotonic()
    os.kill(pids[2], signal.SIGKILL)
    proc.communicate(timeout=120)
    took = time.monotonic() - t
    first = _journal_units(out)
    code, units = resume(out)
    rows.append(
        (
            "SIGKILL of rank 2 mid-run",
            f"exit {proc.returncode}, {len(first)} units journaled; --resume exit {code}",
            f"{took:.1f} s after the kill",
            f"{len(units) - len(set(units))} recomputed",
            same(out),
        )
    )
    out = tmp / "timelimit"
    proc = start(out, "--time-limit", "2")
    proc.communicate(timeout=120)
    wall = json.loads((out / "run.json").read_text())["wall_seconds"]
    first = _journal_units(out)
    code, units = resume(out)
    rows.append(
        (
            "--time-limit 2",
            f"exit {proc.returncode}, {len(first)} units; --resume exit {code}",
            f"run stopped after {wall:.1f} s",
            f"{len(units) - len(set(units))} recomputed",
            same(out),
        )
    )

    print(f"uninterrupted run at {RANKS} ranks: {base:.1f} s", file=sys.stderr)
    print("| fault | what happened | time to exit | units lost / recomputed | results equal |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for row in rows:
        print("| " + " | ".join(row) + " |", file=sys.stderr)
    keys = ("fault", "what_happened", "time_to_exit", "units_recomputed", "results_equal")
    doc = {
        "benchmark": "faults",
        "ranks": RANKS,
        "units": N_UNITS,
        "uninterrupted_seconds": base,
        "loadavg": os.getloadavg(),
        "rows": [dict(zip(keys, row)) for row in rows],
    }
    print(json.dumps(doc, indent=1))
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

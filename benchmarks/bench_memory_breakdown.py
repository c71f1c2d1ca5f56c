"""Where the peak memory of bench_memory.py's search goes: PSS per process and per mapping kind at the peak.

Runs the same search as ``bench_memory.py`` (same config, same scikit-learn
script) once with hpcml (``mpiexec -n RANKS``, the layout's environment,
``[run] refit = false`` like the scikit-learn run) and once with scikit-learn
``n_jobs=1``.  A monitor reads ``/proc/PID/smaps`` of the launcher and all its
descendants every 0.1 s and keeps the sample with the largest total PSS; for
it, each process's PSS is split into ``anon`` (heap and anonymous mappings:
arrays), ``dev/shm`` (MPI shared windows, node-shared folds), ``memfd``
(per-rank copy-on-write folds) and ``other`` (libraries).  Prints JSON (GB),
with the load average (the machine may be shared), and writes it to ``--json``.

Example::

    python benchmarks/bench_memory_breakdown.py --estimator ridge --gb 0.24 --n-features 250 \\
        --layout node-folds --json benchmarks/results/memory_breakdown_ridge.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from bench_memory import CONFIG, ESTIMATORS, LAYOUTS, SKLEARN  # noqa: E402


def kind(path: str) -> str:
    """The mapping kind of a smaps path."""
    if path.startswith("/dev/shm/"):
        return "dev/shm"
    if path.startswith("/memfd:"):
        return "memfd"
    if path in ("", "[heap]", "[anon]") or path.startswith("[anon:"):
        return "anon"
    return "other"


def smaps_pss(pid: int) -> Counter:
    """PSS bytes of ``pid`` per mapping kind (empty if the process is gone)."""
    out: Counter = Counter()
    name = ""
    try:
        with open(f"/proc/{pid}/smaps") as fh:
            for line in fh:
                parts = line.split()
                if parts and not parts[0].endswith(":"):  # a mapping's header line
                    name = parts[5] if len(parts) > 5 else ""
                elif parts and parts[0] == "Pss:":
                    out[kind(name)] += int(parts[1]) * 1024
    except OSError:
        pass
    return out


def peak_breakdown(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run ``cmd``; the per-process, per-kind PSS (GB) of the sample with the largest total."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    root = psutil.Process(proc.pid)
    best: dict[str, Counter] = {}
    best_total = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        sample = {f"{p.pid} {p.name()}": smaps_pss(p.pid) for p in procs if p.is_running()}
        total = sum(sum(c.values()) for c in sample.values())
        if total > best_total:
            best_total, best = total, sample
        if time.perf_counter() - start > timeout:
            os.killpg(proc.pid, 9)
            raise TimeoutError(" ".join(cmd))
        time.sleep(0.1)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.strip()[-500:]}")
    processes = {
        name: {k: round(v / 1e9, 4) for k, v in sorted(c.items())} for name, c in best.items() if sum(c.values()) > 1e7
    }
    return {"peak_pss_gb": best_total / 1e9, "seconds": time.perf_counter() - start, "processes": processes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=0.24, help="size of X in GB (float64)")
    p.add_argument("--n-features", type=int, default=250)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--layout", default="node-folds", choices=sorted(LAYOUTS))
    p.add_argument("--estimator", default="ridge", choices=sorted(ESTIMATORS))
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", default=None, metavar="FILE.json")
    p.add_argument("--plot", default=None, metavar="FILE.png")
    args = p.parse_args()
    doc: dict = {"benchmark": "memory_breakdown", "environment": C.environment(), "params": vars(args).copy()}
    mpiexec = C.mpiexec()
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1")
    for key in ("HPCML_FOLD_COPIES", "HPCML_SHARED_MEMORY"):
        env.pop(key, None)
    tmp = tempfile.mkdtemp()
    try:
        data = os.path.join(tmp, "data.h5")
        n = int(args.gb * 1e9 / (8 * args.n_features))
        synth = ["-m", "hpcml.data", "synth", data, "--n-samples", str(n), "--n-features", str(args.n_features)]
        subprocess.run([mpiexec, "-n", "2", sys.executable, *synth, "--kind", "classification"], env=env, check=True)
        config = os.path.join(tmp, "search.toml")
        text = CONFIG.format(path=data, model=ESTIMATORS[args.estimator][0]).replace(
            "[scoring]", "[run]\nrefit = false\n\n[scoring]"
        )
        with open(config, "w") as fh:
            fh.write(text)
        script = os.path.join(tmp, "sk.py")
        with open(script, "w") as fh:
            fh.write(SKLEARN.format(model=ESTIMATORS[args.estimator][1]))
        out = os.path.join(tmp, "out")
        cmd = [mpiexec, "-n", str(args.ranks), sys.executable, "-m", "hpcml.cv", config, "--out", out, "--quiet"]
        layout_env = dict(env, **LAYOUTS[args.layout])
        results = {
            f"hpcml -n {args.ranks} {args.layout}": peak_breakdown(cmd, layout_env, args.timeout),
            "sklearn n_jobs=1": peak_breakdown([sys.executable, script, data, "1"], env, args.timeout),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    x_gb = n * args.n_features * 8 / 1e9
    doc.update({"x_gb": x_gb, "train_fold_gb": x_gb * 2 / 3, "results": results})
    hp, sk = (r["peak_pss_gb"] for r in results.values())
    doc["ratio_hpcml_over_sklearn_j1"] = hp / sk
    doc["environment"]["loadavg_end"] = list(os.getloadavg())
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    if args.plot:
        plot(doc, args.plot)


def plot(doc: dict, path: str) -> None:
    """One stacked bar per process (PSS by mapping kind at the run's peak), the runs side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (f"{run}\n{name.split()[1]} {name.split()[0]}", parts)
        for run, r in doc["results"].items()
        for name, parts in r["processes"].items()
    ]
    fig, ax = plt.subplots(figsize=(2.2 * len(bars) + 2, 4.5))
    bottom = [0.0] * len(bars)
    for k in ("anon", "dev/shm", "memfd", "other"):
        heights = [parts.get(k, 0.0) for _, parts in bars]
        ax.bar(range(len(bars)), heights, bottom=bottom, label=k)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xticks(range(len(bars)), [label for label, _ in bars], fontsize=7)
    ax.set_ylabel("PSS at the run's peak (GB)")
    ax.set_title(
        f"{doc['params']['estimator']}, X = {doc['x_gb']:.2f} GB (load {doc['environment']['loadavg_end'][0]:.1f})"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

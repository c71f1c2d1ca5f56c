"""Dispatch overhead of hpcml's scheduler (``hpcml.cv.schedule.run_units``) vs its peers.

    python benchmarks/bench_dispatch.py [--units 10000] [--busy-units 4000] [--repeats 3]
                                        [--yield-variant] [--plot FILE.png] [--json FILE.json]

Two workloads on 2 workers:

* ``empty``: ``--units`` empty units -> units per second (pure dispatch cost);
* ``busy``: ``--busy-units`` units that each busy-wait ``--busy-ms`` (holding the
  GIL, like pure-Python work) -> efficiency = ideal / wall with
  ideal = units x busy-ms / 2.

Contenders, all measured in this one script run, interleaved ``--repeats`` times:

* ``hpcml``: ``mpiexec -n 2``; ``run_units`` with a ``UnitQueue`` (rank 0 works too);
* ``loky_auto``: ``joblib.Parallel(n_jobs=2, backend="loky")`` (auto batching);
* ``loky_b1``: the same with ``batch_size=1``;
* ``mpi4py_futures``: ``mpiexec -n 3 python -m mpi4py.futures`` (1 master + 2 workers),
  ``executor.map(f, range(n), chunksize=1)``;
* ``static_ideal``: two independent Python processes running n/2 units each,
  no communication -- the ideal under the machine's current load (other users);
  ``busy_efficiency_vs_static`` = its wall / a contender's wall in the same repetition;
* optional engine experiments (not in the default set): ``hpcml:inline``
  (``run_units(..., threaded=False)``: rank 0 answers requests between its own
  units) and ``hpcml:si0.0005`` (``sys.setswitchinterval(0.0005)`` on every rank
  before ``run_units``);
* ``bare_mpi``: ``mpiexec -n 2``; a hand-written request/reply loop, one unit per
  message, blocking receives on the worker, rank 0 serving inline between its
  own units (the floor).

Pools are warmed up (one small map / run) before the timed call, so process
start-up is excluded for every contender; MPI process start-up is reported
separately as ``process_wall``.  MPI runs use the caller's environment (MPICH
defaults); ``--yield-variant`` repeats the MPI contenders with
``MPIR_CVAR_POLLS_BEFORE_YIELD=1`` for comparison.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SCRIPT = os.path.abspath(__file__)


# --------------------------------------------------------------------------- workers (inside MPI)
def _work(kind: str, busy_ms: float):
    if kind == "empty":
        return C.empty
    if busy_ms == 1.0:
        return C.busy_1ms
    return lambda _u: C.busy_wait(busy_ms / 1000.0)


def worker_hpcml(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from hpcml.cv.schedule import UnitQueue, run_units

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    out = {"contender": "hpcml", "ranks": size, "thread_level": MPI.Query_thread()}
    threaded = None
    if args.variant == "inline":  # experiment: dispatcher polled by the main thread between units
        threaded = False
    elif args.variant.startswith("si"):  # experiment: shorter GIL switch interval, e.g. si0.0005
        sys.setswitchinterval(float(args.variant[2:]))
    out["variant"] = args.variant or None
    for kind, n in (("empty", args.units), ("busy", args.busy_units)):
        work = _work(kind, args.busy_ms)
        # warm-up (thread creation, Dup, first messages)
        run_units(comm, work, queue=UnitQueue([], range(4 * size), size) if rank == 0 else None, threaded=threaded)
        comm.Barrier()
        t0 = time.perf_counter()
        queue = UnitQueue([], range(n), size) if rank == 0 else None
        report = run_units(comm, work, queue=queue, threaded=threaded)
        wall = time.perf_counter() - t0
        units_done = comm.gather(len(report.results) if rank == 0 else 0, root=0)
        if rank == 0:
            assert units_done[0] == n, units_done
            out[kind] = {
                "n": n,
                "wall": wall,
                "messages": report.messages,
                "busy": report.busy,
                "units_per_rank": report.units_done,
                "inline_dispatch": report.inline_dispatch,
            }
    if rank == 0:
        print(__import__("json").dumps(out), flush=True)


def worker_bare(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    out = {"contender": "bare_mpi", "ranks": size}
    REQ, WORK = 1, 2
    for kind, n in (("empty", args.units), ("busy", args.busy_units)):
        work = _work(kind, args.busy_ms)
        comm.Barrier()
        t0 = time.perf_counter()
        per_rank = [0] * size
        if rank == 0:
            status = MPI.Status()
            nxt, active, results = 0, size - 1, 0
            while nxt < n or active:
                while comm.Iprobe(source=MPI.ANY_SOURCE, tag=REQ, status=status):
                    src = status.Get_source()
                    res = comm.recv(source=src, tag=REQ)
                    if res is not None:
                        results += 1
                        per_rank[src] += 1
                    if nxt < n:
                        comm.send(nxt, dest=src, tag=WORK)
                        nxt += 1
                    else:
                        comm.send(-1, dest=src, tag=WORK)
                        active -= 1
                if nxt < n:
                    work(nxt)
                    nxt += 1
                    results += 1
                    per_rank[0] += 1
        else:
            res = None
            while True:
                comm.send(res, dest=0, tag=REQ)
                unit = comm.recv(source=0, tag=WORK)
                if unit < 0:
                    break
                work(unit)
                res = (unit, None)
        comm.Barrier()
        wall = time.perf_counter() - t0
        if rank == 0:
            assert results == n, (results, n)
            out[kind] = {"n": n, "wall": wall, "units_per_rank": per_rank}
    if rank == 0:
        print(__import__("json").dumps(out), flush=True)


def worker_futures(args: argparse.Namespace) -> None:
    from mpi4py.futures import MPIPoolExecutor

    out = {"contender": "mpi4py_futures"}
    with MPIPoolExecutor() as ex:
        out["workers"] = ex.num_workers
        list(ex.map(C.empty, range(16), chunksize=1))  # warm-up
        for kind, n in (("empty", args.units), ("busy", args.busy_units)):
            f = C.empty if kind == "empty" else C.busy_1ms
            assert kind == "empty" or args.busy_ms == 1.0, "futures worker supports --busy-ms 1 only"
            t0 = time.perf_counter()
            got = list(ex.map(f, range(n), chunksize=1))
            wall = time.perf_counter() - t0
            assert len(got) == n
            out[kind] = {"n": n, "wall": wall}
    print(__import__("json").dumps(out), flush=True)


# --------------------------------------------------------------------------- driver
def run_loky(args: argparse.Namespace, batch_size) -> dict:
    from joblib import Parallel, delayed

    out = {"contender": "loky_auto" if batch_size == "auto" else f"loky_b{batch_size}"}
    with Parallel(n_jobs=2, backend="loky", batch_size=batch_size) as par:
        par(delayed(C.empty)(i) for i in range(16))  # warm-up: start the workers
        for kind, n in (("empty", args.units), ("busy", args.busy_units)):
            f = C.empty if kind == "empty" else C.busy_1ms
            t0 = time.perf_counter()
            got = par(delayed(f)(i) for i in range(n))
            wall = time.perf_counter() - t0
            assert len(got) == n
            out[kind] = {"n": n, "wall": wall}
    return out


def run_static(args: argparse.Namespace) -> dict:
    """Two independent processes, n/2 units each, no communication: the ideal under the current load."""
    import subprocess

    out = {"contender": "static_ideal"}
    for kind, n in (("empty", args.units), ("busy", args.busy_units)):
        f = "empty" if kind == "empty" else "busy_1ms"
        code = (
            "import sys, time; sys.path.insert(0, %r); import _common as C; n = %d; t = time.perf_counter()\n"
            "for i in range(n): C.%s(i)\nprint(time.perf_counter() - t)"
        ) % (C.HERE, n // 2, f)
        procs = [subprocess.Popen([C.PYTHON, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
        walls = [float(p.communicate()[0]) for p in procs]
        out[kind] = {"n": n, "wall": max(walls), "walls": walls}
    return out


def run_mpi(args: argparse.Namespace, contender: str, extra_env: dict | None = None) -> dict:
    common = ["--units", str(args.units), "--busy-units", str(args.busy_units), "--busy-ms", str(args.busy_ms)]
    if contender == "mpi4py_futures":
        cmd = [C.mpiexec(), "-n", "3", C.PYTHON, "-m", "mpi4py.futures", SCRIPT, "--worker", "futures"] + common
    else:
        name = {"bare_mpi": "bare"}.get(contender, "hpcml")
        variant = contender.split(":", 1)[1] if ":" in contender else ""
        cmd = [C.mpiexec(), "-n", "2", C.PYTHON, SCRIPT, "--worker", name] + common
        if variant:
            cmd += ["--variant", variant]
    wall, stdout, _ = C.run(cmd, env=C.child_env(extra_env), timeout=args.timeout)
    doc = C.last_json(stdout)
    doc["process_wall"] = wall
    if ":" in contender:
        doc["contender"] = contender
    doc["command"] = " ".join(os.path.relpath(c) if c == SCRIPT else c for c in cmd)
    if extra_env:
        doc["contender"] += "+yield"
        doc["extra_env"] = extra_env
    return doc


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["results"]
    names = list(rows)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    ups = [rows[n]["empty_units_per_s"]["median"] for n in names]
    eff = [rows[n]["busy_efficiency"]["median"] for n in names]
    colors = ["tab:red" if n.startswith("hpcml") else "tab:gray" for n in names]
    a1.barh(names, ups, color=colors)
    a1.set_xscale("log")
    a1.set_xlabel("units / s (log)")
    a1.set_title(f"{doc['params']['units']} empty units, 2 workers")
    for i, v in enumerate(ups):
        a1.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
    effs = [rows[n].get("busy_efficiency_vs_static", {}).get("median", float("nan")) for n in names]
    ys = range(len(names))
    a2.barh([y - 0.2 for y in ys], eff, 0.4, color=colors, label="ideal (n x t / 2) / wall")
    a2.barh(
        [y + 0.2 for y in ys], effs, 0.4, color=colors, alpha=0.45, hatch="//", label="static 2-process wall / wall"
    )
    a2.set_yticks(list(ys), names)
    a2.axvline(0.95, color="k", ls="--", lw=0.8)
    a2.set_xlim(0, 1.25)
    a2.set_xlabel("efficiency")
    a2.legend(fontsize=7, loc="lower right")
    a2.set_title(f"{doc['params']['busy_units']} x {doc['params']['busy_ms']} ms busy units, 2 workers")
    for i, (v, w) in enumerate(zip(eff, effs)):
        a2.text(v, i - 0.2, f" {v:.3f}", va="center", fontsize=7)
        a2.text(w, i + 0.2, f" {w:.3f}", va="center", fontsize=7)
    C.save_figure(fig, doc, f"bench_dispatch, median of {doc['params']['repeats']}", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=10_000, help="empty units (default 10000)")
    p.add_argument("--busy-units", type=int, default=4000, help="busy units (default 4000)")
    p.add_argument("--busy-ms", type=float, default=1.0, help="busy-wait per busy unit, ms (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--contenders", default="hpcml,loky_auto,loky_b1,mpi4py_futures,bare_mpi,static_ideal")
    p.add_argument(
        "--yield-variant", action="store_true", help="also run the MPI contenders with MPIR_CVAR_POLLS_BEFORE_YIELD=1"
    )
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    p.add_argument("--worker", choices=["hpcml", "bare", "futures"], help=argparse.SUPPRESS)
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        {"hpcml": worker_hpcml, "bare": worker_bare, "futures": worker_futures}[args.worker](args)
        return

    doc = {
        "benchmark": "dispatch",
        "environment": C.environment(),
        "params": {
            "units": args.units,
            "busy_units": args.busy_units,
            "busy_ms": args.busy_ms,
            "repeats": args.repeats,
            "workers": 2,
        },
    }
    contenders = args.contenders.split(",")
    plan = [(c, None) for c in contenders]
    if args.yield_variant:
        plan += [
            (c, {"MPIR_CVAR_POLLS_BEFORE_YIELD": "1"})
            for c in contenders
            if c in ("hpcml", "bare_mpi", "mpi4py_futures")
        ]
    raw: dict[str, list[dict]] = {}
    for rep in range(args.repeats):
        for name, extra in plan:
            if name == "static_ideal":
                r = run_static(args)
            elif name.startswith("loky"):
                r = run_loky(args, "auto" if name == "loky_auto" else 1)
            else:
                r = run_mpi(args, name, extra)
            print(
                f"[rep {rep}] {r['contender']}: empty {r['empty']['wall']:.3f} s, busy {r['busy']['wall']:.3f} s",
                file=sys.stderr,
                flush=True,
            )
            raw.setdefault(r["contender"], []).append(r)
    ideal = args.busy_units * args.busy_ms / 1000.0 / 2
    results = {}
    for name, runs in raw.items():
        results[name] = {
            "empty_wall": C.summary([r["empty"]["wall"] for r in runs]),
            "empty_units_per_s": C.summary([args.units / r["empty"]["wall"] for r in runs]),
            "busy_wall": C.summary([r["busy"]["wall"] for r in runs]),
            "busy_efficiency": C.summary([ideal / r["busy"]["wall"] for r in runs]),
        }
        if "static_ideal" in raw:  # the same units split statically over 2 processes, same repetition
            results[name]["busy_efficiency_vs_static"] = C.summary(
                [raw["static_ideal"][i]["busy"]["wall"] / r["busy"]["wall"] for i, r in enumerate(runs)]
            )
        if "process_wall" in runs[0]:
            results[name]["process_wall"] = C.summary([r["process_wall"] for r in runs])
            results[name]["command"] = runs[0]["command"]
    # ratios per repetition (same repetition = closest in time), then median
    ratios = {}
    reps = range(args.repeats)

    def per_rep(a: str, b: str, kind: str) -> dict | None:
        if a not in raw or b not in raw:
            return None
        return C.summary([raw[b][i][kind]["wall"] / raw[a][i][kind]["wall"] for i in reps])

    for other in raw:
        if other != "hpcml":
            ratios[f"empty_speedup_hpcml_vs_{other}"] = per_rep("hpcml", other, "empty")
            ratios[f"busy_speedup_hpcml_vs_{other}"] = per_rep("hpcml", other, "busy")
    doc["ideal_busy_seconds"] = ideal
    doc["results"] = results
    doc["ratios"] = {k: v for k, v in ratios.items() if v}
    doc["goals"] = {
        "hpcml_units_per_s_ge_loky_auto": results.get("hpcml", {}).get("empty_units_per_s", {}).get("median", 0)
        >= results.get("loky_auto", {}).get("empty_units_per_s", {}).get("median", float("inf")),
        "hpcml_busy_efficiency_ge_0.95": results.get("hpcml", {}).get("busy_efficiency", {}).get("median", 0) >= 0.95,
        "hpcml_busy_efficiency_vs_static_ge_0.95": results.get("hpcml", {})
        .get("busy_efficiency_vs_static", {})
        .get("median", 0)
        >= 0.95,
    }
    doc["raw"] = raw
    C.finish(doc, args, plot=plot)


if __name__ == "__main__":
    main()

"""Rank 0's service rate under many workers, and the per-request cost: inputs of benchmarks/scale_model.py.

    python benchmarks/bench_dispatch_scale.py [--flood-units 20000] [--ranks 2,8,64]
                                              [--sleep-units 0.01,0.1,1.0] [--plot FILE.png] [--json FILE.json]
    python benchmarks/bench_dispatch_scale.py --hierarchy [--cliques 8] [--hier-ranks 64]
                                              [--flood-units 5000] [--json FILE.json]

Every scenario is ``mpiexec -n N python benchmarks/bench_dispatch_scale.py --worker ...``
running hpcml's real scheduler (:func:`hpcml.cv.schedule.run_units` with a
:class:`~hpcml.cv.schedule.UnitQueue`), with rank 0's
``_Dispatcher.poll`` timed from inside (wall and *thread CPU* time of every
request it answers: the CPU time is what rank 0 spends per request whatever
else shares the cores) and the CLI's own ``on_results`` work (a real
``journal.jsonl`` append and the progress bookkeeping) when ``journal`` is on.

* ``flood``: N ranks, ``--flood-units`` empty units, one unit per batch
  (``target_batch_seconds=0``): every worker asks as fast as it can, so rank 0 is
  saturated; reports requests answered per second and the per-request cost.
  At N = 64 on this 2-core machine the workers also compete for the cores, so
  the request rate is a lower bound; the per-request thread CPU time is not.
* ``sleep``: N ranks, 10 units per rank of ``time.sleep(t)`` (no CPU, so 64
  oversubscribed ranks behave like 64 cores for dispatch): efficiency =
  ``10 t / wall`` of ``run_units``, batch sizes and messages per unit.  These are
  measured points the model must reproduce.

``--hierarchy`` runs ``flood`` and ``sleep`` (0.01 s and 0.1 s units) at
``--hier-ranks`` ranks in ``--cliques`` emulated nodes (``MPIR_CVAR_NUM_CLIQUES``)
with flat and with hierarchical dispatch (:mod:`hpcml.cv.hierarchy`): requests
rank 0 answered (``requests``; of them from node leaders: ``leader_requests``)
and the fraction of the wall time rank 0 spent answering them.

Peers of rank 0's dispatcher at scale are not run here (mpi4py.futures and loky
are measured side by side in benchmarks/bench_dispatch.py).  The machine is
shared: ``os.getloadavg()`` is recorded before every scenario.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SCRIPT = os.path.abspath(__file__)


# --------------------------------------------------------------------------- inside MPI
def _timed_poll(stats: dict[str, float]):  # noqa: ANN202
    from hpcml.cv import schedule

    original = schedule._Dispatcher.poll

    def poll(self):  # noqa: ANN001, ANN202
        w0, c0 = time.perf_counter(), time.thread_time()
        served = original(self)
        if served:
            stats["wall"] += time.perf_counter() - w0
            stats["cpu"] += time.thread_time() - c0
            stats["n"] += 1
            if type(self).__name__ == "_RootDispatcher":  # hierarchical: a node leader's request
                stats["leader_n"] += 1
        return served

    schedule._Dispatcher.poll = poll


def _on_results(folder: str):  # noqa: ANN202
    """The CLI's per-request bookkeeping: one journal line per unit, flushed per batch; progress."""
    from hpcml.cv.journal import Journal
    from hpcml.cv.progress import Progress

    journal = Journal(folder, {"bench": "dispatch_scale"})
    progress = Progress(1, 0, 1, "score", enabled=False)

    def on_results(source: int, items: list) -> None:
        records = [
            {
                "unit": u,
                "cand": u,
                "split": 0,
                "model": "m",
                "params": {"C": 1.0},
                "test_scores": {"score": 0.5},
                "fit_time": s,
                "score_time": 0.0,
                "rank": source,
                "host": "h",
                "seconds": s,
                "time": time.time(),
            }
            for u, _, s in items
        ]
        journal.append(records)
        progress.update([(r["cand"], 0.5, "m") for r in records])

    return on_results, journal


def pingpong(comm, n: int) -> float:  # noqa: ANN001
    """Round trip of a small pickled request and its reply, both sides waiting as hpcml does (Iprobe + Backoff)."""
    from hpcml.comm import Backoff

    def wait(source: int, tag: int) -> None:
        backoff = Backoff()
        while not comm.Iprobe(source=source, tag=tag):
            backoff.sleep()

    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(n):
        if comm.Get_rank() == 1:
            comm.send(([], None, False), dest=0, tag=11)
            wait(0, 12)
            comm.recv(source=0, tag=12)
        elif comm.Get_rank() == 0:
            wait(1, 11)
            comm.recv(source=1, tag=11)
            comm.send((1, [7], False), dest=1, tag=12)
    return (time.perf_counter() - t0) / n


def worker(args: argparse.Namespace) -> None:
    from mpi4py import MPI

    from hpcml.cv.schedule import UnitQueue, run_units

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.scenario == "pingpong":
        rtt = pingpong(comm, args.units or 2000)
        if rank == 0:
            print(json.dumps({"scenario": "pingpong", "ranks": size, "round_trip": rtt}), flush=True)
        return
    stats = {"wall": 0.0, "cpu": 0.0, "n": 0, "leader_n": 0}
    if rank == 0:
        _timed_poll(stats)
    seconds = args.unit_seconds

    def work(_unit: int) -> None:
        if seconds > 0:
            time.sleep(seconds)
        elif rank == 0:  # flood: rank 0 only dispatches (its main thread sleeps through its few units)
            time.sleep(0.05)

    n = args.units if args.units else 10 * size
    on_results, journal = (None, None)
    tmp = tempfile.mkdtemp(prefix="hpcml-dispatch-") if rank == 0 and args.journal else None
    if tmp:
        on_results, journal = _on_results(tmp)
    target = 0.0 if args.scenario == "flood" else None
    kwargs = {} if target is None else {"target_batch_seconds": target}
    comm.Barrier()
    t0 = time.perf_counter()
    queue = UnitQueue([], range(n), size, **kwargs) if rank == 0 else None
    report = run_units(comm, work, queue=queue, on_results=on_results, dispatch=args.dispatch)
    wall = time.perf_counter() - t0
    messages = comm.reduce(report.messages if rank else 0, root=0)
    if rank == 0:
        if journal is not None:
            journal.close()
        print(
            json.dumps(
                {
                    "scenario": args.scenario,
                    "ranks": size,
                    "units": n,
                    "unit_seconds": seconds,
                    "journal": bool(args.journal),
                    "wall": wall,
                    "dispatch": report.dispatch,
                    "requests": stats["n"],
                    "leader_requests": stats["leader_n"],
                    "requests_per_s": stats["n"] / wall,
                    "per_request_cpu": stats["cpu"] / max(1, stats["n"]),
                    "per_request_wall": stats["wall"] / max(1, stats["n"]),
                    "dispatcher_busy_fraction": stats["wall"] / wall,
                    "worker_batches": messages,
                    "units_on_rank0": report.units_done[0],
                    "mean_batch": (n - report.units_done[0]) / max(1, messages),
                    "efficiency": (n * seconds / size) / wall if seconds > 0 else None,
                }
            ),
            flush=True,
        )


# --------------------------------------------------------------------------- driver
def scenario(  # noqa: PLR0913
    kind: str,
    ranks: int,
    unit_seconds: float,
    units: int,
    journal: bool,
    timeout: float,
    dispatch: str = "flat",
    cliques: int = 0,
) -> dict:
    cmd = [
        C.mpiexec(),
        "-n",
        str(ranks),
        sys.executable,
        SCRIPT,
        "--worker",
        "--scenario",
        kind,
        "--unit-seconds",
        str(unit_seconds),
        "--units",
        str(units),
        "--dispatch",
        dispatch,
    ] + (["--journal"] if journal else [])
    load = C.loadavg()
    extra = {"MPIR_CVAR_POLLS_BEFORE_YIELD": "1"}
    if cliques:
        extra["MPIR_CVAR_NUM_CLIQUES"] = str(cliques)
    wall, out, _ = C.run(cmd, env=C.child_env(extra), timeout=timeout)
    row = C.last_json(out)
    command = " ".join(cmd[:3] + ["python"] + cmd[4:])
    row.update({"process_wall": wall, "loadavg_before": load, "cliques": cliques, "command": command})
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    flood = [r for r in doc["results"] if r["scenario"] == "flood"]
    for journal in (False, True):
        rows = [r for r in flood if r["journal"] == journal]
        axes[0].plot(
            [r["ranks"] for r in rows],
            [r["requests_per_s"] for r in rows],
            "o-",
            label=f"requests/s ({'with' if journal else 'no'} journal)",
        )
        axes[0].plot(
            [r["ranks"] for r in rows],
            [1 / r["per_request_cpu"] for r in rows],
            "x--",
            label=f"1 / CPU per request ({'with' if journal else 'no'} journal)",
        )
    axes[0].set(xscale="log", yscale="log", xlabel="ranks", ylabel="requests per second", title="rank 0 flooded")
    axes[0].legend(fontsize=7)
    sleep = [r for r in doc["results"] if r["scenario"] == "sleep"]
    for t in sorted({r["unit_seconds"] for r in sleep}):
        rows = [r for r in sleep if r["unit_seconds"] == t]
        axes[1].plot([r["ranks"] for r in rows], [r["efficiency"] for r in rows], "o-", label=f"unit {t:g} s")
    axes[1].set(xscale="log", xlabel="ranks", ylabel="efficiency (10 sleep units per rank)", ylim=(0, 1.05))
    axes[1].legend(fontsize=7)
    C.save_figure(fig, doc, "hpcml dispatch at many ranks", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flood-units", type=int, default=20000)
    p.add_argument("--ranks", default="2,8,64")
    p.add_argument("--sleep-units", default="0.01,0.1,1.0")
    p.add_argument("--sleep-ranks", default="8,64")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    p.add_argument("--hierarchy", action="store_true", help="flat vs hierarchical dispatch on emulated nodes")
    p.add_argument("--cliques", type=int, default=8)
    p.add_argument("--hier-ranks", type=int, default=64)
    p.add_argument("--dispatch", default="flat", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--scenario", default="flood", help=argparse.SUPPRESS)
    p.add_argument("--unit-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--units", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--journal", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.hierarchy:
        hierarchy(args)
        return
    doc = {"benchmark": "dispatch_scale", "environment": C.environment(), "params": vars(args), "results": []}
    doc["results"].append(scenario("pingpong", 2, 0.0, 2000, False, args.timeout))
    for n in (int(x) for x in args.ranks.split(",")):
        for journal in (False, True):
            doc["results"].append(scenario("flood", n, 0.0, args.flood_units, journal, args.timeout))
    for n in (int(x) for x in args.sleep_ranks.split(",")):
        for t in (float(x) for x in args.sleep_units.split(",")):
            doc["results"].append(scenario("sleep", n, t, 10 * n, True, args.timeout))
    C.finish(doc, args, plot)


def hierarchy(args: argparse.Namespace) -> None:
    """Flat vs hierarchical dispatch at ``--hier-ranks`` ranks in ``--cliques`` emulated nodes."""
    doc = {"benchmark": "dispatch_hierarchy", "environment": C.environment(), "params": vars(args), "results": []}
    n, k = args.hier_ranks, args.cliques
    for dispatch in ("flat", "hierarchical"):
        doc["results"].append(scenario("flood", n, 0.0, args.flood_units, True, args.timeout, dispatch, k))
        for t in (0.01, 0.1):
            doc["results"].append(scenario("sleep", n, t, 10 * n, True, args.timeout, dispatch, k))
    C.finish(doc, args, None)


if __name__ == "__main__":
    main()

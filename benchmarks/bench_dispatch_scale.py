"""Rank 0's service rate under many workers, and the per-request cost: inputs of benchmarks/scale_model.py.

    python benchmarks/bench_dispatch_scale.py [--flood-units 20000] [--ranks 2,8,64]
                                              [--sleep-units 0.01,0.1,1.0] [--plot FILE.png] [--json FILE.json]
    python benchmarks/bench_dispatch_scale.py --hierarchy [--cliques 8] [--hier-ranks 64]
                                              [--flood-units 5000] [--json FILE.json]
    python benchmarks/bench_dispatch_scale.py --journal-cost [--node-ranks 128] [--repeats 15]
                                              [--plot FILE.png] [--json FILE.json]

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

``--journal-cost`` (no MPI) measures what rank 0 spends per finished unit in
hierarchical mode, the model's ``journal_per_unit``: one node leader's message
of ``--node-ranks`` ranks' results (one 1 s unit each, the 16,384-rank case)
through the CLI's real :class:`~hpcml.cv.observer.RunObserver` and
:class:`~hpcml.cv.journal.Journal` (journal line, progress bookkeeping), three
peers interleaved ``--repeats`` times: ``before`` (one ``on_results`` call per
rank's batch, each encoding every line with ``json.dumps(_clean(...))``,
writing it and flushing: the code before this change, kept here as the peer),
``per_batch`` (the new encoder, still one call and flush per rank's batch) and
``after`` (:class:`~hpcml.cv.hierarchy.NodeResults`: the whole message in one
call, one ``write`` and one flush).

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


# --------------------------------------------------------------------------- rank 0's cost per journaled unit
class _LegacyJournal:
    """The journal's append before this change: ``json.dumps(_clean(...))``, one write per line, one flush per call."""

    def __init__(self, journal) -> None:  # noqa: ANN001
        self.journal = journal

    def append(self, records: list) -> None:
        from hpcml.cv.journal import _clean

        fh = self.journal._fh
        for record in records:
            fh.write(json.dumps(_clean({"type": "unit", **record}), separators=(",", ":"), allow_nan=False) + "\n")
        fh.flush()

    def sync(self) -> None:
        self.journal.sync()


def _node_message(node_ranks: int, first_unit: int) -> list:
    """One leader's message: every rank of the node finished one unit (a real result's keys and types)."""
    parts = []
    for i in range(node_ranks):
        unit = first_unit + i
        result = {
            "test_scores": {"accuracy": 0.9123456789 + i * 1e-9, "f1_macro": 0.9012345678},
            "train_scores": None,
            "fit_time": 1.0012345 + i * 1e-6,
            "score_time": 0.0123456,
            "n_test_samples": 360,
            "fit_error": None,
        }
        parts.append((i, [(unit, result, 1.0145 + i * 1e-6)]))
    return parts


def _journal_peers(tmp: str, per: int, n_units: int) -> dict:
    """Rank 0 of each peer: a ``_RootDispatcher`` whose ``on_results`` is the CLI's observer over a journal."""
    from mpi4py import MPI

    from hpcml.cv.accrue import ResultColumns
    from hpcml.cv.hierarchy import NodeResults, _RootDispatcher
    from hpcml.cv.journal import Journal
    from hpcml.cv.observer import RunObserver
    from hpcml.cv.progress import Progress
    from hpcml.cv.schedule import UnitQueue

    n_splits = 5
    params = [{"C": float(c), "gamma": 10.0**-g, "kernel": "rbf"} for c in range(n_units // n_splits + 1) for g in (3,)]
    roots = {}
    for peer in ("before", "per_batch", "after", "folded"):
        os.makedirs(os.path.join(tmp, peer))
        journal = Journal(os.path.join(tmp, peer), {"bench": "journal_cost"})
        observer = RunObserver(
            _LegacyJournal(journal) if peer == "before" else journal,  # type: ignore[arg-type]
            Progress(n_units, 0, n_splits, "accuracy", enabled=False),
            lambda u: (u // n_splits, u % n_splits, "svc", params[u // n_splits]),
            {},
            lambda finished: None,
            [f"nid{r:06d}" for r in range(per)],
            "accuracy",
            # folded: also folds every result into cv_results' columns as it arrives (hpcml.cv.accrue)
            ResultColumns(params, n_splits, ["svc"] * len(params), ["accuracy", "f1_macro"], False)
            if peer == "folded"
            else None,
        )
        # before / per_batch: a plain on_results, called once per rank's batch (the code before this change)
        on_results = NodeResults(observer.on_parts) if peer in ("after", "folded") else observer.on_results
        queue = UnitQueue([], range(n_units), per)
        roots[peer] = _RootDispatcher(MPI.COMM_SELF, queue, on_results, None, per)
    return roots


def journal_cost(args: argparse.Namespace) -> dict:
    """Seconds per unit rank 0 spends on a node's message (unpickle + record + journal): peers interleaved."""
    import pickle
    import statistics

    per = args.node_ranks
    roots = _journal_peers(tempfile.mkdtemp(prefix="hpcml-journal-cost-"), per, 4 * per * args.repeats)
    wall: dict[str, list[float]] = {peer: [] for peer in roots}
    cpu: dict[str, list[float]] = {peer: [] for peer in roots}
    unit = 0
    for _ in range(args.repeats):
        for peer, root in roots.items():
            blob = pickle.dumps(_node_message(per, unit))  # what the leader sent
            unit += per
            start, start_cpu = time.perf_counter(), time.thread_time()
            root.record(1, pickle.loads(blob))
            cpu[peer].append((time.thread_time() - start_cpu) / per)
            wall[peer].append((time.perf_counter() - start) / per)
    rows = {}
    for peer, root in roots.items():
        many = peer in ("after", "folded")
        journal = root.on_results.many.__self__.journal if many else root.on_results.__self__.journal
        journal.sync()
        rows[peer] = {
            "per_unit_cpu_median": statistics.median(cpu[peer]),
            "per_unit_cpu_min": min(cpu[peer]),
            "per_unit_median": statistics.median(wall[peer]),
            "per_unit_min": min(wall[peer]),
            "per_unit_cpu_all": cpu[peer],
            "per_unit_all": wall[peer],
            "units_recorded": sum(root.report.units_done),
        }
    return {
        "scenario": "journal_cost",
        "node_ranks": per,
        "repeats": args.repeats,
        "peers": rows,
        "ratio_after_to_before_cpu_median": rows["after"]["per_unit_cpu_median"]
        / rows["before"]["per_unit_cpu_median"],
        "folded_minus_after_cpu_median": rows["folded"]["per_unit_cpu_median"] - rows["after"]["per_unit_cpu_median"],
        "folded_usable": roots["folded"].on_results.many.__self__.columns.failed is None,
        "ratio_after_to_before_median": rows["after"]["per_unit_median"] / rows["before"]["per_unit_median"],
    }


def plot_journal(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = doc["results"][0]
    fig, ax = plt.subplots(figsize=(6, 4))
    peers = list(row["peers"])
    for i, peer in enumerate(peers):
        values = [v * 1e6 for v in row["peers"][peer]["per_unit_all"]]
        cpu = [v * 1e6 for v in row["peers"][peer]["per_unit_cpu_all"]]
        ax.plot([i - 0.1] * len(values), values, "o", color="grey", alpha=0.4, label="wall" if i == 0 else None)
        ax.plot([i + 0.1] * len(cpu), cpu, "x", color="C0", alpha=0.6, label="thread CPU" if i == 0 else None)
        ax.bar(i, row["peers"][peer]["per_unit_cpu_median"] * 1e6, alpha=0.3, color="C0")
    ax.set_xticks(range(len(peers)), peers)
    ax.legend(fontsize=7)
    ax.set(ylabel="rank 0 us per journaled unit (bar: CPU median)", yscale="log",
           title=f"one node message of {row['node_ranks']} ranks' results")  # fmt: skip
    C.save_figure(fig, doc, "hpcml journal cost per unit (rank 0, hierarchical)", path)


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
    p.add_argument("--journal-cost", action="store_true", help="rank 0's journal cost per unit (no MPI)")
    p.add_argument("--node-ranks", type=int, default=128)
    p.add_argument("--repeats", type=int, default=15)
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
    if args.journal_cost:
        doc = {"benchmark": "journal_cost", "environment": C.environment(), "params": vars(args)}
        doc["results"] = [journal_cost(args)]
        C.finish(doc, args, plot_journal)
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

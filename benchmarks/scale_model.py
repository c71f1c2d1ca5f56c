"""Model of search efficiency at 1,024 / 4,096 / 16,384 ranks, from inputs measured on this machine.

    python benchmarks/scale_model.py [--dispatch results/dispatch_scale.json]
                                     [--startup results/startup_after.json] [--load results/load.json]
                                     [--mds-ops 50000] [--ranks-per-node 128]
                                     [--plot results/scale_model.png] [--json results/scale_model.json]

Efficiency = ideal / modelled time, ideal = 10 units per rank x unit cost t, for
t from 10 ms to 10 s.  The modelled time is

``start-up + dispatch + final gather/reduce``:

* **dispatch**: a discrete-event simulation of hpcml's own protocol
  (:mod:`hpcml.cv.schedule`): the real :class:`~hpcml.cv.schedule.UnitQueue`
  (cost-learning first pass of one split per candidate, factor-of-two buckets,
  0.1 s batches capped by the guided-self-scheduling share) and the real
  worker/dispatcher rules (a worker asks for its next batch before running the
  one in hand; rank 0 grants that prefetch only for batches estimated at
  <= 0.5 s and answers WAIT otherwise).  Rank 0 is one FIFO server taking
  ``per_request_cpu`` (measured: thread CPU time of ``_Dispatcher.poll`` per
  request, with the CLI's journal and progress work) for every request; every
  message takes half the measured round trip (``pingpong``: Iprobe + Backoff on
  both sides).  Candidates x 5 splits = 10 x ranks units, all of cost t.
* **final gather/reduce** (the CLI): results already reach rank 0 with the
  requests; at the end the scheduler broadcasts the busy list (8 B per rank) and
  the exit status (tree: ``log2(P)`` steps of the measured latency + bytes /
  measured Bcast bandwidth) and rank 0 finishes ``cv_results`` + best.json from
  the columns it folded as results arrived (``bench_finish.py`` ``final``: CPU
  per unit, scaled linearly; ``--finish-cost``).  Folding a result as it arrives
  (``arrival``, CPU per unit) is charged to rank 0 with every request that
  carries results, flat and hierarchical; the columns ``..._before`` model the
  full path at the end instead (``_format_results`` + the bulk writer, no arrival cost).
  The Python API also broadcasts every unit's result to
  every rank (``final_api_broadcast``, not in the efficiencies).
* **start-up**: (a) *local*: the measured per-rank start-up at 2 ranks (one
  core per rank; the whole import set read from a local disk/page cache), the
  same for every P (node-local environment or a container image); (b)
  *shared file system*: (a) + P x file-system calls per rank (strace, measured)
  / ``--mds-ops`` metadata operations per second -- an **assumed** metadata
  server rate (no parallel file system here), labelled as such.

With ``--ranks-per-node R`` hierarchical dispatch (:mod:`hpcml.cv.hierarchy`)
is modelled too, with the implemented protocol's parameters
(:func:`simulate_hierarchical`): P / R node leaders each hold a sub-queue; a
rank that finds its leader's sub-queue empty makes the leader ask rank 0 for R
batches at once (one request in flight per node; the implementation asks ahead,
at half, which the model leaves out: pessimistic), carrying the results of every
unit the node finished since its last request; rank 0 (one FIFO server) spends
``per_request_cpu`` plus ``journal_per_unit`` for every unit reported (rank 0's
thread CPU time per unit of a node's message of 128 results: unpickling,
bookkeeping, journal line, progress; ``bench_dispatch_scale.py --journal-cost``,
``--journal-cost`` here; the code before the one-write-per-message journal is
modelled too, from the same run's ``before`` peer); a leader answers its own ranks from
its own core (one node-local round trip per batch, hidden by prefetch for
batches <= 0.5 s as in flat dispatch); each node ends with a final request.
Prints one JSON document and draws efficiency vs unit cost.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
import tempfile
import time
from collections import deque

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

RANKS = (1024, 4096, 16384)
UNIT_COSTS = (0.01, 0.1, 1.0, 3.0, 10.0)
UNITS_PER_RANK = 10
N_SPLITS = 5


# --------------------------------------------------------------------------- the dispatch simulation
def _worker(t: float):  # noqa: ANN202
    """hpcml's worker loop (schedule._run_worker) as a generator of actions: send, recv, run."""
    yield ("send", [], False)
    in_hand = None
    outstanding = True
    while True:
        if in_hand is None:
            kind, batch = yield ("recv",)
            outstanding = False
            if kind == "DONE":
                return
            if kind == "WAIT":  # to a request without a batch in hand: ask again
                yield ("send", [], False)
                outstanding = True
                continue
            in_hand = batch
        if not outstanding:  # ask for the next batch before running this one (prefetch)
            yield ("send", [], True)
            outstanding = True
        batch, in_hand = in_hand, None
        yield ("run", len(batch) * t)
        kind, nxt = yield ("recv",)
        outstanding = False
        if kind == "WORK":
            in_hand = nxt
        yield ("send", batch, in_hand is not None)
        outstanding = True


def simulate(
    n_ranks: int, t: float, c: float, latency: float, target: float | None = None, c_unit: float = 0.0
) -> dict:
    """Discrete-event run of hpcml's dispatch protocol: rank 0 one FIFO server, ``n_ranks`` workers.

    Parameters
    ----------
    n_ranks : int
        Workers (rank 0 is modelled as a pure dispatcher).
    t : float
        Seconds per unit.
    c : float
        Rank 0's seconds per request.
    latency : float
        One-way message time.
    target : float, optional
        ``UnitQueue``'s ``target_batch_seconds`` (default hpcml's).
    c_unit : float
        Rank 0's seconds per unit result a request carries (folding it into cv_results' columns).

    Returns
    -------
    dict
        ``makespan``, ``requests``, ``rank0_utilisation``, ``mean_batch``.
    """
    from hpcml.cv.schedule import PREFETCH_MAX_SECONDS, TARGET_BATCH_SECONDS, UnitQueue

    n_units = UNITS_PER_RANK * n_ranks
    first = [cand * N_SPLITS for cand in range(n_units // N_SPLITS)]
    rest = [u for u in range(n_units) if u % N_SPLITS]
    queue = UnitQueue(first, rest, n_ranks, group_of=lambda u: u // N_SPLITS,
                      target_batch_seconds=TARGET_BATCH_SECONDS if target is None else target)  # fmt: skip
    events: list[tuple[float, int, int, str, object]] = []
    seq = 0
    server_free = 0.0
    stats = {"requests": 0, "batches": 0, "done": 0.0}
    procs = [_worker(t) for _ in range(n_ranks)]
    mailbox: list[list[tuple[str, list[int]]]] = [[] for _ in range(n_ranks)]
    waiting = [False] * n_ranks

    def push(when: float, w: int, kind: str, data: object = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, w, kind, data))

    def answer(items: list[int], holding: bool) -> tuple[str, list[int]]:  # schedule._Dispatcher.poll/_answer
        for unit in items:
            queue.record(unit, t)
        if holding and len(queue) and not (queue.cost(queue._head()[0]) or math.inf) <= PREFETCH_MAX_SECONDS:
            return "WAIT", []
        batch = queue.take()
        if batch:
            stats["batches"] += 1
            return "WORK", batch
        return ("WAIT", []) if holding else ("DONE", [])

    def step(w: int, now: float, value: object) -> None:
        try:
            action = procs[w].send(value)
            while True:
                if action[0] == "send":
                    push(now + latency, w, "arrive", action[1:])
                    action = procs[w].send(None)
                elif action[0] == "run":
                    push(now + action[1], w, "wake")
                    return
                elif mailbox[w]:
                    action = procs[w].send(mailbox[w].pop(0))
                else:
                    waiting[w] = True
                    return
        except StopIteration:
            stats["done"] = max(stats["done"], now)

    for w in range(n_ranks):
        step(w, 0.0, None)
    while events:
        now, _, w, kind, data = heapq.heappop(events)
        if kind == "arrive":
            server_free = max(now, server_free) + c + c_unit * len(data[0])  # type: ignore[index]
            stats["requests"] += 1
            push(server_free + latency, w, "reply", answer(*data))  # type: ignore[misc]
        elif kind == "reply" and waiting[w]:
            waiting[w] = False
            step(w, now, data)
        elif kind == "reply":
            mailbox[w].append(data)  # type: ignore[arg-type]
        else:  # wake: the batch ran
            step(w, now, None)
    return {
        "makespan": stats["done"],
        "requests": stats["requests"],
        "rank0_utilisation": (stats["requests"] * c + c_unit * n_units) / stats["done"],
        "mean_batch": n_units / max(1, stats["batches"]),
    }


class _Nodes:
    """State of :func:`simulate_hierarchical`: each node's sub-queue, idle ranks and unreported units."""

    def __init__(self, n_nodes: int, per_node: int, t: float, latency: float) -> None:
        self.buffers: list[deque[list[int]]] = [deque() for _ in range(n_nodes)]
        self.unreported: list[list[int]] = [[] for _ in range(n_nodes)]
        self.waiting = [per_node] * n_nodes  # idle ranks
        self.asking = [False] * n_nodes
        self.more = [True] * n_nodes
        self.events: list[tuple[float, int, str, int]] = []  # (time, sequence, kind, node)
        self.seq = iter(range(1 << 62))
        self.t, self.latency, self.end = t, latency, 0.0

    def push(self, when: float, kind: str, node: int) -> None:
        heapq.heappush(self.events, (when, next(self.seq), kind, node))

    def hand_out(self, node: int, now: float) -> None:
        """Idle ranks take batches from the sub-queue; an empty one makes the leader ask rank 0."""
        from hpcml.cv.schedule import PREFETCH_MAX_SECONDS

        while self.waiting[node] and self.buffers[node]:
            self.waiting[node] -= 1
            batch = self.buffers[node].popleft()
            local = 0.0 if len(batch) * self.t <= PREFETCH_MAX_SECONDS else 2 * self.latency
            self.unreported[node].extend(batch)  # reported with the node's next request, once run
            self.push(now + local + len(batch) * self.t, "free", node)
        if self.waiting[node] and not self.buffers[node] and self.more[node] and not self.asking[node]:
            self.asking[node] = True
            self.push(now + self.latency, "arrive", node)
        if self.waiting[node] and not self.more[node] and not self.asking[node]:
            self.end = max(self.end, now)
            self.waiting[node] = 0  # those ranks are released


def simulate_hierarchical(n_nodes: int, per_node: int, t: float, c: float, c_unit: float, latency: float) -> dict:
    """Discrete-event run of hierarchical dispatch: rank 0 a FIFO server for ``n_nodes`` leaders.

    Parameters
    ----------
    n_nodes, per_node : int
        Nodes and ranks per node (every rank runs units, leaders included).
    t : float
        Seconds per unit.
    c, c_unit : float
        Rank 0's seconds per leader request, and per unit whose result it carries.
    latency : float
        One-way message time (node-local and to rank 0 alike).

    Returns
    -------
    dict
        ``makespan``, ``requests`` (answered by rank 0), ``rank0_utilisation``, ``mean_batch``.
    """
    from hpcml.cv.schedule import UnitQueue

    n_units = UNITS_PER_RANK * n_nodes * per_node
    first = [cand * N_SPLITS for cand in range(n_units // N_SPLITS)]
    rest = [u for u in range(n_units) if u % N_SPLITS]
    queue = UnitQueue(first, rest, n_nodes * per_node, group_of=lambda u: u // N_SPLITS)
    nodes = _Nodes(n_nodes, per_node, t, latency)
    requests, busy, batches, server_free = 0, 0.0, 0, 0.0
    for node in range(n_nodes):
        nodes.hand_out(node, 0.0)
    while nodes.events:
        now, _, kind, node = heapq.heappop(nodes.events)
        if kind == "free":
            nodes.waiting[node] += 1
            nodes.hand_out(node, now)
        elif kind == "arrive":
            cost = c + c_unit * len(nodes.unreported[node])
            for unit in nodes.unreported[node]:
                queue.record(unit, t)
            nodes.unreported[node] = []
            server_free = max(now, server_free) + cost
            requests, busy = requests + 1, busy + cost
            granted = [b for b in (queue.take() for _ in range(per_node)) if b]
            batches += len(granted)
            nodes.buffers[node].extend(granted)
            nodes.more[node] = len(queue) > 0
            nodes.push(server_free + latency, "reply", node)
        else:
            nodes.asking[node] = False
            nodes.hand_out(node, now)
    final = n_nodes * (c + c_unit * per_node)  # the final requests, at worst one after the other
    makespan = nodes.end + 2 * latency + final
    return {
        "makespan": makespan,
        "requests": requests + n_nodes,
        "rank0_utilisation": busy / makespan,
        "mean_batch": n_units / max(1, batches),
    }


def measure_journal(n_units: int = 128, repeat: int = 20) -> float:
    """Seconds per unit of the CLI journal's append of one batch of ``n_units`` results."""
    from hpcml.cv.journal import Journal

    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(tmp, {"bench": "scale_model"})
        records = [{"unit": u, "cand": u, "split": 0, "model": "m", "params": {"C": 1.0},
                    "test_scores": {"score": 0.5}, "fit_time": 1.0, "score_time": 0.0, "rank": u,
                    "host": "h", "seconds": 1.0, "time": time.time()} for u in range(n_units)]  # fmt: skip
        start = time.perf_counter()
        for _ in range(repeat):
            journal.append(records)
        seconds = (time.perf_counter() - start) / (repeat * n_units)
        journal.close()
    return seconds


# --------------------------------------------------------------------------- measured inputs
def measure_reduce(n_units: int = 20000) -> dict:
    """Rank 0's end of run: build_cv_results + write_cv_results for ``n_units`` units (seconds per unit)."""
    import pickle

    from hpcml.cv import output
    from hpcml.cv.reduce import build_cv_results

    n_splits = N_SPLITS
    n_cand = n_units // n_splits
    result = {"test_scores": {"score": 0.9}, "train_scores": None, "fit_time": 0.5, "score_time": 0.01,
              "n_test_samples": 100, "fit_error": None}  # fmt: skip
    out = [dict(result) for _ in range(n_cand * n_splits)]
    params = [{"C": float(i), "gamma": 1e-3} for i in range(n_cand)]
    t0 = time.perf_counter()
    results = build_cv_results(params, n_splits, out, False, ["svc"] * n_cand, None)
    with tempfile.TemporaryDirectory() as tmp:
        output.write_cv_results(tmp, results)
    seconds = time.perf_counter() - t0
    return {"units": len(out), "seconds": seconds, "per_unit": seconds / len(out),
            "bytes_per_unit": len(pickle.dumps(out)) / len(out)}  # fmt: skip


def load_inputs(args: argparse.Namespace) -> dict:
    with open(args.dispatch, encoding="utf-8") as fh:
        disp = json.load(fh)
    rows = disp["results"]
    flood = [r for r in rows if r["scenario"] == "flood" and r["journal"]]
    ping = [r for r in rows if r["scenario"] == "pingpong"]
    inputs = {
        "per_request_cpu": max(r["per_request_cpu"] for r in flood),
        "per_request_cpu_all": {f"{r['ranks']} ranks": r["per_request_cpu"] for r in flood},
        "round_trip": ping[0]["round_trip"] if ping else None,
        "dispatch_source": args.dispatch,
        "dispatch_loadavg": disp["environment"].get("loadavg_start"),
    }
    if args.startup and os.path.exists(args.startup):
        with open(args.startup, encoding="utf-8") as fh:
            st = json.load(fh)
        row = min(st["results"], key=lambda r: r["ranks"])
        inputs["startup_local"] = row["median"]["total"] - row["median"]["plan"]
        inputs["startup_ranks_measured"] = row["ranks"]
        traced = [r for r in st["results"] if r.get("strace")]  # calls per rank do not depend on N
        if traced:
            inputs["fs_calls_per_rank"] = max(traced, key=lambda r: r["ranks"])["strace"]["per_rank_calls"]
        inputs["startup_source"] = args.startup
    if args.load and os.path.exists(args.load):
        with open(args.load, encoding="utf-8") as fh:
            ld = json.load(fh)
        inputs["bcast_bandwidth"] = ld["bcast"]["bandwidth"]
        inputs["bcast_latency"] = ld["bcast"]["latency"]
    inputs.setdefault("bcast_bandwidth", args.bcast_bandwidth)
    inputs.setdefault("bcast_latency", 2e-5)
    inputs["reduce"] = _finish_inputs(args.finish_cost)
    inputs.update(_journal_inputs(args.journal_cost))
    return inputs


def _finish_inputs(path: str | None) -> dict:
    """Rank 0's per-unit cv_results cost (bench_finish.py, CPU medians), else measured here.

    ``per_unit``: what is left after the last unit (the folded columns' ``final``); ``arrival_per_unit``:
    folding one result as it arrives (rank 0, between requests); ``per_unit_before``: the full path at the
    end (scikit-learn's ``_format_results`` + the bulk writer), as before the folded columns.
    """
    measured = measure_reduce()
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        row = max(doc["results"], key=lambda r: r["units"])
        measured.update(
            {
                "per_unit_one_shot_wall": measured["per_unit"],
                "per_unit": row.get("finish_folded", row["finish_after"]),
                "arrival_per_unit": row.get("arrival_folded", 0.0),
                "per_unit_before": row["finish_after"],
                "per_unit_old_writer": row["finish_before"],
                "units_measured": row["units"],
                "source": path,
                "loadavg": doc["environment"].get("loadavg_start"),
            }
        )
    return measured


def _journal_inputs(path: str | None) -> dict:
    """Rank 0's CPU per journaled unit after/before (bench_dispatch_scale.py --journal-cost), else measured here."""
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        peers = doc["results"][0]["peers"]
        return {
            "journal_per_unit": peers["after"]["per_unit_cpu_median"],
            "journal_per_unit_before": peers["before"]["per_unit_cpu_median"],
            # the same message with the results also folded into cv_results' columns (hpcml.cv.accrue)
            "journal_per_unit_folded": peers["folded"]["per_unit_cpu_median"] if "folded" in peers else None,
            "journal_source": path,
            "journal_loadavg": doc["environment"].get("loadavg_start"),
        }
    return {
        "journal_per_unit": measure_journal(),
        "journal_per_unit_before": None,
        "journal_source": "measure_journal()",
    }


def model(inputs: dict, args: argparse.Namespace) -> list[dict]:
    c = inputs["per_request_cpu"]
    latency = inputs["round_trip"] / 2
    rows = []
    for p in RANKS:
        for t in UNIT_COSTS:
            arrival = inputs["reduce"].get("arrival_per_unit", 0.0)
            sim = simulate(p, t, c, latency, c_unit=arrival)
            n_units = UNITS_PER_RANK * p
            ideal = UNITS_PER_RANK * t
            # CLI: results reached rank 0 with the requests; at the end only the busy list (8 B per rank) and
            # the exit status are broadcast, then rank 0 builds and writes cv_results.  The Python API also
            # broadcasts every unit's result (engine.broadcast), kept as final_api_broadcast.
            bcast = inputs["bcast_latency"]
            final = (
                math.log2(p) * (2 * bcast + 8 * p / inputs["bcast_bandwidth"]) + n_units * inputs["reduce"]["per_unit"]
            )
            api_bcast = math.log2(p) * (
                bcast + n_units * inputs["reduce"]["bytes_per_unit"] / inputs["bcast_bandwidth"]
            )
            per_before = inputs["reduce"].get("per_unit_before") or inputs["reduce"]["per_unit"]
            final_before = final + n_units * (per_before - inputs["reduce"]["per_unit"])
            start_local = inputs.get("startup_local", 0.0)
            calls = inputs.get("fs_calls_per_rank") or 0.0
            start_fs = start_local + p * calls / args.mds_ops
            hier = before = hier_full = None
            if args.ranks_per_node > 1:
                nodes = max(1, p // args.ranks_per_node)
                journal = inputs["journal_per_unit"]
                folding = inputs.get("journal_per_unit_folded") or journal + arrival  # measured together if run
                h = simulate_hierarchical(nodes, args.ranks_per_node, t, c, folding, latency)
                hier = h["makespan"]
                # before the folded columns: no arrival cost, the full cv_results path after the last unit
                hier_full = simulate_hierarchical(nodes, args.ranks_per_node, t, c, journal, latency)["makespan"]
                if inputs.get("journal_per_unit_before"):
                    b = simulate_hierarchical(
                        nodes, args.ranks_per_node, t, c, inputs["journal_per_unit_before"], latency
                    )
                    before = {"eff": ideal / b["makespan"], "rank0_utilisation": b["rank0_utilisation"]}
            row = {
                "ranks": p,
                "unit_seconds": t,
                "ideal": ideal,
                "dispatch_makespan": sim["makespan"],
                "requests": sim["requests"],
                "rank0_utilisation": sim["rank0_utilisation"],
                "mean_batch": sim["mean_batch"],
                "final_gather_reduce": final,
                "final_api_broadcast": api_bcast,
                "startup_local": start_local,
                "startup_shared_fs": start_fs,
                "eff_dispatch": ideal / sim["makespan"],
                "eff_with_final": ideal / (sim["makespan"] + final),
                "eff_with_startup_local": ideal / (start_local + sim["makespan"] + final),
                "eff_with_startup_shared_fs": ideal / (start_fs + sim["makespan"] + final),
                "eff_dispatch_hierarchical": (ideal / hier) if hier else None,
                "requests_hierarchical": h["requests"] if hier else None,
                "rank0_utilisation_hierarchical": h["rank0_utilisation"] if hier else None,
                "eff_dispatch_hierarchical_journal_before": before["eff"] if before else None,
                "rank0_utilisation_hierarchical_journal_before": before["rank0_utilisation"] if before else None,
                "eff_hierarchical_with_final": (ideal / (hier + final)) if hier else None,
                "final_gather_reduce_before": final_before,
                "eff_hierarchical_with_final_before": (ideal / (hier_full + final_before)) if hier_full else None,
                "arrival_per_unit": arrival,
                "eff_hierarchical_with_startup_local": (ideal / (start_local + hier + final)) if hier else None,
                "eff_hierarchical_with_startup_shared_fs": (ideal / (start_fs + hier + final)) if hier else None,
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def validate(inputs: dict, path: str) -> list[dict]:
    """The model at the rank counts measured by bench_dispatch_scale.py (sleep units) vs the measurement.

    Twice: with the per-request CPU time (rank 0 owning a core, as on a cluster) and with the
    per-request *wall* time that very run measured (rank 0 sharing 2 cores with 63 other ranks).
    """
    with open(path, encoding="utf-8") as fh:
        rows = [r for r in json.load(fh)["results"] if r["scenario"] == "sleep"]
    out = []
    latency = inputs["round_trip"] / 2
    for r in rows:
        t = r["unit_seconds"]
        cpu = simulate(r["ranks"], t, inputs["per_request_cpu"], latency)
        wall = simulate(r["ranks"], t, r["per_request_wall"], latency)
        out.append({"ranks": r["ranks"], "unit_seconds": t, "measured_efficiency": r["efficiency"],
                    "model_efficiency_cpu": UNITS_PER_RANK * t / cpu["makespan"],
                    "model_efficiency_measured_wall_per_request": UNITS_PER_RANK * t / wall["makespan"],
                    "per_request_wall": r["per_request_wall"], "loadavg": r["loadavg_before"]})  # fmt: skip
    return out


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    keys = (("eff_with_final", "dispatch + final reduce"), ("eff_with_startup_local", "+ start-up (local env)"),
            ("eff_with_startup_shared_fs", "+ start-up (shared FS, assumed MDS)"))  # fmt: skip
    for ax, (key, title) in zip(axes, keys):
        for p in RANKS:
            rows = [r for r in doc["results"] if r["ranks"] == p]
            ax.plot([r["unit_seconds"] for r in rows], [r[key] for r in rows], "o-", label=f"{p} ranks")
            if key == "eff_with_final" and rows[0]["eff_hierarchical_with_final"] is not None:
                ax.plot([r["unit_seconds"] for r in rows], [r["eff_hierarchical_with_final"] for r in rows], "x:",
                        label=f"{p} ranks, hierarchical + final reduce")  # fmt: skip
        ax.axhline(0.9, color="grey", lw=0.8, ls="--")
        ax.set(xscale="log", xlabel="unit cost (s), 10 units per rank", title=title, ylim=(0, 1.02))
        ax.legend(fontsize=7)
    axes[0].set_ylabel("efficiency")
    C.save_figure(fig, doc, "hpcml search efficiency model (measured inputs)", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dispatch", default=os.path.join(HERE, "results", "dispatch_scale.json"))
    p.add_argument("--startup", default=os.path.join(HERE, "results", "startup_after.json"))
    p.add_argument("--load", default=os.path.join(HERE, "results", "load.json"))
    p.add_argument("--mds-ops", type=float, default=50000.0, help="ASSUMED metadata ops/s of a shared file system")
    p.add_argument("--bcast-bandwidth", type=float, default=5e9, help="used only without --load results")
    p.add_argument("--ranks-per-node", type=int, default=128)
    p.add_argument(
        "--journal-cost",
        default=os.path.join(HERE, "results", "journal_cost.json"),
        help="bench_dispatch_scale.py --journal-cost results (rank 0's CPU per journaled unit, before/after)",
    )
    p.add_argument(
        "--finish-cost",
        default=os.path.join(HERE, "results", "finish_cost.json"),
        help="bench_finish.py results (rank 0's CPU per unit for cv_results build + write, after/before)",
    )
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    args = p.parse_args()
    doc = {"benchmark": "scale_model", "environment": C.environment(), "params": vars(args)}
    doc["inputs"] = load_inputs(args)
    doc["validation"] = validate(doc["inputs"], args.dispatch)
    doc["results"] = model(doc["inputs"], args)
    C.finish(doc, args, plot)


if __name__ == "__main__":
    main()

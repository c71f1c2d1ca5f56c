"""Node copies filled by reading (every node leader reads) vs broadcast (one reader + MPI_Bcast), on emulated nodes.

    python benchmarks/bench_load.py [--mib 128] [--nodes 2,4] [--ranks-per-node 2] [--repeats 3]
                                    [--plot FILE.png] [--json FILE.json]

For every node count K (``MPIR_CVAR_NUM_CLIQUES=K``, ``K x --ranks-per-node``
ranks) both modes of :func:`hpcml.data.load_arrays` load the same ``--mib`` MiB
HDF5 file, interleaved ``--repeats`` times:

    MPIR_CVAR_NUM_CLIQUES=K mpiexec -n N python benchmarks/bench_load.py --worker MODE FILE

Each launch reports the slowest rank's ``load_arrays`` time, the reader's
``read_seconds`` and the leaders' ``bcast_seconds``, and then times a raw
``MPI_Bcast`` of 64 MiB among the node leaders (bandwidth and the latency of a
1-byte Bcast): the measured Bcast bandwidth is the input of the crossover
estimate (docs/data.md).  Everything here runs on one host: "reading" is
served from the page cache (no parallel file system to contend for) and the
Bcast goes through shared memory, so the local numbers show the cost of the
mechanism, not a cluster's file-system contention.  Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402

SCRIPT = os.path.abspath(__file__)


def worker(mode: str, path: str) -> None:
    from mpi4py import MPI

    from hpcml.data import H5Dataset, load_arrays

    comm = MPI.COMM_WORLD
    comm.Barrier()
    t0 = time.perf_counter()
    arrays, info = load_arrays(H5Dataset(path, y=None), comm, load=mode)
    seconds = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    bcast = comm.allreduce(info.get("bcast_seconds", 0.0), op=MPI.MAX)
    read = comm.allreduce(info.get("read_seconds", 0.0), op=MPI.MAX)
    checksum = float(arrays["X"][::997].sum())
    same = comm.allreduce(checksum, op=MPI.MAX) == comm.allreduce(checksum, op=MPI.MIN)
    arrays.close()
    # raw Bcast among node leaders
    import numpy as np

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    leaders = comm.Split(0 if node.Get_rank() == 0 else MPI.UNDEFINED, key=comm.Get_rank())
    raw = {}
    if leaders != MPI.COMM_NULL:
        buf = np.zeros(64 * 2**20, dtype=np.uint8)
        one = np.zeros(1, dtype=np.uint8)
        leaders.Barrier()
        t0 = time.perf_counter()
        for _ in range(3):
            leaders.Bcast(buf, root=0)
        leaders.Barrier()
        big = (time.perf_counter() - t0) / 3
        t0 = time.perf_counter()
        for _ in range(200):
            leaders.Bcast(one, root=0)
        leaders.Barrier()
        raw = {
            "bandwidth": buf.nbytes / big,
            "latency": (time.perf_counter() - t0) / 200,
            "leaders": leaders.Get_size(),
        }
        leaders.Free()
    node.Free()
    raw = comm.bcast(raw, root=0)
    if comm.Get_rank() == 0:
        keep = ("method", "load", "readers", "nodes", "copies", "bytes")
        print(json.dumps({"seconds": seconds, "read_seconds": read, "bcast_seconds": bcast, "same_data": same,
                          "raw_bcast": raw, **{k: info.get(k) for k in keep}}), flush=True)  # fmt: skip


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    nodes = sorted({r["nodes"] for r in doc["runs"]})
    for mode in ("read", "broadcast"):
        med = [doc["summary"][f"{k}:{mode}"]["median"] for k in nodes]
        ax.plot(nodes, med, "o-", label=mode)
    ax.set(xlabel="emulated nodes", ylabel="load_arrays seconds (slowest rank, median)", title="read vs broadcast")
    ax.legend()
    C.save_figure(fig, doc, f"{doc['params']['mib']} MiB, {doc['params']['ranks_per_node']} ranks per node", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=128)
    p.add_argument("--nodes", default="2,4")
    p.add_argument("--ranks-per-node", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--plot", metavar="FILE.png")
    p.add_argument("--json", metavar="FILE.json")
    p.add_argument("--worker", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    import numpy as np

    from hpcml.data import write_dataset

    doc = {"benchmark": "load", "environment": C.environment(), "params": vars(args), "runs": []}
    with tempfile.TemporaryDirectory(prefix="hpcml-load-") as tmp:
        path = os.path.join(tmp, "big.h5")
        cols = 1024
        rows = args.mib * 2**20 // (8 * cols)
        write_dataset(path, np.random.default_rng(0).standard_normal((rows, cols)), None)
        for rep in range(args.repeats):
            for k in (int(x) for x in args.nodes.split(",")):
                for mode in ("read", "broadcast"):
                    n = k * args.ranks_per_node
                    cmd = [C.mpiexec(), "-n", str(n), sys.executable, SCRIPT, "--worker", mode, path]
                    env = C.child_env({"MPIR_CVAR_NUM_CLIQUES": str(k), "MPIR_CVAR_POLLS_BEFORE_YIELD": "1"})
                    load = C.loadavg()
                    wall, out, _ = C.run(cmd, env=env, timeout=args.timeout)
                    row = {"nodes": k, "ranks": n, "mode": mode, "repeat": rep, "process_wall": wall,
                           "loadavg_before": load, **C.last_json(out)}  # fmt: skip
                    row["command"] = f"MPIR_CVAR_NUM_CLIQUES={k} mpiexec -n {n} python {SCRIPT} --worker {mode} FILE"
                    doc["runs"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    doc["summary"] = {}
    for key in sorted({f"{r['nodes']}:{r['mode']}" for r in doc["runs"]}):
        vals = [r["seconds"] for r in doc["runs"] if f"{r['nodes']}:{r['mode']}" == key]
        doc["summary"][key] = {"median": statistics.median(vals), "all": vals}
    raws = [r["raw_bcast"] for r in doc["runs"] if r["raw_bcast"]]
    doc["bcast"] = {
        "bandwidth": statistics.median(r["bandwidth"] for r in raws),
        "latency": statistics.median(r["latency"] for r in raws),
        "note": "MPI_Bcast of 64 MiB / of 1 byte among node leaders (shared memory on this host)",
    }
    C.finish(doc, args, plot)


if __name__ == "__main__":
    main()

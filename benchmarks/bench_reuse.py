"""Work done once: pipeline-prefix reuse against scikit-learn and dask-ml, on a text and a numeric grid.

    python benchmarks/bench_reuse.py [--docs 20000] [--grids text,numeric] [--repeats 1]
                                     [--json FILE.json] [--plot FILE.png]

Grids (issue #15):

* ``text``: ``CountVectorizer(ngram_range in {(1,1), (1,2)}) -> TfidfTransformer(norm in
  {l1, l2}) -> SGDClassifier(alpha: 5 values)``, 20 candidates x ``KFold(5)``, on a
  generated corpus (``make_corpus``: ``--docs`` documents of 20-60 words drawn from
  a Zipf-distributed 5,000-word vocabulary; each of 4 classes boosts its own 200
  topic words; seeded, so every peer sees the same text).  hpcml reads it from HDF5
  (a 1-D variable-length string ``X``), the peers from the same file.
* ``numeric``: ``StandardScaler -> PCA(n_components in {5, 10, 20}, random_state=0)
  -> SVC(C in {0.5, 2}, gamma in {scale, 0.01})``, 12 candidates x ``KFold(5)``, on
  ``make_classification(--numeric-rows, 50)``.

Peers, each a whole process (wall from launch to exit, data loading included), run
interleaved (peer by peer inside each repeat):

* ``hpcml -n 2``: ``mpiexec -n 2`` of the API (``hpcml.GridSearchCV``), prefix reuse on;
* ``sklearn n_jobs=1``, ``sklearn n_jobs=2`` (loky), and ``sklearn n_jobs=1 memory``
  (``Pipeline(memory=<temporary directory>)``, joblib's disk cache of fitted steps);
* ``dask-ml -2 workers``: ``dask_ml.model_selection.GridSearchCV`` on a
  ``distributed.LocalCluster`` of 2 single-threaded worker processes on loopback.

Every peer's ``split*_test_score`` is compared with scikit-learn ``n_jobs=1``
(atol 1e-12); hpcml's prefix fits are compared with the number of distinct
(prefix, fold) pairs; hpcml's per-rank busy seconds and schedule wall (``hpcml.run_info``)
show the balance of its schedule.  The machine may be shared: ``os.getloadavg()`` is recorded
at the start and end (and at each peer's start); the ratios of peers run in the same repeat are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

PEERS = ["hpcml -n 2", "sklearn n_jobs=1", "sklearn n_jobs=2", "sklearn n_jobs=1 memory", "dask-ml 2 workers"]
N_SPLITS = 5


def make_corpus(n_docs: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n_docs`` documents of 4 classes over a Zipf vocabulary, each class boosting its own topic words."""
    import numpy as np

    rng = np.random.RandomState(seed)
    vocab = np.array([f"w{i}" for i in range(5000)])
    base = 1.0 / np.arange(1, 5001) ** 1.1
    classes = rng.randint(0, 4, n_docs)
    probs = []
    for c in range(4):
        p = base.copy()
        p[500 + 200 * c : 700 + 200 * c] *= 8.0
        probs.append(p / p.sum())
    docs = [" ".join(rng.choice(vocab, rng.randint(20, 61), p=probs[c])) for c in classes]
    return docs, classes.tolist()


def pipeline_and_grid(grid: str, memory: str | None = None):  # noqa: ANN201 - bench helper
    from sklearn.decomposition import PCA
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if grid == "text":
        pipe = Pipeline(
            [("vect", CountVectorizer()), ("tfidf", TfidfTransformer()), ("clf", SGDClassifier(random_state=0))],
            memory=memory,
        )
        params = {
            "vect__ngram_range": [(1, 1), (1, 2)],
            "tfidf__norm": ["l1", "l2"],
            "clf__alpha": [1e-6, 1e-5, 1e-4, 1e-3, 1e-2],
        }
        return pipe, params, 2 * N_SPLITS + 4 * N_SPLITS
    pipe = Pipeline([("sc", StandardScaler()), ("pca", PCA(random_state=0)), ("svc", SVC())], memory=memory)
    params = {"pca__n_components": [5, 10, 20], "svc__C": [0.5, 2.0], "svc__gamma": ["scale", 0.01]}
    return pipe, params, N_SPLITS + 3 * N_SPLITS


def load(data: str):  # noqa: ANN201 - bench helper
    from hpcml.data.h5 import H5Dataset

    ds = H5Dataset(data)
    X = ds.read("X")
    return (X.tolist() if X.dtype == object else X), ds.read("y")


def worker(peer: str, grid: str, data: str, out: str) -> None:
    """One peer's search; rank 0 writes its scores (and hpcml's prefix counters) to ``out``."""
    t0 = time.perf_counter()
    X, y = load(data)
    from sklearn.model_selection import KFold

    cv = KFold(N_SPLITS)
    report: dict = {}
    if peer == "hpcml":
        import hpcml

        pipe, params, _ = pipeline_and_grid(grid)
        search = hpcml.GridSearchCV(pipe, params, cv=cv, refit=False).fit(X, y)
        info = hpcml.run_info(search)
        report["prefix"] = info.folds["prefix"]
        schedule = info.schedule_reports[-1]  # per-rank busy seconds: the balance of the schedule
        report["busy_seconds"] = [round(b, 3) for b in schedule.busy]
        report["units_done"] = list(schedule.units_done)
        report["schedule_wall_seconds"] = round(schedule.wall, 3)
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() != 0:
            return
    elif peer.startswith("sklearn"):
        from sklearn.model_selection import GridSearchCV

        with tempfile.TemporaryDirectory() as cache:
            pipe, params, _ = pipeline_and_grid(grid, memory=cache if peer.endswith("memory") else None)
            jobs = 2 if peer == "sklearn-2" else 1
            search = GridSearchCV(pipe, params, cv=cv, refit=False, n_jobs=jobs).fit(X, y)
    else:  # dask-ml on a 2-worker local cluster, on loopback
        from dask_ml.model_selection import GridSearchCV
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            pipe, params, _ = pipeline_and_grid(grid)
            search = GridSearchCV(pipe, params, cv=cv, refit=False, scheduler=client).fit(X, y)
    results = search.cv_results_
    report["scores"] = [[float(v) for v in results[f"split{i}_test_score"]] for i in range(N_SPLITS)]
    report["params"] = [repr(sorted(p.items())) for p in results["params"]]
    report["inner_seconds"] = time.perf_counter() - t0
    with open(out, "w") as fh:
        json.dump(report, fh)


def run_peer(peer: str, grid: str, data: str, tmp: str, timeout: float) -> dict:
    """Launch one peer as a whole process; wall from launch to exit."""
    out = os.path.join(tmp, f"{peer.replace(' ', '_')}-{grid}.json")
    me = os.path.abspath(__file__)
    kind = {
        "hpcml -n 2": "hpcml",
        "sklearn n_jobs=1": "sklearn-1",
        "sklearn n_jobs=2": "sklearn-2",
        "sklearn n_jobs=1 memory": "sklearn-memory",
        "dask-ml 2 workers": "dask",
    }[peer]
    cmd = [sys.executable, me, "--worker", kind, grid, data, out]
    if kind == "hpcml":
        cmd = [C.mpiexec(), "-n", "2", *cmd]
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1")
    load = C.loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-800:], "wall_seconds": wall, "loadavg_start": load}
    with open(out) as fh:
        report = json.load(fh)
    report["wall_seconds"] = wall
    report["loadavg_start"] = load
    return report


def compare(doc: dict, grid: str, expected_fits: int) -> None:
    """Ratios against scikit-learn n_jobs=1 and dask-ml, and the equality of every peer's scores."""
    import numpy as np

    runs = doc["results"][grid]
    ratios: dict[str, float] = {}
    equal: dict[str, bool] = {}
    for rep, peers in enumerate(runs):
        ref = peers.get("sklearn n_jobs=1", {})
        for peer, r in peers.items():
            if "scores" in r and "scores" in ref:
                same = r["params"] == ref["params"] and np.allclose(r["scores"], ref["scores"], atol=1e-12, rtol=0)
                equal[peer] = equal.get(peer, True) and bool(same)
        base = ref.get("wall_seconds")
        for peer, r in peers.items():
            if base and "error" not in r and "error" not in ref:
                ratios[f"rep{rep}: {peer} / sklearn n_jobs=1"] = r["wall_seconds"] / base
        dask = peers.get("dask-ml 2 workers", {})
        ours = peers.get("hpcml -n 2", {})
        if "error" not in dask and "error" not in ours and dask and ours:
            ratios[f"rep{rep}: hpcml -n 2 / dask-ml 2 workers"] = ours["wall_seconds"] / dask["wall_seconds"]
    prefix = runs[0].get("hpcml -n 2", {}).get("prefix", {})
    doc["summary"][grid] = {
        "ratios": ratios,
        "hpcml_busy_seconds_per_rank": [peers.get("hpcml -n 2", {}).get("busy_seconds") for peers in runs],
        "scores_equal_sklearn_j1": equal,
        "prefix": prefix,
        "distinct_prefix_fold_pairs": expected_fits,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=4, metavar=("PEER", "GRID", "DATA", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--docs", type=int, default=20000, help="documents of the text corpus")
    p.add_argument("--numeric-rows", type=int, default=3000)
    p.add_argument("--grids", default="text,numeric")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--plot", default=None, metavar="FILE.png")
    p.add_argument("--json", default=None, metavar="FILE.json")
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    import numpy as np
    from sklearn.datasets import make_classification

    from hpcml.data.h5 import write_dataset

    doc: dict = {"benchmark": "reuse", "environment": C.environment(), "params": vars(args).copy()}
    doc["results"], doc["summary"] = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for grid in args.grids.split(","):
            data = os.path.join(tmp, f"{grid}.h5")
            if grid == "text":
                docs, y = make_corpus(args.docs)
                write_dataset(data, docs, np.asarray(y))
            else:
                X, y = make_classification(args.numeric_rows, 50, n_informative=10, random_state=0)
                write_dataset(data, X, y)
            doc["results"][grid] = []
            for _ in range(args.repeats):
                peers = {}
                for peer in args.peers.split(","):
                    peers[peer] = run_peer(peer, grid, data, tmp, args.timeout)
                    shown = {k: v for k, v in peers[peer].items() if k not in ("scores", "params")}
                    print(grid, peer, json.dumps(shown), file=sys.stderr, flush=True)
                doc["results"][grid].append(peers)
            compare(doc, grid, pipeline_and_grid(grid)[2])
    doc["scale"] = {"docs": args.docs, "numeric_rows": args.numeric_rows, "n_splits": N_SPLITS}
    C.finish(doc, args, plot)


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grids = list(doc["results"])
    fig, axes = plt.subplots(1, len(grids), figsize=(6 * len(grids), 4), squeeze=False)
    for ax, grid in zip(axes[0], grids):
        peers = doc["results"][grid][0]
        labels = [k for k in peers if "error" not in peers[k]]
        ax.barh(labels, [peers[k]["wall_seconds"] for k in labels], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel("whole-process wall (s)")
        ax.set_title(grid)
    C.save_figure(fig, doc, "Pipeline-prefix reuse vs scikit-learn and dask-ml", path)


if __name__ == "__main__":
    main()

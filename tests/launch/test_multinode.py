"""Emulated multi-node tier: MPICH's ``MPIR_CVAR_NUM_CLIQUES=K`` splits ``COMM_TYPE_SHARED`` into K nodes.

With K cliques MPICH places world rank r on clique ``r % K`` (round robin), so
4 ranks are 2 nodes of 2, 8 ranks 4 nodes of 2 and 5 ranks 3 uneven nodes
(2, 2, 1).  Every clique has the same host name (``MPI.Get_processor_name()``),
which is what makes this tier catch node identity keyed on host names.  Nodes
are numbered by their lowest world rank, so rank r is on node ``r % K``.
Every launch has a hard timeout (tests/helpers.run kills the process group).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket

import numpy as np
import pytest
from compare import assert_cv_results_equal
from cvfixtures import BASIC, load_results, write_config, write_digits
from helpers import run_mpi
from sklearn import model_selection as skms
from sklearn.svm import SVC

from hpcml.startup import PHASES

N_UNITS = 12  # BASIC: 4 candidates x 3 folds
CPUS = len(os.sched_getaffinity(0))
HOST = socket.gethostname()


def cliques(k: int, **extra: str) -> dict[str, str]:
    """Environment that makes MPICH emulate ``k`` nodes."""
    return {"MPIR_CVAR_NUM_CLIQUES": str(k), **extra}


def _as_sklearn(columns: dict) -> dict:
    out = {}
    for key, values in columns.items():
        if key == "params" or key.startswith("param_") or key == "model":
            out[key] = values
        else:
            out[key] = np.array([np.nan if v is None else v for v in values])
    return out


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multinode")
    X, y = write_digits(tmp / "digits.h5")
    cfg = write_config(tmp / "search.toml", BASIC)
    one = tmp / "one-rank"
    proc = run_mpi(1, ["-m", "hpcml.cv", str(cfg), "--out", str(one), "--quiet"], timeout=180)
    assert proc.returncode == 0, proc.stderr
    sk = skms.GridSearchCV(
        SVC(),
        {"C": [0.5, 5], "gamma": [1e-3, 1e-2]},
        cv=skms.StratifiedKFold(3, shuffle=True, random_state=0),
        scoring=["accuracy", "f1_macro"],
        refit="accuracy",
    ).fit(X, y)
    return tmp, cfg, load_results(one), sk


def _assert_same_as_one_rank_and_sklearn(out, one, sk) -> None:
    ours = load_results(out)
    for key, values in one.items():
        if not key.endswith(("fit_time", "score_time")):
            assert ours[key] == values, key  # bit-identical to the 1-rank run
    assert_cv_results_equal(_as_sklearn(ours), sk.cv_results_, extra=("model",))
    best = json.loads((out / "best.json").read_text())
    assert best["best_index"] == sk.best_index_ and best["best_params"] == sk.best_params_


def _assert_layout(report: dict, n: int, k: int) -> None:
    layouts = sorted(report["layout"], key=lambda lay: lay["rank"])
    assert [lay["rank"] for lay in layouts] == list(range(n))
    assert [lay["node"] for lay in layouts] == [r % k for r in range(n)]
    assert len({lay["host"] for lay in layouts}) == 1  # one host name, k nodes
    for node in range(k):
        mine = [lay for lay in layouts if lay["node"] == node]
        assert sorted(lay["local_rank"] for lay in mine) == list(range(len(mine)))
        assert {lay["local_size"] for lay in mine} == {len(mine)}
        # The thread budget is per node: the node's CPUs over its own ranks.
        assert {lay["threads"] for lay in mine} == {max(1, CPUS // len(mine))}
        pinned = [cpu for lay in mine if lay["pinned"] for cpu in lay["cpus"]]
        assert len(pinned) == len(set(pinned)), "CPU sets overlap inside a node"


@pytest.mark.parametrize(
    ("n", "k", "env", "copies", "load"),
    [
        (4, 2, {"HPCML_FOLD_COPIES": "node", "HPCML_STARTUP_FILES": "1"}, "node", "read"),
        (8, 4, {"HPCML_DATA_LOAD": "broadcast"}, "rank", "broadcast"),
        (5, 3, {}, "rank", "read"),  # uneven: nodes of 2, 2 and 1 ranks
    ],
    ids=["4ranks-2nodes-nodefolds", "8ranks-4nodes-broadcast", "5ranks-3uneven-nodes"],
)
def test_search_on_emulated_nodes_equals_one_rank_and_sklearn(basic, n, k, env, copies, load):
    tmp, cfg, one, sk = basic
    out = tmp / f"n{n}k{k}"
    proc = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, env=cliques(k, **env))
    assert proc.returncode == 0, proc.stderr
    _assert_same_as_one_rank_and_sklearn(out, one, sk)
    report = json.loads((out / "run.json").read_text())
    assert report["n_ranks"] == n and report["nodes"] == k and len(report["hosts"]) == 1
    data = report["data"]
    assert data["method"] == "shared-window"
    assert (data["nodes"], data["copies"]) == (k, k)  # read once per node, one copy per node
    assert data["load"] == load and data["readers"] == (k if load == "read" else 1)
    _assert_layout(report, n, k)
    assert report["folds"]["copies"] == copies
    if copies == "node":
        assert report["folds"]["phases"] == 3  # one node-shared fold per split, built by each node
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    units = [r for r in journal if r["type"] == "unit"]
    assert sorted(r["unit"] for r in units) == list(range(N_UNITS))
    assert {r["rank"] for r in units} <= set(range(n))
    _assert_startup(report["startup"], n, counted="HPCML_STARTUP_FILES" in env)


def _assert_startup(startup: dict, n: int, counted: bool) -> None:
    """run.json's per-rank start-up breakdown: every rank, every phase, module counts growing."""
    assert len(startup["per_rank"]) == n
    assert list(startup["median"]) == [*PHASES, "total"] and list(startup["max"]) == [*PHASES, "total"]
    for record in startup["per_rank"]:
        assert list(record["seconds"]) == list(PHASES)
        modules = [record["modules"][phase] for phase in PHASES]
        assert modules == sorted(modules) and modules[-1] > modules[0]
        assert ("files" in record) == counted
    if counted:  # every rank imports the same code
        assert len({record["files"]["import"] for record in startup["per_rank"]}) == 1
        assert min(record["files"]["open"] for record in startup["per_rank"]) > 0


def test_dry_run_counts_nodes_not_host_names(basic):
    tmp, cfg, _, _ = basic
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--dry-run"], timeout=120, env=cliques(2))
    assert proc.returncode == 0, proc.stderr
    assert "ranks    4 on 2 node(s), host(s): " in proc.stdout, proc.stdout


def test_resume_with_other_node_and_rank_count(basic):
    """A run on 2 nodes x 2 ranks stopped after 5 units resumes on 4 nodes x 2 ranks, then on 1 rank."""
    tmp, cfg, one, sk = basic
    full = tmp / "resume-full"
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--out", str(full), "--quiet"], timeout=240, env=cliques(2))
    assert proc.returncode == 0, proc.stderr
    # The on-disk state of that run had it stopped after its first 5 units: the journal's
    # header and first 5 unit lines (the journal is append-only), no results yet.
    out = tmp / "resume"
    out.mkdir()
    lines = (full / "journal.jsonl").read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if json.loads(ln)["type"] == "unit"][:5]
    (out / "journal.jsonl").write_text("\n".join(kept) + "\n")
    first = sorted(json.loads(ln)["unit"] for ln in kept[1:])
    proc = run_mpi(
        8, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=240, env=cliques(4)
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "run.json").read_text())
    assert report["nodes"] == 4 and report["units"] == {"total": N_UNITS, "resumed": 5, "ran": 7, "done": N_UNITS}
    units = [json.loads(ln) for ln in (out / "journal.jsonl").read_text().splitlines()]
    ran = [r["unit"] for r in units if r["type"] == "unit"]
    assert sorted(ran) == list(range(N_UNITS)), "every unit exactly once across both runs"
    assert sorted(ran[:5]) == first
    _assert_same_as_one_rank_and_sklearn(out, one, sk)
    # ... and resuming the complete search on 1 rank runs nothing and keeps the results.
    proc = run_mpi(1, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "run.json").read_text())
    assert report["units"]["resumed"] == N_UNITS and report["units"]["ran"] == 0
    _assert_same_as_one_rank_and_sklearn(out, one, sk)
    assert report["cv_results_folded"] is True
    _assert_files_equal_the_full_path_from_the_journal(out, tmp / "full-path")


def _assert_files_equal_the_full_path_from_the_journal(out, folder) -> None:  # noqa: ANN001
    """cv_results.json/.csv, folded on rank 0 as results arrived (hpcml.cv.accrue), byte for byte equal
    what the full path (scikit-learn's _format_results + the writer) makes of the journal's results."""
    from hpcml.cv import output
    from hpcml.cv.reduce import build_cv_results
    from hpcml.cv.runner import _result_of

    records = {}
    for line in (out / "journal.jsonl").read_text().splitlines()[1:]:
        record = json.loads(line)
        if record["type"] == "unit":
            records[record["unit"]] = record
    assert sorted(records) == list(range(N_UNITS))
    n_splits = max(r["split"] for r in records.values()) + 1
    first = [records[u] for u in range(0, N_UNITS, n_splits)]
    results = build_cv_results(
        [r["params"] for r in first],
        n_splits,
        [_result_of(records[u]) for u in range(N_UNITS)],
        False,
        [r["model"] for r in first],
        ["accuracy", "f1_macro"],
    )
    folder.mkdir()
    output.write_cv_results(str(folder), results)
    for name in (output.CV_RESULTS_JSON, output.CV_RESULTS_CSV):
        assert (out / name).read_bytes() == (folder / name).read_bytes(), name


@pytest.mark.parametrize(
    ("load", "rank"),
    [("read", 1), ("broadcast", 0)],
    ids=["node1-leader-reads", "the-one-broadcast-reader"],
)
def test_failure_of_a_node_leader_during_shared_load_ends_every_rank(basic, load, rank):
    """Rank 1 leads node 1 (of 2); in broadcast mode rank 0 is the only reader."""
    tmp, cfg, _, _ = basic
    out = tmp / f"fault-{load}"
    env = cliques(2, HPCML_DATA_LOAD=load, HPCML_INJECT_FAULT=f"shared-read:{rank}")
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcml: error:")]
    expected = f"rank {rank}/4 on {HOST}: InjectedFault: injected fault at 'shared-read' on rank {rank}"
    assert errors == [f"hpcml: error: {expected}"], proc.stderr
    assert not (out / "cv_results.json").exists() and not (out / "journal.jsonl").exists()


def test_sgd_on_two_emulated_nodes_equals_one_rank(tmp_path):
    out = tmp_path / "demo"
    res = run_mpi(4, ["-m", "hpcml.sgd", "--demo", "--out", str(out)], timeout=180, env=cliques(2))
    assert res.returncode == 0, res.stderr
    hist = json.loads((out / "history.json").read_text())
    assert hist["ranks"] == 4
    assert [r["node"] for r in hist["per_rank"]] == [0, 1, 0, 1]
    assert [r["local_rank"] for r in hist["per_rank"]] == [0, 0, 1, 1]
    assert len({r["host"] for r in hist["per_rank"]}) == 1
    assert [r["threads"] for r in hist["per_rank"]] == [max(1, CPUS // 2)] * 4
    cfg = tmp_path / "train.toml"
    cfg.write_text(
        f'[data]\npath = "{out / "demo-train.h5"}"\ntest_path = "{out / "demo-test.h5"}"\n'
        "[output]\nplot = false\n[run]\nthreads_per_rank = 1\n"
    )
    res1 = run_mpi(1, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "one")], timeout=120)
    assert res1.returncode == 0, res1.stderr
    one, four = np.load(tmp_path / "one" / "model.npz"), np.load(out / "model.npz")
    assert np.allclose(one["coef"], four["coef"], rtol=1e-10, atol=1e-12)
    assert np.allclose(one["intercept"], four["intercept"], rtol=1e-10, atol=1e-12)


def test_data_synth_on_three_emulated_nodes_is_byte_identical_to_one_rank(tmp_path):
    args = "--n-samples 3001 --n-features 7 --kind classification --seed 3 --block-rows 200".split()
    one = run_mpi(1, ["-m", "hpcml.data", "synth", str(tmp_path / "one.h5"), *args], timeout=60)
    many = run_mpi(5, ["-m", "hpcml.data", "synth", str(tmp_path / "many.h5"), *args], timeout=120, env=cliques(3))
    assert one.returncode == 0, one.stderr
    assert many.returncode == 0, many.stderr

    def sha(path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha(tmp_path / "one.h5") == sha(tmp_path / "many.h5")


def _without_times(folder) -> dict:
    return {k: v for k, v in load_results(folder).items() if not k.endswith(("fit_time", "score_time"))}


def test_halving_on_two_emulated_nodes_with_node_folds_equals_one_rank(basic):
    """The halving strategy (rungs of units through the same scheduler) on 2 nodes: the 1-rank numbers."""
    tmp, _, _, _ = basic
    search = '[search]\nstrategy = "halving"\nfactor = 2\nmin_resources = 90\n\n[run]\nrandom_state = 0\n'
    text = BASIC.split("[scoring]")[0] + search  # halving ranks by one metric, as scikit-learn's
    cfg = write_config(tmp / "halving.toml", text)
    one, many = tmp / "halving-one", tmp / "halving-n4k2"
    proc = run_mpi(1, ["-m", "hpcml.cv", str(cfg), "--out", str(one), "--quiet"], timeout=180)
    assert proc.returncode == 0, proc.stderr
    env = cliques(2, HPCML_FOLD_COPIES="node")
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--out", str(many), "--quiet"], timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    ours, reference = _without_times(many), _without_times(one)
    assert ours == reference
    assert ours["iter"] == [0] * 4 + [1] * 2 + [2] and ours["n_resources"] == [90] * 4 + [180] * 2 + [360]
    report = json.loads((many / "run.json").read_text())
    assert (report["tool"], report["strategy"], report["n_ranks"]) == ("hpcml.cv", "halving", 4)
    assert report["nodes"] == 2 and (report["data"]["nodes"], report["data"]["copies"]) == (2, 2)
    _assert_layout(report, 4, 2)


def test_kmeans_on_three_uneven_emulated_nodes_equals_sklearn(tmp_path):
    """hpcml.cluster with 5 ranks on nodes of 2, 2 and 1 ranks: scikit-learn's fit, every row labelled."""
    import h5py
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs

    from hpcml.data.h5 import write_dataset

    X, _ = make_blobs(3001, n_features=6, centers=5, cluster_std=2.5, random_state=0)
    write_dataset(tmp_path / "blobs.h5", X, None)
    np.save(tmp_path / "init.npy", X[[0, 10, 20, 30, 40]])
    cfg = tmp_path / "km.toml"
    cfg.write_text('[data]\npath = "blobs.h5"\n[model]\nn_clusters = 5\ninit_centers = "init.npy"\n')
    proc = run_mpi(5, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "out")], timeout=180, env=cliques(3))
    assert proc.returncode == 0, proc.stderr
    ref = KMeans(5, init=X[[0, 10, 20, 30, 40]], n_init=1).fit(X)
    with h5py.File(tmp_path / "out" / "model.h5") as fh:
        np.testing.assert_allclose(fh["cluster_centers"][...], ref.cluster_centers_, rtol=1e-9)
        assert fh.attrs["n_iter"] == ref.n_iter_
    with h5py.File(tmp_path / "out" / "labels.h5") as fh:
        np.testing.assert_array_equal(fh["labels"][...], ref.labels_)
    report = json.loads((tmp_path / "out" / "run.json").read_text())
    assert report["nodes"] == 3 and report["n_ranks"] == 5
    assert sum(r["rows"] for r in report["per_rank"]) == 3001
    _assert_layout(report, 5, 3)

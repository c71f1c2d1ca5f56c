"""Hierarchical dispatch (hpcml.cv.hierarchy) under real mpiexec on emulated nodes.

``MPIR_CVAR_NUM_CLIQUES=K`` makes MPICH split ``COMM_TYPE_SHARED`` into K
nodes, world rank r on node ``r % K`` (tests/launch/test_multinode.py): with 4
ranks and 2 nodes rank 1 leads node 1 and rank 3 is its worker.  Every launch
has a hard timeout (tests/helpers.run kills the process group): a hang fails.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from compare import assert_cv_results_equal
from cvfixtures import BASIC, load_results, write_config, write_digits
from helpers import PYTHON, finish, journal_records, mpiexec_path, run_mpi, start, wait_until
from sklearn import model_selection as skms
from sklearn.svm import SVC

from hpcml.comm import HOST

N_UNITS = 12  # BASIC: 4 candidates x 3 folds
HIER = {"HPCML_DISPATCH": "hierarchical"}


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


def _journal_units(folder: Path) -> list[dict]:
    return journal_records(folder, "unit")


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hierarchy")
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


def _assert_same_as_one_rank_and_sklearn(out: Path, one: dict, sk) -> None:  # noqa: ANN001
    ours = load_results(out)
    for key, values in one.items():
        if not key.endswith(("fit_time", "score_time")):
            assert ours[key] == values, key
    assert_cv_results_equal(_as_sklearn(ours), sk.cv_results_, extra=("model",))
    best = json.loads((out / "best.json").read_text())
    assert best["best_index"] == sk.best_index_ and best["best_params"] == sk.best_params_


@pytest.mark.parametrize(
    ("n", "k", "how"),
    [(4, 2, "env"), (8, 4, "env"), (5, 3, "config")],
    ids=["4ranks-2nodes", "8ranks-4nodes", "5ranks-3uneven-nodes-config"],
)
def test_hierarchical_equals_one_rank_and_sklearn(basic, n, k, how):
    tmp, cfg, one, sk = basic
    if how == "config":  # [run] dispatch instead of HPCML_DISPATCH
        cfg = write_config(tmp / "hier.toml", cfg.read_text() + '\n[run]\ndispatch = "hierarchical"\n')
    out = tmp / f"hier-n{n}k{k}"
    env = cliques(k, **(HIER if how == "env" else {}))
    proc = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    _assert_same_as_one_rank_and_sklearn(out, one, sk)
    report = json.loads((out / "run.json").read_text())
    assert report["dispatch"] == "hierarchical" and report["nodes"] == k
    assert len(report["busy_seconds"]) == n
    units = _journal_units(out)
    assert sorted(r["unit"] for r in units) == list(range(N_UNITS)), "every unit exactly once"
    assert {r["rank"] for r in units} <= set(range(n))
    assert report["units"] == {"total": N_UNITS, "resumed": 0, "ran": N_UNITS, "done": N_UNITS}
    assert report["cv_results_folded"] is True  # folded on rank 0 as the leaders' messages arrived


def test_auto_is_flat_below_the_node_threshold(basic):
    tmp, cfg, one, sk = basic
    out = tmp / "auto"
    env = cliques(2, HPCML_DISPATCH="auto")
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["dispatch"] == "flat"
    _assert_same_as_one_rank_and_sklearn(out, one, sk)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("k", "expected"), [(64, "hierarchical"), (63, "flat")], ids=["64nodes", "63nodes"])
def test_auto_switches_at_64_nodes(basic, k, expected):
    """``auto`` (the default) at 64 ranks: hierarchical on 64 emulated nodes, flat on 63 (one node of 2 ranks).

    Both launches have 64 ranks, so only the node count decides.  Each costs
    about 1-3 minutes here (64 interpreters starting on 2 cores).
    """
    from hpcml.cv.hierarchy import AUTO_MIN_NODES

    assert AUTO_MIN_NODES == 64  # the threshold this test launches around
    tmp, cfg, one, sk = basic
    out = tmp / f"auto-64ranks-{k}nodes"
    env = cliques(k, HPCML_DISPATCH="auto")
    proc = run_mpi(64, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=1000, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "run.json").read_text())
    assert report["dispatch"] == expected and report["nodes"] == k and len(report["busy_seconds"]) == 64
    _assert_same_as_one_rank_and_sklearn(out, one, sk)
    units = _journal_units(out)
    assert sorted(r["unit"] for r in units) == list(range(N_UNITS)), "every unit exactly once"
    assert report["units"] == {"total": N_UNITS, "resumed": 0, "ran": N_UNITS, "done": N_UNITS}


def test_unknown_dispatch_mode_is_a_config_error(basic, tmp_path):
    tmp, cfg, _, _ = basic
    bad = write_config(tmp_path / "bad.toml", cfg.read_text().replace(
        'path = "digits.h5"', f'path = "{tmp / "digits.h5"}"') + '\n[run]\ndispatch = "tree"\n')  # fmt: skip
    proc = run_mpi(1, ["-m", "hpcml.cv", str(bad), "--out", str(tmp_path / "o"), "--quiet"], timeout=120)
    assert proc.returncode != 0
    assert "dispatch" in proc.stderr and "'tree'" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("n", "k", "rank", "point"),
    [(4, 2, 1, "unit"), (4, 2, 3, "unit"), (8, 4, 6, "worker"), (5, 3, 0, "unit")],
    ids=["leader-of-node1", "worker-of-node1", "worker-poll-8ranks", "rank0"],
)
def test_exception_on_one_rank_ends_every_rank(basic, n, k, rank, point):
    tmp, cfg, _, _ = basic
    out = tmp / f"fault-{n}-{rank}-{point}"
    env = cliques(k, HPCML_INJECT_FAULT=f"{point}:{rank}", **HIER)
    proc = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120, env=env)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcml: error:")]
    assert errors == [
        f"hpcml: error: rank {rank}/{n} on {HOST}: InjectedFault: injected fault at '{point}' on rank {rank}"
    ], proc.stderr[-3000:]


def test_fit_raise_ends_every_rank_with_original_message(basic, tmp_path):
    tmp, _, _, _ = basic
    cfg = write_config(
        tmp_path / "raise.toml",
        BASIC.replace('path = "digits.h5"', f'path = "{tmp / "digits.h5"}"').replace(
            'estimator = "sklearn.svm.SVC"', 'estimator = "sklearn.svm.SVC"\nparams = { kernel = "nope" }'
        )
        + '\n[run]\nerror_score = "raise"\n',
    )
    env = cliques(4, **HIER)
    proc = run_mpi(8, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("Traceback") == 1, proc.stderr
    assert "kernel" in proc.stderr and "error_score='raise'" in proc.stderr, proc.stderr


SLOW = """\
[data]
path = "digits.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [0.1, 1, 10, 100], gamma = [1e-4, 1e-3, 1e-2] }

[cv]
splitter = "StratifiedKFold"
n_splits = 5
shuffle = true
random_state = 0

[scoring]
metrics = ["accuracy", "f1_macro"]
refit = "accuracy"
"""
N_SLOW = 12 * 5


def _start(n: int, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return start([mpiexec_path(), "-n", str(n), PYTHON, *args], env=env)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hierarchy-slow")
    write_digits(tmp / "digits.h5", n=1797)
    cfg = write_config(tmp / "slow.toml", SLOW)
    ref = tmp / "reference"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(ref), "--quiet"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    return tmp, cfg, ref


def _resume_gives_reference(cfg: Path, out: Path, ref: Path, env: dict[str, str]) -> None:
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    units = [r["unit"] for r in _journal_units(out)]
    assert sorted(units) == list(range(N_SLOW)), "every unit exactly once across both runs"
    reference = json.loads((ref / "cv_results.json").read_text())
    ours = json.loads((out / "cv_results.json").read_text())
    for key, values in reference.items():
        if key.startswith(("mean_test_", "std_test_", "rank_test_", "split")) or key in ("params", "model"):
            assert ours[key] == values, key
    assert json.loads((out / "run.json").read_text())["dispatch"] == "hierarchical"


def test_time_limit_then_resume_in_hierarchical_mode(slow):
    tmp, cfg, ref = slow
    out = tmp / "timelimit"
    env = cliques(2, **HIER)
    wall = json.loads((ref / "run.json").read_text())["wall_seconds"]
    limit = f"{max(0.25 * wall, 0.1):.2f}"  # part-way on a fast machine and a slow one alike
    args = ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--time-limit", limit]
    proc = run_mpi(4, args, timeout=180, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "time limit" in proc.stderr
    assert len(_journal_units(out)) < N_SLOW
    report = json.loads((out / "run.json").read_text())
    assert report["status"] == "incomplete" and report["stopped_by"] == "time limit"
    assert report["dispatch"] == "hierarchical"
    _resume_gives_reference(cfg, out, ref, env)


def test_without_thread_multiple_hierarchical_falls_back_to_flat(basic):
    tmp, cfg, one, sk = basic
    out = tmp / "serialized"
    env = cliques(2, MPI4PY_RC_THREAD_LEVEL="serialized", **HIER)
    proc = run_mpi(4, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["dispatch"] == "flat"
    _assert_same_as_one_rank_and_sklearn(out, one, sk)


def test_sigterm_then_resume_in_hierarchical_mode(slow):
    tmp, cfg, ref = slow
    out = tmp / "sigterm"
    env = cliques(2, **HIER)
    proc = _start(4, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "30"], env)
    wait_until(lambda: len(_journal_units(out)) >= 10, proc, "10 journaled units", 180)
    proc.send_signal(signal.SIGTERM)  # hydra forwards it to every rank
    try:
        done = finish(proc, 90)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: killed after {exc.timeout} s\n{(exc.stderr or '')[-2000:]}")
    assert done.returncode == 3, done.stderr
    assert "--resume" in done.stderr
    first = [r["unit"] for r in _journal_units(out)]
    assert 10 <= len(first) < N_SLOW and len(set(first)) == len(first)
    _resume_gives_reference(cfg, out, ref, env)


EARLIEST_ERROR_SCRIPT = """
import json, sys

import numpy as np
from mpi4py import MPI
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV, KFold

import hpcml


class FailsFromC1(ClassifierMixin, BaseEstimator):
    # c = 0 fits; every unit of c >= 1 fails, each with its own message (candidate, rows)

    def __init__(self, c=0):
        self.c = c

    def fit(self, X, y):
        if self.c >= 1:
            raise ValueError(f"c={self.c} cannot fit rows {int(X[0, 0])}..{int(X[-1, 0])} ({len(X)} rows)")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def outcome(search):
    try:
        search.fit(X, y)
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return ["no error", ""]


X = np.c_[np.arange(30.0), np.ones(30)]
y = np.arange(30) % 2
grid = {"c": list(range(6))}
doc = {"sklearn": outcome(GridSearchCV(FailsFromC1(), grid, cv=KFold(3), error_score="raise", refit=False))}
doc["hpcml"] = [
    outcome(hpcml.GridSearchCV(FailsFromC1(), grid, cv=KFold(3), error_score="raise", refit=False))
    for _ in range(int(sys.argv[2]))
]
fine = hpcml.GridSearchCV(FailsFromC1(), {"c": [0, 0]}, cv=KFold(3), refit=False).fit(X, y)
doc["dispatch"] = [r.dispatch for r in hpcml.run_info(fine).schedule_reports]
with open(f"{sys.argv[1]}/rank{MPI.COMM_WORLD.Get_rank()}.json", "w") as fh:
    json.dump(doc, fh)
"""


@pytest.mark.parametrize(("n", "k"), [(4, 2), (5, 3)], ids=["4ranks-2nodes", "5ranks-3uneven-nodes"])
def test_of_several_failing_units_the_earliest_units_error_is_raised_on_every_rank(tmp_path, n, k):
    """Flat dispatch's rule in hierarchical mode: several units fail (each its own message) on several
    ranks and nodes; scikit-learn's serial loop raises the earliest unit's error, and so does every rank,
    every time (the interleaving differs from fit to fit).  Units a node holds below the earliest
    failing unit still run after the stop, as units in hand do in flat dispatch."""
    script = tmp_path / "earliest.py"
    script.write_text(EARLIEST_ERROR_SCRIPT)
    repeats = 12
    proc = run_mpi(n, [str(script), str(tmp_path), str(repeats)], timeout=420, env=cliques(k, **HIER))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(n):
        doc = json.loads((tmp_path / f"rank{rank}.json").read_text())
        # scikit-learn's serial loop: units 0-2 (c=0) fit, unit 3 (c=1, split 0) is the first to fail
        assert doc["sklearn"] == ["ValueError", "c=1 cannot fit rows 10..29 (20 rows)"]
        assert doc["hpcml"] == [doc["sklearn"]] * repeats, rank
        assert doc["dispatch"] == ["hierarchical"]

"""A rank killed with SIGKILL during a halving / ASHA search, a KMeans fit, or under the fold file's ``flock``.

The sweep of issue #13 (docs/reliability.md, "Sweep of kills and sparse KMeans
input"): every rank must end (a hang fails the launch's timeout, which kills
the process group), with the launcher's exit status for a killed rank; the
journal keeps every unit recorded before the kill, and ``--resume`` completes
with the results of an uninterrupted run.  A rank is killed at a moment the
test observes (units in the journal, a Lloyd iteration printed) or at an exact
point by the rank itself (``HPCML_INJECT_FAULT=test-rows:R:kill``); never after
a guessed sleep.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
from cvfixtures import write_config, write_digits
from helpers import PYTHON, finish, journal_records, mpiexec_path, run_mpi, start, wait_until

from hpcml._faults import FaultSpec, parse
from hpcml.comm import HOST
from hpcml.errors import UsageError

#: What mpiexec (MPICH's hydra) returns when one rank is killed by SIGKILL: the signal's number.
KILLED_RANK_EXIT = 9

HALVING = """\
[data]
path = "digits.h5"

[[model]]
name = "rf"
estimator = "sklearn.ensemble.RandomForestClassifier"
params = { n_estimators = 60, random_state = 0 }
grid = { max_depth = [2, 4, 8], min_samples_leaf = [1, 2, 4, 8] }

[cv]
splitter = "StratifiedKFold"
n_splits = 5
shuffle = true
random_state = 0

[search]
strategy = "halving"
factor = 2
min_resources = 600

[run]
random_state = 0
"""
# 12 candidates at 600 rows, then 6 at 1200: 90 units
N_HALVING_UNITS = (12 + 6) * 5

GRID = HALVING.split("[search]")[0]

ASHA = (
    HALVING.replace("n_estimators = 60", "n_estimators = 100")
    .replace("min_samples_leaf = [1, 2, 4, 8]", "min_samples_leaf = [1, 2]")
    .replace('strategy = "halving"\nfactor = 2\nmin_resources = 600', 'strategy = "async_halving"\nmin_resources = 60')
)
N_GRID_UNITS = 12 * 5


def _units(folder: Path) -> list[int]:
    """Unit numbers recorded in ``folder``'s journal."""
    return [r["unit"] for r in journal_records(folder) if r.get("type") == "unit"]


def _asha_journal(folder: Path) -> tuple[list[dict], list[dict]]:
    """Unit records and ASHA decisions/finishes (without their type), as tests/launch/test_asha_cli.py reads them."""
    records = journal_records(folder)
    events = [{k: v for k, v in r.items() if k != "type"} for r in records if r.get("type") == "asha"]
    return [r for r in records if r.get("type") == "unit"], events


def _rank_pids(mpiexec_pid: int, module: str) -> dict[int, int]:
    """The process id of every rank of the launch (children of ``mpiexec`` running ``module``)."""
    pids = {}
    for child in psutil.Process(mpiexec_pid).children(recursive=True):
        try:
            environ, cmdline = child.environ(), " ".join(child.cmdline())
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if "PMI_RANK" in environ and module in cmdline:
            pids[int(environ["PMI_RANK"])] = child.pid
    return pids


def _results_without_times(folder: Path) -> dict:
    results = json.loads((folder / "cv_results.json").read_text())
    return {key: value for key, value in results.items() if "time" not in key}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits file and the uninterrupted reference run of the halving and the grid search (2 ranks)."""
    tmp = tmp_path_factory.mktemp("kills")
    write_digits(tmp / "digits.h5", n=1797)
    for name, text in (("halving", HALVING), ("grid", GRID)):
        cfg = write_config(tmp / f"{name}.toml", text)
        proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp / f"{name}-ref"), "--quiet"], timeout=500)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


@pytest.mark.timeout(900)
@pytest.mark.parametrize("victim", [1, 0])
def test_sigkill_during_halving_then_resume_equals_uninterrupted(digits, victim):
    cfg, out = digits / "halving.toml", digits / f"halving-kill-{victim}"
    cmd = [mpiexec_path(), "-n", "2", PYTHON, "-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"]
    proc = start(cmd)
    wait_until(lambda: len(_units(out)) >= 5, proc, "5 journaled units", timeout=400)  # 85 of 90 still to run
    pids = _rank_pids(proc.pid, "hpcml.cv")
    assert set(pids) == {0, 1}, pids
    os.kill(pids[victim], signal.SIGKILL)
    done = finish(proc, 120)  # a hang fails here: the other rank must not wait forever
    assert done.returncode == KILLED_RANK_EXIT, (done.returncode, done.stderr[-3000:])
    assert "Killed (signal 9)" in done.stdout, done.stdout[-2000:]  # the launcher's own report
    before = _units(out)
    assert 5 <= len(before) < N_HALVING_UNITS and len(set(before)) == len(before)
    assert not (out / "cv_results.json").exists()
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    units = _units(out)
    assert units[: len(before)] == before and sorted(units) == list(range(N_HALVING_UNITS))
    assert _results_without_times(out) == _results_without_times(digits / "halving-ref")
    assert json.loads((out / "best.json").read_text()) == json.loads((digits / "halving-ref" / "best.json").read_text())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("victim", [1, 0])
def test_sigkill_during_async_halving_then_resume_keeps_the_decisions(tmp_path, victim):
    from hpcml.cv.asha import AshaRule

    write_digits(tmp_path / "digits.h5", n=1797)
    cfg = write_config(tmp_path / "asha.toml", ASHA)
    out = tmp_path / "o"
    proc = start([mpiexec_path(), "-n", "2", PYTHON, "-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"])
    wait_until(lambda: len(_units(out)) >= 3, proc, "3 journaled units", timeout=400)
    os.kill(_rank_pids(proc.pid, "hpcml.cv")[victim], signal.SIGKILL)
    done = finish(proc, 120)
    assert done.returncode == KILLED_RANK_EXIT, (done.returncode, done.stderr[-3000:])
    first_units, first_events = _asha_journal(out)
    assert len(first_units) >= 3 and not (out / "cv_results.json").exists()
    resumed = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    units, events = _asha_journal(out)
    assert units[: len(first_units)] == first_units and events[: len(first_events)] == first_events
    assert len({u["unit"] for u in units}) == len(units)  # nothing recorded before the kill ran again
    AshaRule.replay(6, 2, 3, events)  # every decision is the rule's given the finishes logged before it (2 rungs)
    results = json.loads((out / "cv_results.json").read_text())
    assert results["iter"].count(0) == 6 and set(results["iter"]) == {0, 1}
    # which candidates are promoted depends on arrival order (docs/adaptive.md); a (candidate, rung)'s scores
    # do not: every row the resumed run shares with an uninterrupted run has its exact scores
    ref = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "ref"), "--quiet"], timeout=500)
    assert ref.returncode == 0, ref.stderr[-3000:]
    reference = json.loads((tmp_path / "ref" / "cv_results.json").read_text())

    def rows(table: dict) -> dict:
        keys = [k for k in table if k.startswith(("split", "mean_test", "std_test"))]  # not ranks: other rows
        return {
            (json.dumps(table["params"][i], sort_keys=True), table["n_resources"][i]): [table[k][i] for k in keys]
            for i in range(len(table["params"]))
        }

    ours, theirs = rows(results), rows(reference)
    shared = set(ours) & set(theirs)
    assert sum(n == 60 for _, n in shared) == 6 and all(ours[key] == theirs[key] for key in shared)


def _big_blobs(folder: Path) -> None:
    rng = np.random.RandomState(1)
    with h5py.File(folder / "big.h5", "w") as fh:
        fh["X"] = rng.randn(100_000, 10)  # unstructured: Lloyd needs many iterations per init


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("ranks", "victim"), [(2, 1), (2, 0), (3, 2)])
def test_sigkill_during_kmeans_lloyd_ends_every_rank_and_writes_nothing(tmp_path, ranks, victim):
    _big_blobs(tmp_path)
    text = '[data]\npath = "big.h5"\n\n[model]\nn_clusters = 30\nn_init = 3\ntol = 0.0\nrandom_state = 0\n'
    cfg = write_config(tmp_path / "k.toml", text + "\n[run]\nverbose = true\n")
    out, log = tmp_path / "o", tmp_path / "stdout.txt"
    # stdout (rank 0's "Iteration i" lines) to a file the test can read while the fit runs
    cmd = [mpiexec_path(), "-n", str(ranks), PYTHON, "-m", "hpcml.cluster", str(cfg), "--out", str(out)]
    proc = start(["sh", "-c", f'exec "$@" > "{log}"', "sh", *cmd])
    wait_until(lambda: log.exists() and "Iteration 3," in log.read_text(), proc, "Lloyd iteration 3", timeout=400)
    pids = _rank_pids(proc.pid, "hpcml.cluster")
    assert set(pids) == set(range(ranks)), pids
    os.kill(pids[victim], signal.SIGKILL)
    done = finish(proc, 120)
    assert done.returncode == KILLED_RANK_EXIT, (done.returncode, done.stderr[-3000:])
    assert "Killed (signal 9)" in log.read_text()
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []  # no model, labels or temporary file


@pytest.fixture
def shm_dir():
    """A fresh tmpfs folder for this test's node-shared fold files (HPCML_SHM_DIR); removed at the end."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="hpcml-test-", dir="/dev/shm"))
    yield folder
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("ranks", "spec"), [(3, "test-rows:1:kill"), (2, "test-rows:0:kill"), (3, "test-rows:2:1:kill")]
)
def test_sigkill_holding_the_fold_files_lock_leaves_nothing_in_dev_shm(digits, shm_dir, ranks, spec):
    cfg, out = digits / "grid.toml", digits / f"grid-{spec.replace(':', '-')}"
    env = {"HPCML_FOLD_COPIES": "node", "HPCML_SHM_DIR": str(shm_dir)}
    args = ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"]
    proc = run_mpi(ranks, args, timeout=500, env={**env, "HPCML_INJECT_FAULT": spec})
    assert proc.returncode == KILLED_RANK_EXIT, (proc.returncode, proc.stderr[-3000:])
    assert "Killed (signal 9)" in proc.stdout, proc.stdout[-2000:]
    assert sorted(os.listdir(shm_dir)) == []  # the fold file was unlinked once every rank had opened it
    before = _units(out)
    assert len(before) < N_GRID_UNITS and len(set(before)) == len(before)
    proc = run_mpi(ranks, [*args, "--resume"], timeout=500, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(_units(out)) == list(range(N_GRID_UNITS))
    assert _results_without_times(out) == _results_without_times(digits / "grid-ref")
    assert sorted(os.listdir(shm_dir)) == []


@pytest.mark.timeout(600)
def test_exception_holding_the_fold_files_lock_is_one_error_line(digits, shm_dir, tmp_path):
    cfg = digits / "grid.toml"
    env = {"HPCML_FOLD_COPIES": "node", "HPCML_SHM_DIR": str(shm_dir), "HPCML_INJECT_FAULT": "test-rows:2"}
    proc = run_mpi(3, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=500, env=env)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcml: error:")]
    assert errors == [f"hpcml: error: rank 2/3 on {HOST}: InjectedFault: injected fault at 'test-rows' on rank 2"]
    assert sorted(os.listdir(shm_dir)) == []


def test_fault_spec_with_kill():
    assert parse("test-rows:1:kill") == FaultSpec("test-rows", 1, 0, kill=True)
    assert parse("unit:2:5:kill") == FaultSpec("unit", 2, 5, kill=True)
    assert parse("unit:2:5") == FaultSpec("unit", 2, 5, kill=False)
    for bad in ("unit:kill", "unit:0:kill:1", "unit:0:1:2", "test-rows:x:kill"):
        with pytest.raises(UsageError, match=r"expected POINT:RANK\[:COUNT\]\[:kill\]"):
            parse(bad)

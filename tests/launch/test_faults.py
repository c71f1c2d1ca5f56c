"""Faults under real mpiexec: nothing hangs, nothing finished is lost, resume completes.

Every launch has a hard timeout (tests/helpers.run kills the process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from cvfixtures import write_config, write_digits
from helpers import PYTHON, finish, journal_records, kill_group, mpiexec_path, ready_count, run_mpi, start, wait_until

from hpcml.comm import HOST
from hpcml.env import READY_FILE

SLOW = """\
[data]
path = "digits.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [0.1, 1, 10, 100], gamma = [1e-4, 1e-3, 1e-2] }

[[model]]
name = "tree"
estimator = "sklearn.tree.DecisionTreeClassifier"
params = { random_state = 0 }
grid = { max_depth = [4, 8, "None"] }

[cv]
splitter = "StratifiedKFold"
n_splits = 5
shuffle = true
random_state = 0

[scoring]
metrics = ["accuracy", "f1_macro"]
refit = "accuracy"
"""
N_UNITS = 15 * 5
COMPARED = ("mean_test_", "std_test_", "rank_test_", "split")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    write_digits(tmp / "digits.h5", n=1797)
    cfg = write_config(tmp / "search.toml", SLOW)
    ref = tmp / "reference"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(ref), "--quiet"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    return tmp, cfg, json.loads((ref / "cv_results.json").read_text())


def _journal_units(folder: Path) -> list[int]:
    return [record["unit"] for record in journal_records(folder, "unit")]


def _assert_same_results(folder: Path, reference: dict) -> None:
    ours = json.loads((folder / "cv_results.json").read_text())
    assert set(ours) == set(reference)
    for key, values in reference.items():
        if key.startswith(COMPARED) or key in ("params", "model"):
            assert ours[key] == values, key


#: What mpiexec (MPICH's hydra) returns when one rank is killed by SIGKILL: the signal's number.
KILLED_RANK_EXIT = 9


def _start(n: int, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start mpiexec in its own process group (killed with the test if it is still running then)."""
    return start([mpiexec_path(), "-n", str(n), PYTHON, *args], env=env)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for the launch; a hang kills its process group and fails the test."""
    try:
        done = finish(proc, timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung: killed after {exc.timeout} s\n{(exc.stderr or '')[-2000:]}")
    return done.returncode, done.stdout, done.stderr


def _wait_for_units(folder: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    wait_until(lambda: len(_journal_units(folder)) >= count, proc, f"{count} journaled units", timeout)


@pytest.mark.parametrize(
    ("point", "folds"), [("load", "auto"), ("unit", "auto"), ("worker", "auto"), ("unit", "node"), ("worker", "node")]
)
def test_exception_on_rank_2_ends_every_rank(search, point, folds):
    tmp, cfg, _ = search
    out = tmp / f"fault-{point}-{folds}"
    # a hang fails by the launch's timeout (the group is killed); no wall-time assert
    proc = run_mpi(
        4,
        ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"],
        timeout=90,
        env={"HPCML_INJECT_FAULT": f"{point}:2", "HPCML_FOLD_COPIES": folds},
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcml: error:")]
    assert errors == [
        "hpcml: error: rank 2/4 on " + HOST + f": InjectedFault: injected fault at '{point}' on rank 2"
    ], proc.stderr[-3000:]


def test_fit_raise_ends_cleanly_with_original_message(search, tmp_path):
    tmp, _, _ = search
    cfg = write_config(
        tmp_path / "raise.toml",
        SLOW.replace('path = "digits.h5"', f'path = "{tmp / "digits.h5"}"')
        .replace("random_state = 0 }", "random_state = 0, max_depth = -3 }")
        .replace('max_depth = [4, 8, "None"]', "min_samples_leaf = [1, 2]")
        + '\n[run]\nerror_score = "raise"\n',
    )
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("Traceback") == 1, proc.stderr
    assert "max_depth" in proc.stderr and "error_score='raise'" in proc.stderr


def test_sigterm_then_resume_gives_identical_results(search):
    tmp, cfg, reference = search
    out = tmp / "sigterm"
    proc = _start(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "30"])
    _wait_for_units(out, 10, proc)
    proc.send_signal(signal.SIGTERM)  # hydra forwards it to every rank
    code, _, err = _finish(proc, 60)
    assert code == 3, err
    assert "--resume" in err
    first = _journal_units(out)
    assert 10 <= len(first) < N_UNITS
    assert (out / "cv_results.partial.json").exists() and not (out / "cv_results.json").exists()
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    units = _journal_units(out)
    assert sorted(units) == list(range(N_UNITS)), "every unit exactly once across both runs"
    _assert_same_results(out, reference)
    assert not (out / "cv_results.partial.json").exists()


def test_node_shared_folds_sigterm_then_resume(search):
    """Split-by-split runs on one node-shared fold: stop part-way, resume only the splits left."""
    tmp, cfg, reference = search
    out = tmp / "node-folds"
    env = {"HPCML_FOLD_COPIES": "node"}
    proc = _start(3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "30"], env=env)
    _wait_for_units(out, 20, proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = _finish(proc, 60)
    assert code == 3, err
    first = _journal_units(out)
    report = json.loads((out / "run.json").read_text())
    assert report["folds"]["copies"] == "node", report["folds"]
    assert 1 <= report["folds"]["phases"] <= 5
    splits_left = {u % 5 for u in set(range(N_UNITS)) - set(first)}
    proc = run_mpi(3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_journal_units(out)) == list(range(N_UNITS)), "every unit exactly once across both runs"
    report = json.loads((out / "run.json").read_text())
    assert report["folds"]["copies"] == "node" and report["folds"]["phases"] == len(splits_left)
    _assert_same_results(out, reference)


def _rank_pids(mpiexec_pid: int) -> dict[int, int]:
    import psutil

    pids = {}
    for child in psutil.Process(mpiexec_pid).children(recursive=True):
        try:
            environ = child.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if "PMI_RANK" in environ and "hpcml.cv" in " ".join(child.cmdline()):
            pids[int(environ["PMI_RANK"])] = child.pid
    return pids


def test_sigkill_of_a_worker_then_resume(search):
    tmp, cfg, reference = search
    out = tmp / "sigkill"
    proc = _start(3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"])
    _wait_for_units(out, 12, proc)
    pids = _rank_pids(proc.pid)
    assert set(pids) == {0, 1, 2}, pids
    os.kill(pids[1], signal.SIGKILL)
    code, _, err = _finish(proc, 60)  # a hang fails here: the other ranks must not wait forever
    assert code == KILLED_RANK_EXIT, (code, err[-2000:])
    before = _journal_units(out)
    assert len(before) >= 12
    proc = run_mpi(3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    units = _journal_units(out)
    assert sorted(units) == list(range(N_UNITS)), "no finished unit recomputed, none missing"
    _assert_same_results(out, reference)


def test_resume_refuses_changed_config_or_data(search, tmp_path):
    tmp, cfg, _ = search
    import shutil

    out = tmp_path / "o"
    small = write_config(
        tmp_path / "s.toml",
        SLOW.replace('path = "digits.h5"', f'path = "{tmp / "digits.h5"}"').replace("C = [0.1, 1, 10, 100]", "C = [1]"),
    )
    assert run_mpi(2, ["-m", "hpcml.cv", str(small), "--out", str(out), "--quiet"], timeout=120).returncode == 0
    changed = write_config(tmp_path / "s.toml", small.read_text().replace("C = [1]", "C = [2]"))
    proc = run_mpi(2, ["-m", "hpcml.cv", str(changed), "--out", str(out), "--quiet", "--resume"], timeout=120)
    assert proc.returncode == 2 and "config file changed" in proc.stderr, proc.stderr
    # same config, different data
    write_config(tmp_path / "s.toml", small.read_text().replace("C = [2]", "C = [1]"))
    shutil.copy(tmp / "digits.h5", tmp_path / "digits.h5")
    cfg2 = write_config(
        tmp_path / "s.toml", small.read_text().replace(f'path = "{tmp / "digits.h5"}"', 'path = "digits.h5"')
    )
    out2 = tmp_path / "o2"
    assert run_mpi(1, ["-m", "hpcml.cv", str(cfg2), "--out", str(out2), "--quiet"], timeout=120).returncode == 0
    import h5py

    with h5py.File(tmp_path / "digits.h5", "r+") as fh:
        fh["X"][0, 0] += 1.0
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg2), "--out", str(out2), "--quiet", "--resume"], timeout=120)
    assert proc.returncode == 2 and "data changed" in proc.stderr, proc.stderr


def test_nan_in_y_is_one_error_line(tmp_path):
    from hpcml.data import write_dataset

    y = np.arange(50, dtype=float) % 2
    y[7] = np.nan
    write_dataset(tmp_path / "digits.h5", np.random.default_rng(0).normal(size=(50, 3)), y)
    cfg = write_config(tmp_path / "c.toml", SLOW)
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o")], timeout=60)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "NaN" in lines[0], proc.stderr


def test_torn_journal_line_is_tolerated_on_resume(search, tmp_path):
    tmp, cfg, reference = search
    out = tmp / "torn"
    proc = _start(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"])
    _wait_for_units(out, 8, proc)
    kill_group(proc)
    with open(out / "journal.jsonl", "a") as fh:
        fh.write('{"type":"unit","unit":3,"test_sco')  # a write cut by the kill
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    _assert_same_results(out, reference)


def test_time_limit_stops_dispatch_then_resume_completes(search):
    tmp, cfg, reference = search
    out = tmp / "timelimit"
    # A quarter of the uninterrupted run's wall time stops it part-way on a fast
    # machine and a slow one alike (the reference run took it on this machine).
    wall = json.loads((tmp / "reference" / "run.json").read_text())["wall_seconds"]
    limit = f"{max(0.25 * wall, 0.1):.2f}"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--time-limit", limit], timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "time limit" in proc.stderr
    done = _journal_units(out)
    assert len(done) < N_UNITS
    report = json.loads((out / "run.json").read_text())
    assert report["status"] == "incomplete" and report["stopped_by"] == "time limit"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_journal_units(out)) == list(range(N_UNITS))
    _assert_same_results(out, reference)


def test_signal_during_start_up_is_not_lost(search):
    tmp, cfg, _ = search
    out = tmp / "early"
    ready = out.parent / "early-ready"
    proc = _start(
        2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "5"], env={READY_FILE: str(ready)}
    )
    # both ranks have their handlers (installed before scikit-learn and the data load); nothing is journaled yet
    wait_until(lambda: ready_count(ready) == 2, proc, "the stop handlers of both ranks")
    proc.send_signal(signal.SIGUSR1)
    code, _, err = _finish(proc, 90)
    assert code == 3, err
    assert len(_journal_units(out)) < N_UNITS


# --------------------------------------------------------------------------------------
# The Python API where scikit-learn works or raises: hpcml must match it on every rank,
# never hang.  One launch per scenario of API_SCRIPT; every rank writes result-RANK.json.
# --------------------------------------------------------------------------------------

API_SCRIPT = r'''
import json, sys, threading, time, warnings
warnings.simplefilter("ignore")
import numpy as np
from mpi4py import MPI
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
import hpcml
from hpcml.comm import origin_of

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()


def report(**fields):
    with open(f"result-{RANK}.json", "w") as fh:  # the ranks' stdout lines may interleave
        json.dump({"rank": RANK, **fields}, fh)


def outcome(fn):
    """What fn raised (type, message, attributes), or {"type": "ok"}."""
    try:
        fn()
    except Exception as exc:
        return {"type": type(exc).__name__, "message": str(exc), "code": getattr(exc, "code", None),
                "origin": origin_of(exc).rank, "remote": type(exc).__module__ == "hpcml.errors"}
    return {"type": "ok"}


class FailsOnFullData(BaseEstimator, ClassifierMixin):
    def __init__(self, c=0):
        self.c = c

    def fit(self, X, y):
        if len(X) == 150:
            raise RuntimeError("refit failed on all data")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class BadError(Exception):
    """Cannot be rebuilt by pickle: __init__ does not take self.args back."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


class RaisesOnRank(BaseEstimator, ClassifierMixin):
    def __init__(self, c=0, rank=0):
        self.c, self.rank = c, rank

    def fit(self, X, y):
        time.sleep(0.05)  # every rank gets units
        if MPI.COMM_WORLD.Get_rank() == self.rank:
            raise BadError(42, "cannot fit")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


class HoldsLock(BaseEstimator, RegressorMixin):
    """Fits fine, but its fitted state cannot be pickled, not even by cloudpickle."""

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        self.lock_ = threading.Lock()
        self.ridge_ = Ridge(alpha=self.alpha).fit(X, y)
        return self

    def predict(self, X):
        return self.ridge_.predict(X)


def _explode():
    raise ValueError("cannot rebuild this object")


class Unloadable:
    """Pickles, but unpickling it raises."""

    def __reduce__(self):
        return (_explode, ())


class MyRidge(Ridge):
    """A class of __main__: cloudpickle would send it by value; hpcml keeps it by reference."""


def lambda_pipeline(func):
    return Pipeline([("f", FunctionTransformer(func)), ("r", MyRidge())])


def refit_raises():
    X, y = load_iris(return_X_y=True)
    report(
        sklearn=outcome(lambda: skms.GridSearchCV(FailsOnFullData(), {"c": [0, 1]}, cv=3).fit(X, y)),
        hpcml=outcome(lambda: hpcml.GridSearchCV(FailsOnFullData(), {"c": [0, 1]}, cv=3).fit(X, y)),
    )


def lambda_grid():
    X, y = load_diabetes(return_X_y=True)
    grid = {"f__func": [None, lambda Z: Z * 2.0]}
    s = skms.GridSearchCV(lambda_pipeline(None), grid, cv=3).fit(X, y)
    h = hpcml.GridSearchCV(lambda_pipeline(None), grid, cv=3).fit(X, y)
    report(sklearn=list(s.cv_results_["mean_test_score"]), hpcml=list(h.cv_results_["mean_test_score"]),
           same_predictions=bool(np.allclose(h.predict(X), s.predict(X), rtol=0, atol=1e-10)))


def lambda_estimator():
    X, y = load_diabetes(return_X_y=True)
    make = lambda: lambda_pipeline(lambda Z: Z * 2.0)
    grid = {"r__alpha": [0.1, 1.0]}
    s = skms.GridSearchCV(make(), grid, cv=3).fit(X, y)
    h = hpcml.GridSearchCV(make(), grid, cv=3).fit(X, y)
    report(sklearn=list(s.cv_results_["mean_test_score"]), hpcml=list(h.cv_results_["mean_test_score"]),
           same_predictions=bool(np.allclose(h.predict(X), s.predict(X), rtol=0, atol=1e-10)),
           same_class=type(h.best_estimator_.steps[-1][1]) is MyRidge)


def lambda_return_estimator():
    X, y = load_diabetes(return_X_y=True)
    make = lambda: lambda_pipeline(lambda Z: Z * 2.0)
    s = skms.cross_validate(make(), X, y, cv=3, return_estimator=True)
    h = hpcml.cross_validate(make(), X, y, cv=3, return_estimator=True)
    report(sklearn=list(s["test_score"]), hpcml=list(h["test_score"]),
           same_predictions=all(np.allclose(a.predict(X), b.predict(X), rtol=0, atol=1e-10)
                                for a, b in zip(h["estimator"], s["estimator"])),
           same_class=all(type(a.steps[-1][1]) is MyRidge for a in h["estimator"]))


def unpicklable_exception(rank):
    X, y = load_iris(return_X_y=True)
    kw = dict(cv=3, error_score="raise")
    report(
        sklearn=outcome(lambda: skms.GridSearchCV(RaisesOnRank(rank=RANK), {"c": [0, 1]}, **kw).fit(X, y)),
        hpcml=outcome(lambda: hpcml.GridSearchCV(RaisesOnRank(rank=rank), {"c": [0, 1]}, **kw).fit(X, y)),
        hpcml_cv=outcome(lambda: hpcml.cross_validate(RaisesOnRank(rank=rank), X, y, **kw)),
    )


def unsendable_refit():
    X, y = load_diabetes(return_X_y=True)
    report(
        sklearn=outcome(lambda: skms.GridSearchCV(HoldsLock(), {"alpha": [0.1, 1.0]}, cv=3).fit(X, y)),
        hpcml=outcome(lambda: hpcml.GridSearchCV(HoldsLock(), {"alpha": [0.1, 1.0]}, cv=3).fit(X, y)),
    )


def unsendable_return_estimator():
    X, y = load_diabetes(return_X_y=True)
    report(hpcml=outcome(lambda: hpcml.cross_validate(HoldsLock(), X, y, cv=6, return_estimator=True)))


def dispatcher_error():
    from hpcml.cv.schedule import UnitQueue, run_units

    def work(unit):
        time.sleep(0.01)
        return unit

    def on_results(source, items):
        if source != 0:
            raise OSError("journal: no space left on device")

    results = {}
    for threaded in (True, False):
        queue = UnitQueue([], range(40), COMM.Get_size()) if RANK == 0 else None
        results[f"threaded={threaded}"] = outcome(lambda: run_units(
            COMM, work, queue=queue, on_results=on_results if RANK == 0 else None, threaded=threaded))
    report(hpcml=results)


def unloadable_result():
    from hpcml.cv.schedule import UnitQueue, run_units

    def work(unit):
        time.sleep(0.01)
        return Unloadable() if RANK == 1 else unit

    queue = UnitQueue([], range(40), COMM.Get_size()) if RANK == 0 else None
    report(hpcml=outcome(lambda: run_units(COMM, work, queue=queue)))


name = sys.argv[1]
if name.startswith("unpicklable_exception_on_rank"):
    unpicklable_exception(int(name[-1]))
else:
    globals()[name]()
COMM.Barrier()
'''


def _api(tmp_path: Path, scenario: str, n: int = 2) -> list[dict]:
    script = tmp_path / "api_faults.py"
    script.write_text(API_SCRIPT)
    try:
        proc = run_mpi(n, [str(script), scenario], timeout=90, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{scenario}: hung (killed after 90 s)\n{(exc.stderr or '')[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in range(n)]
    assert [r["rank"] for r in results] == list(range(n))
    return results


def test_api_refit_that_raises_raises_on_every_rank(tmp_path):
    for r in _api(tmp_path, "refit_raises"):
        assert r["sklearn"]["type"] == "RuntimeError"
        assert r["hpcml"]["type"] == "RuntimeError" and r["hpcml"]["message"] == r["sklearn"]["message"], r
        assert r["hpcml"]["origin"] == 0


@pytest.mark.parametrize("scenario", ["lambda_grid", "lambda_estimator", "lambda_return_estimator"])
def test_api_lambdas_travel_by_cloudpickle(tmp_path, scenario):
    for r in _api(tmp_path, scenario):
        np.testing.assert_allclose(r["hpcml"], r["sklearn"], rtol=0, atol=1e-12)
        assert r["same_predictions"], r
        assert r.get("same_class", True), r  # a class of the script stays that class on every rank


@pytest.mark.parametrize("rank", [0, 1])
def test_api_unpicklable_exception_reaches_every_rank_with_its_type(tmp_path, rank):
    """An exception pickle cannot rebuild (2-argument __init__), raised on rank 0 or on a worker."""
    for r in _api(tmp_path, f"unpicklable_exception_on_rank{rank}"):
        if r["rank"] == rank:
            assert r["sklearn"] == {**r["sklearn"], "type": "BadError", "message": "42: cannot fit", "code": 42}
        for key in ("hpcml", "hpcml_cv"):
            got = r[key]
            assert (got["type"], got["message"], got["code"]) == ("BadError", "42: cannot fit", 42), got


def test_api_unsendable_refit_is_a_clear_error_on_every_rank(tmp_path):
    for r in _api(tmp_path, "unsendable_refit"):
        assert r["sklearn"]["type"] == "ok"
        got = r["hpcml"]
        assert got["type"] == "SerializationError" and "best_estimator_" in got["message"], got
        assert "cloudpickle failed" in got["message"] and "lock" in got["message"], got


def test_api_unsendable_results_are_a_clear_error_on_every_rank(tmp_path):
    for r in _api(tmp_path, "unsendable_return_estimator"):
        got = r["hpcml"]
        assert got["type"] == "SerializationError" and "cloudpickle failed" in got["message"], got


def test_scheduler_dispatcher_exception_reaches_every_rank(tmp_path):
    for r in _api(tmp_path, "dispatcher_error"):
        for mode, got in r["hpcml"].items():
            assert got["type"] == "OSError" and "no space left" in got["message"], (mode, got)


def test_scheduler_result_rank0_cannot_unpickle_is_an_error_on_every_rank(tmp_path):
    for r in _api(tmp_path, "unloadable_result"):
        got = r["hpcml"]
        assert got["type"] == "SerializationError" and "rank 1" in got["message"], got
        assert "cannot rebuild" in got["message"], got


# --------------------------------------------------------------------------------------
# The CLI with user code
# --------------------------------------------------------------------------------------

MYMOD = """\
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class BadError(Exception):
    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")


class Raiser(BaseEstimator, ClassifierMixin):
    def __init__(self, c=0):
        self.c = c

    def fit(self, X, y):
        raise BadError(42, "cannot fit")
"""


def test_cli_unpicklable_exception_exits_1_naming_it(tmp_path):
    write_digits(tmp_path / "digits.h5", n=120)
    (tmp_path / "mymod.py").write_text(MYMOD)
    cfg = write_config(
        tmp_path / "c.toml",
        '[data]\npath = "digits.h5"\n[[model]]\nestimator = "mymod.Raiser"\ngrid = { c = [0, 1, 2] }\n'
        '[cv]\nsplitter = "KFold"\nn_splits = 3\n[run]\nerror_score = "raise"\n',
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    for _ in range(2):  # which rank's fit raises first varies
        try:
            proc = run_mpi(
                2,
                ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--overwrite", "--quiet"],
                timeout=60,
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"hung\n{(exc.stderr or '')[-3000:]}")
        assert proc.returncode == 1, proc.stderr[-3000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hpcml: error:")]
        assert len(errors) == 1 and "BadError: 42: cannot fit" in errors[0], proc.stderr[-3000:]
        assert proc.stderr.count("Traceback") == 1, proc.stderr


def test_cli_best_model_keeps_the_configured_comm(tmp_path):
    """best_model.joblib holds the model as configured (comm = None), not the comm="self" of the refit."""
    import joblib
    from sklearn.datasets import load_breast_cancer

    from hpcml.data import write_dataset

    X, y = load_breast_cancer(return_X_y=True)
    write_dataset(tmp_path / "bc.h5", (X - X.mean(0)) / X.std(0), y)
    cfg = write_config(
        tmp_path / "c.toml",
        '[data]\npath = "bc.h5"\n[[model]]\nestimator = "hpcml.sgd.SGDClassifier"\n'
        "params = { random_state = 0 }\ngrid = { alpha = [1e-4, 1e-2] }\n[cv]\nn_splits = 3\n",
    )
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = joblib.load(tmp_path / "o" / "best_model.joblib")
    assert model.get_params()["comm"] is None
    assert model.predict((X[:5] - X.mean(0)) / X.std(0)).shape == (5,)


def test_double_sigint_is_the_launchers_force_abort_and_loses_no_finished_unit(search):
    """Two SIGINTs 30 ms apart to the process group: MPICH's mpiexec force-aborts (its second Ctrl-C).

    hpcml cannot choose the launcher's exit status then (docs/reliability.md); what it guarantees is that
    the journal holds every unit it recorded and ``--resume`` completes with the uninterrupted results.
    """
    tmp, cfg, reference = search
    out = tmp / "double-sigint"
    proc = _start(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "30"])
    _wait_for_units(out, 6, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.03)  # the scenario itself: a second Ctrl-C 30 ms after the first, not a synchronisation
    os.killpg(proc.pid, signal.SIGINT)
    _finish(proc, 120)
    recorded = _journal_units(out)
    assert len(recorded) >= 6 and len(set(recorded)) == len(recorded)
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    units = _journal_units(out)
    assert sorted(units) == list(range(N_UNITS)), "no finished unit recomputed, none missing"
    _assert_same_results(out, reference)


def _sklearn_slow_search(n: int):
    """scikit-learn's GridSearchCV of the SLOW config (both models, in hpcml's candidate order)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    X, y = load_digits(return_X_y=True)
    grid = [
        {"m": [SVC()], "m__C": [0.1, 1, 10, 100], "m__gamma": [1e-4, 1e-3, 1e-2]},
        {"m": [DecisionTreeClassifier(random_state=0)], "m__max_depth": [4, 8, None]},
    ]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return GridSearchCV(Pipeline([("m", SVC())]), grid, cv=cv, scoring=["accuracy", "f1_macro"], refit="accuracy").fit(
        X[:n], y[:n]
    )


@pytest.mark.parametrize(("first", "then"), [(3, 1), (2, 4)])
def test_resume_with_another_rank_count_equals_sklearn(search, first, then):
    tmp, cfg, _ = search
    out = tmp / f"resize-{first}-{then}"
    proc = _start(first, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "30"])
    _wait_for_units(out, 10, proc)
    proc.send_signal(signal.SIGTERM)
    code, _, err = _finish(proc, 60)
    assert code == 3, err
    done = _journal_units(out)
    assert 10 <= len(done) < N_UNITS
    proc = run_mpi(then, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=400)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_journal_units(out)) == list(range(N_UNITS)), "every unit exactly once across both runs"
    ours = json.loads((out / "cv_results.json").read_text())
    reference = _sklearn_slow_search(1797)
    theirs = reference.cv_results_
    compared = sorted(k for k in theirs if k.startswith(COMPARED))
    assert compared and set(compared) <= set(ours)
    for key in compared:
        if key.startswith("rank_"):
            assert ours[key] == list(theirs[key]), key
        else:
            np.testing.assert_allclose(np.asarray(ours[key], dtype=float), theirs[key], rtol=0, atol=1e-12, err_msg=key)
    best = json.loads((out / "best.json").read_text())
    assert best["best_index"] == reference.best_index_

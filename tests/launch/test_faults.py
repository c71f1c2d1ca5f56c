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
from helpers import PYTHON, mpi_env, mpiexec_path, run_mpi

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
    path = folder / "journal.jsonl"
    if not path.exists():
        return []
    units = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "unit":
            units.append(record["unit"])
    return units


def _assert_same_results(folder: Path, reference: dict) -> None:
    ours = json.loads((folder / "cv_results.json").read_text())
    assert set(ours) == set(reference)
    for key, values in reference.items():
        if key.startswith(COMPARED) or key in ("params", "model"):
            assert ours[key] == values, key


def _start(n: int, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [mpiexec_path(), "-n", str(n), PYTHON, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=mpi_env(env),
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str, float]:
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung: killed after {timeout} s\n{err[-2000:]}")
    return proc.returncode, out, err, time.monotonic() - start


def _wait_for_units(folder: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_journal_units(folder)) < count:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "search made no progress"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("point", "folds"), [("load", "auto"), ("unit", "auto"), ("worker", "auto"), ("unit", "node"), ("worker", "node")]
)
def test_exception_on_rank_2_ends_every_rank(search, point, folds):
    tmp, cfg, _ = search
    out = tmp / f"fault-{point}-{folds}"
    start = time.monotonic()
    proc = run_mpi(
        4,
        ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"],
        timeout=90,
        env={"HPCML_INJECT_FAULT": f"{point}:2", "HPCML_FOLD_COPIES": folds},
    )
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert elapsed < 60
    assert "injected fault" in proc.stderr and "rank 2" in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcml: error:")]
    assert errors, proc.stderr


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
    code, _, err, took = _finish(proc, 60)
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
    code, _, err, _ = _finish(proc, 60)
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
    code, _, err, took = _finish(proc, 60)
    assert code != 0
    assert took < 30
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
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    with open(out / "journal.jsonl", "a") as fh:
        fh.write('{"type":"unit","unit":3,"test_sco')  # a write cut by the kill
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    _assert_same_results(out, reference)


def test_time_limit_stops_dispatch_then_resume_completes(search):
    tmp, cfg, reference = search
    out = tmp / "timelimit"
    start = time.monotonic()
    # The whole search needs ~10 s of fits; 2 s stop it part-way on any machine.
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--time-limit", "2"], timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "time limit" in proc.stderr
    assert time.monotonic() - start < 60
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
    proc = _start(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "5"])
    time.sleep(1.5)  # ranks are importing scikit-learn / reading data
    proc.send_signal(signal.SIGUSR1)
    code, _, err, took = _finish(proc, 90)
    assert code == 3, err
    assert len(_journal_units(out)) < N_UNITS

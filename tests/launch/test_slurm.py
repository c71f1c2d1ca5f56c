"""The Slurm recipes in slurm/ end to end, on the one-node cluster of slurm/local-cluster.sh.

Start the cluster first (root, installs slurm-wlm + munge when missing)::

    bash slurm/local-cluster.sh start
    pytest -m slurm tests/launch/test_slurm.py

Without a usable cluster these tests skip, except under ``CI``, where a skipped
Slurm test would hide a broken recipe: there they fail.

Every job runs in ``tmp_path`` (same machine, so the job sees it), gets the
submitting environment (sbatch's default ``--export=ALL``) with this venv first
on the PATH, and is waited for with a bound; a job still running at the bound
is cancelled.  No accounting daemon: job states come from ``scontrol``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import PYTHON, ROOT, mpiexec_path, run_mpi

pytestmark = pytest.mark.slurm

SLURM = ROOT / "slurm"
STATE_DIR = Path(os.environ.get("HPCML_SLURM_DIR", "/tmp/hpcml-slurm"))
FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}
RESULT_FILES = ("cv_results.json", "cv_results.csv", "best.json", "journal.jsonl", "run.json")
COMPARED = re.compile(r"^(mean_test_|split\d+_test_|rank_test_)")


# --------------------------------------------------------------------------- cluster


def _slurm_env() -> dict[str, str]:
    """The submitting environment: this venv first on the PATH, our Python and mpiexec."""
    env = dict(os.environ)
    if "SLURM_CONF" not in env and not Path("/etc/slurm/slurm.conf").exists():
        if (STATE_DIR / "slurm.conf").exists():
            env["SLURM_CONF"] = str(STATE_DIR / "slurm.conf")
    env["PATH"] = str(Path(PYTHON).parent) + os.pathsep + env.get("PATH", "")
    env["HPCML_PYTHON"] = PYTHON
    env["HPCML_MPIEXEC"] = mpiexec_path()
    env["PYTHONUNBUFFERED"] = "1"
    env["MPIR_CVAR_POLLS_BEFORE_YIELD"] = "1"
    for key in ("PYTEST_CURRENT_TEST", "HPCML_LAUNCHER", "HPCML_RESTART", "HPCML_NO_PROGRESS"):
        env.pop(key, None)
    return env


def _cluster_problem(env: dict[str, str]) -> str | None:
    """Why the local cluster cannot run jobs, or None when it can."""
    if shutil.which("sinfo", path=env["PATH"]) is None:
        return "Slurm client commands (sinfo) not installed"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip() or proc.stdout.strip()}"
    states = [line.split()[-1] for line in proc.stdout.splitlines() if line.strip()]
    if not any(state.rstrip("*~#!%$@^-") in ("idle", "mix") for state in states):
        return f"no idle Slurm node (sinfo: {proc.stdout.strip() or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """Environment for sbatch; skips (fails under CI) when the local cluster is not up."""
    env = _slurm_env()
    problem = _cluster_problem(env)
    if problem:
        hint = "start it with `bash slurm/local-cluster.sh start`"
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the local Slurm cluster: {problem}; {hint}", pytrace=False)
        pytest.skip(f"local Slurm cluster not usable: {problem}; {hint}")
    return env


# --------------------------------------------------------------------------- jobs


def sbatch(args: list[str], env: dict[str, str], cwd: Path) -> int:
    """Submit; return the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"sbatch {args} failed: {proc.stderr}{proc.stdout}"
    return int(proc.stdout.strip().split(";")[0])


def job_records(job: int, env: dict[str, str]) -> list[dict[str, str]]:
    """``scontrol -o show job`` as dicts (several for an array); [] once the job is gone."""
    proc = subprocess.run(
        ["scontrol", "-o", "show", "job", str(job)], env=env, capture_output=True, text=True, timeout=30
    )
    if proc.returncode != 0:
        return []
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in proc.stdout.splitlines() if line.strip()]


def logs(folder: Path) -> str:
    """All job logs in ``folder`` (for failure messages)."""
    parts = []
    for path in sorted(folder.glob("hpcml-*.log")):
        parts.append(f"----- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts) or "(no job logs)"


def scancel(jobs: list[int], env: dict[str, str]) -> None:
    """Cancel jobs (best effort)."""
    if jobs:
        subprocess.run(["scancel", *map(str, jobs)], env=env, capture_output=True, timeout=30)


def wait_job(job: int, env: dict[str, str], cwd: Path, timeout: float) -> list[dict[str, str]]:
    """Poll until every record of ``job`` is final; cancel it and fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    records: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        records = job_records(job, env)
        if not records:
            pytest.fail(f"job {job} vanished from scontrol (MinJobAge too short?)\n{logs(cwd)}")
        # An array not yet split into tasks shows one PENDING record: not final.
        if all(r.get("JobState") in FINAL_STATES for r in records):
            return records
        time.sleep(0.5)
    scancel([job], env)
    pytest.fail(f"job {job} not finished after {timeout:.0f} s: {records}\n{logs(cwd)}")


def assert_exit(records: list[dict[str, str]], code: int, cwd: Path) -> None:
    """Every record ended with exit status ``code`` (scontrol's ExitCode=status:signal)."""
    for r in records:
        assert r.get("ExitCode") == f"{code}:0", (
            f"job {r.get('JobId')} state {r.get('JobState')} ExitCode {r.get('ExitCode')}, wanted {code}:0\n{logs(cwd)}"
        )


# --------------------------------------------------------------------------- data and configs


def write_digits(folder: Path) -> Path:
    """scikit-learn's digits as HDF5 (datasets X, y)."""
    import h5py
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    path = folder / "digits.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("X", data=X.astype(np.float64))
        fh.create_dataset("y", data=y.astype(np.int64))
    return path


def write_search(folder: Path, name: str, model: str, data: Path, metrics: tuple[str, ...] = ("accuracy",)) -> Path:
    """A search config with one ``[[model]]`` block (given as TOML lines)."""
    path = folder / f"{name}.toml"
    path.write_text(
        f"""\
[data]
path = "{data}"
X = "X"
y = "y"

{model}

[cv]
splitter = "StratifiedKFold"
n_splits = 5
shuffle = true
random_state = 0

[scoring]
metrics = {json.dumps(list(metrics))}
refit = "{metrics[0]}"
""",
        encoding="utf-8",
    )
    return path


SVC_SMALL = """\
[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [1, 10], gamma = [1e-4, 1e-3] }"""


def load_results(folder: Path) -> dict:
    with open(folder / "cv_results.json", encoding="utf-8") as fh:
        return json.load(fh)


def assert_same_results(got: dict, want: dict) -> None:
    """Same candidates and the same test scores/ranks (times may differ)."""
    assert got["params"] == want["params"]
    keys = sorted(k for k in want if COMPARED.match(k))
    assert keys, f"no test-score columns in {sorted(want)}"
    assert sorted(k for k in got if COMPARED.match(k)) == keys
    for key in keys:
        a = np.array(got[key], dtype=float)
        b = np.array(want[key], dtype=float)
        np.testing.assert_array_equal(a, b, err_msg=key)


def journal_units(folder: Path) -> list[int]:
    units = []
    with open(folder / "journal.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                if record.get("type") == "unit":
                    units.append(record["unit"])
    return units


def reference(tmp_path: Path, n: int, config: Path, out: str, env: dict[str, str] | None = None) -> dict:
    """The same search by mpiexec directly."""
    proc = run_mpi(n, ["-m", "hpcml.cv", str(config), "--out", str(tmp_path / out), "--quiet"], timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_results(tmp_path / out)


# --------------------------------------------------------------------------- tests


def test_local_cluster_start_is_idempotent(slurm_env: dict[str, str]) -> None:
    proc = subprocess.run(
        ["bash", str(SLURM / "local-cluster.sh"), "start"], env=slurm_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stdout
    status = subprocess.run(
        ["bash", str(SLURM / "local-cluster.sh"), "status"], env=slurm_env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "slurmctld running" in status.stdout


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_cv_sbatch_matches_mpiexec(slurm_env: dict[str, str], tmp_path: Path, launcher: str) -> None:
    data = write_digits(tmp_path)
    config = write_search(tmp_path, "svc", SVC_SMALL, data, metrics=("accuracy", "f1_macro"))
    env = dict(slurm_env, HPCML_LAUNCHER=launcher)
    t0 = time.monotonic()
    job = sbatch(["--ntasks=4", "--time=5", str(SLURM / "cv.sbatch"), str(config)], env, tmp_path)
    want = reference(tmp_path, 4, config, "ref")  # runs while the job does
    records = wait_job(job, env, tmp_path, timeout=240)
    print(f"\ncv.sbatch ({launcher}, 4 tasks): job {job} done in {time.monotonic() - t0:.1f} s")
    assert_exit(records, 0, tmp_path)
    out = tmp_path / "hpcml-out" / str(job)  # default: one folder per job id
    for name in RESULT_FILES:
        assert (out / name).is_file(), f"{out / name} missing\n{logs(tmp_path)}"
    log = (tmp_path / f"hpcml-{job}.log").read_text()
    assert "4 ranks" in log, log
    assert f"launcher {'srun' if launcher == 'srun' else env['HPCML_MPIEXEC']}" in log, log
    assert_same_results(load_results(out), want)


SLOW_MODULE = '''\
"""A k-NN classifier whose fit sleeps HPCML_TEST_SLEEP seconds (a slow search of known length)."""
import os
import time

from sklearn.neighbors import KNeighborsClassifier


class SlowKNN(KNeighborsClassifier):
    def fit(self, X, y):
        time.sleep(float(os.environ.get("HPCML_TEST_SLEEP", "0")))
        return super().fit(X, y)
'''

SLOW_GRID = """\
[[model]]
name = "slowknn"
estimator = "hpcml_slurm_test_slow.SlowKNN"
grid = { n_neighbors = [1, 2, 3, 4, 5, 6], weights = ["uniform", "distance"], p = [1, 2] }"""
SLOW_UNITS = 6 * 2 * 2 * 5  # candidates x folds
SLOW_SLEEP = 1.0  # 120 units x 1 s / 2 ranks = 60 s of work: more than one 1-minute job can do


@pytest.mark.timeout(900)
def test_cv_long_chain_resumes_to_the_uninterrupted_result(slurm_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "hpcml_slurm_test_slow.py").write_text(SLOW_MODULE, encoding="utf-8")
    data = write_digits(tmp_path)
    config = write_search(tmp_path, "slow", SLOW_GRID, data)
    env = dict(
        slurm_env,
        PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), slurm_env.get("PYTHONPATH")])),
        HPCML_TEST_SLEEP=str(SLOW_SLEEP),
        # SBATCH_* is read by every sbatch of the chain (the environment is exported).
        # Slurm checks time limits every 30 s: @10 on a 1-minute job signals 20-50 s in.
        SBATCH_SIGNAL="B:USR1@10",
        HPCML_SIGNAL_DELAY="10",
        HPCML_MAX_RESTARTS="8",
    )
    t0 = time.monotonic()
    first = sbatch(
        ["--time=1", "--ntasks=2", str(SLURM / "cv-long.sbatch"), str(config), "out", "--grace", "10"], env, tmp_path
    )
    # The uninterrupted reference, without the sleep, while the chain runs.
    want = reference(tmp_path, 2, config, "ref", env={"HPCML_TEST_SLEEP": "0", "PYTHONPATH": env["PYTHONPATH"]})

    # Follow the chain: each job queues its successor at its start; an
    # incomplete job leaves it queued, the completing one cancels it.
    jobs = [first]
    states: list[dict[str, str]] = []
    deadline = time.monotonic() + 600
    successor = None
    try:
        while True:
            records = wait_job(jobs[-1], env, tmp_path, timeout=max(1.0, deadline - time.monotonic()))
            states.extend(records)
            log = (tmp_path / f"hpcml-{jobs[-1]}.log").read_text()
            nxt = re.search(r"successor job (\d+) queued", log)
            successor = int(nxt.group(1)) if nxt else None
            if "search complete" in log or successor is None or "incomplete" not in log:
                break
            jobs.append(successor)
    finally:
        pending = [j for j in [*jobs, successor] if j is not None]
        scancel([j for j in pending if any(r.get("JobState") not in FINAL_STATES for r in job_records(j, env))], env)
    elapsed = time.monotonic() - t0
    print(f"\ncv-long.sbatch chain: {len(jobs)} jobs {jobs} in {elapsed:.1f} s")

    assert len(jobs) >= 2, f"the search was not interrupted\n{logs(tmp_path)}"
    first_log = (tmp_path / f"hpcml-{first}.log").read_text()
    assert "received SIGUSR1" in first_log, logs(tmp_path)
    assert_exit(states[:-1], 3, tmp_path)  # interrupted, resumable
    assert_exit(states[-1:], 0, tmp_path)  # the last one completed the search
    for i, job in enumerate(jobs):
        assert f"(restart {i} of" in (tmp_path / f"hpcml-{job}.log").read_text()
    # The completing job cancelled its own (now useless) successor.
    if successor is not None:
        assert all(r.get("JobState") == "CANCELLED" for r in job_records(successor, env)), logs(tmp_path)

    out = tmp_path / "out"
    for name in RESULT_FILES:
        assert (out / name).is_file(), f"{out / name} missing\n{logs(tmp_path)}"
    units = journal_units(out)
    assert len(units) == len(set(units)), "a unit was run twice"
    assert sorted(units) == list(range(SLOW_UNITS))
    assert_same_results(load_results(out), want)


def test_array_sbatch_runs_one_search_per_line(slurm_env: dict[str, str], tmp_path: Path) -> None:
    data = write_digits(tmp_path)
    configs = [
        write_search(tmp_path, "svc", SVC_SMALL, data),
        write_search(
            tmp_path,
            "logreg",
            '[[model]]\nname = "logreg"\nestimator = "sklearn.linear_model.LogisticRegression"\n'
            "params = { max_iter = 500 }\ngrid = { C = [0.1, 1] }",
            data,
        ),
        write_search(
            tmp_path,
            "knn",
            '[[model]]\nname = "knn"\nestimator = "sklearn.neighbors.KNeighborsClassifier"\n'
            "grid = { n_neighbors = [1, 3, 5] }",
            data,
        ),
    ]
    listing = tmp_path / "searches.txt"
    listing.write_text(
        f"# three independent searches\n{configs[0]}\n\n{configs[1]}\n{configs[2]} results/knn\n", encoding="utf-8"
    )
    t0 = time.monotonic()
    # Without SLURM_ARRAY_TASK_ID the script submits itself with --array=1-<configs>.
    proc = subprocess.run(
        ["bash", str(SLURM / "array.sbatch"), str(listing)],
        env=slurm_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Submitted batch job (\d+)", proc.stdout)
    assert match, proc.stdout
    job = int(match.group(1))
    records = wait_job(job, slurm_env, tmp_path, timeout=300)
    print(f"\narray.sbatch (3 x 2 tasks): job {job} done in {time.monotonic() - t0:.1f} s")
    assert sorted(r.get("ArrayTaskId") for r in records) == ["1", "2", "3"], records
    assert_exit(records, 0, tmp_path)
    folders = [
        tmp_path / "hpcml-out" / str(job) / "1-svc",
        tmp_path / "hpcml-out" / str(job) / "2-logreg",
        tmp_path / "results" / "knn",
    ]
    for folder in folders:
        for name in RESULT_FILES:
            assert (folder / name).is_file(), f"{folder / name} missing\n{logs(tmp_path)}"
    assert [r["model"][0] for r in (load_results(f) for f in folders)] == ["svc", "logreg", "knn"]


def test_sgd_sbatch_writes_model_and_history(slurm_env: dict[str, str], tmp_path: Path) -> None:
    data = write_digits(tmp_path)
    config = tmp_path / "sgd.toml"
    config.write_text(
        f"""\
[data]
path = "{data}"
X = "X"
y = "y"

[model]
type = "classifier"
loss = "log_loss"
alpha = 1e-4

[train]
max_iter = 5
batch_size = 64
random_state = 0
""",
        encoding="utf-8",
    )
    t0 = time.monotonic()
    job = sbatch(["--ntasks=2", "--time=5", str(SLURM / "sgd.sbatch"), str(config), "sgd-out"], slurm_env, tmp_path)
    records = wait_job(job, slurm_env, tmp_path, timeout=240)
    print(f"\nsgd.sbatch (2 tasks): job {job} done in {time.monotonic() - t0:.1f} s")
    assert_exit(records, 0, tmp_path)
    out = tmp_path / "sgd-out"
    for name in ("model.npz", "model.joblib", "run.json", "history.json"):
        assert (out / name).is_file(), f"{out / name} missing\n{logs(tmp_path)}"
    report = json.loads((out / "run.json").read_text())
    assert report["tool"] == "hpcml.sgd" and report["n_ranks"] == 2 and report["status"] == "complete"
    assert report["n_iter"] == len(report["epochs"]) <= 5
    assert (out / "history.json").read_bytes() == (out / "run.json").read_bytes()  # deprecated copy


def test_cv_sbatch_stages_the_environment_once_per_node(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """HPCML_STAGE_ENV=1: the ranks run the staged interpreter from node-local storage, same results."""
    data = write_digits(tmp_path)
    config = write_search(tmp_path, "svc", SVC_SMALL, data, metrics=("accuracy",))
    node_local = tmp_path / "node-local"
    node_local.mkdir()
    env = dict(slurm_env, HPCML_STAGE_ENV="1", HPCML_STAGE_DIR=str(node_local), HPCML_LAUNCHER="mpiexec")
    job = sbatch(["--ntasks=2", "--time=5", str(SLURM / "cv.sbatch"), str(config)], env, tmp_path)
    want = reference(tmp_path, 2, config, "ref")
    records = wait_job(job, env, tmp_path, timeout=300)
    assert_exit(records, 0, tmp_path)
    log = (tmp_path / f"hpcml-{job}.log").read_text()
    staged = node_local / f"hpcml-env-{job}"
    # One check line per node: the staged interpreter runs there and imports hpcml from the stage.
    checks = [line.split() for line in log.splitlines() if line.startswith("hpcml-stage: ") and "staged" not in line]
    assert len(checks) == 1, log
    _, _host, prefix, package = checks[0]
    assert Path(prefix).is_relative_to(staged), log
    assert Path(package).is_relative_to(staged), log
    assert f"staged {Path(PYTHON).parent.parent.resolve()} to {staged} on 1 node(s)" in log, log
    assert not staged.exists(), "the staged copy must be removed at the end of the job"
    assert_same_results(load_results(tmp_path / "hpcml-out" / str(job)), want)


def test_kmeans_sbatch_writes_model_labels_and_run(slurm_env: dict[str, str], tmp_path: Path) -> None:
    import h5py
    import numpy as np

    from hpcml.data.h5 import write_dataset

    X = np.random.RandomState(0).normal(size=(600, 4)) + np.repeat(np.arange(3), 200)[:, None] * 6.0
    write_dataset(tmp_path / "blobs.h5", X, None)
    config = tmp_path / "km.toml"
    config.write_text('[data]\npath = "blobs.h5"\n[model]\nn_clusters = 3\ninit = "k-means||"\n', encoding="utf-8")
    t0 = time.monotonic()
    job = sbatch(["--ntasks=2", "--time=5", str(SLURM / "kmeans.sbatch"), str(config), "km-out"], slurm_env, tmp_path)
    records = wait_job(job, slurm_env, tmp_path, timeout=240)
    print(f"\nkmeans.sbatch (2 tasks): job {job} done in {time.monotonic() - t0:.1f} s")
    assert_exit(records, 0, tmp_path)
    out = tmp_path / "km-out"
    for name in ("model.h5", "model.joblib", "labels.h5", "run.json"):
        assert (out / name).is_file(), f"{out / name} missing\n{logs(tmp_path)}"
    assert json.loads((out / "run.json").read_text())["ranks"] == 2
    with h5py.File(out / "labels.h5") as fh:
        labels = fh["labels"][...]
    assert sorted(np.bincount(labels).tolist()) == [200, 200, 200]


# --------------------------------------------------------------------------- cv-long.sbatch failure paths

#: A 5-minute job warned 60 s before its end (the recipe's own @300 would signal at once): these jobs end
#: long before, so no signal reaches them.
SHORT_JOB = ["--time=5", "--signal=B:USR1@60"]

RAISER_MODULE = '''\
"""An estimator whose fit always raises (a crash of the search with error_score="raise")."""
from sklearn.base import BaseEstimator, ClassifierMixin


class Raiser(ClassifierMixin, BaseEstimator):
    def __init__(self, c=0):
        self.c = c

    def fit(self, X, y):
        raise RuntimeError("this fit always fails")
'''

ENV_MODULE = '''\
"""A k-NN classifier that records SLURM_JOB_END_TIME as its ranks see it."""
import os

from sklearn.neighbors import KNeighborsClassifier


class EndTimeKNN(KNeighborsClassifier):
    def fit(self, X, y):
        with open(os.environ["HPCML_TEST_SEEN"], "w") as fh:
            fh.write(os.environ.get("SLURM_JOB_END_TIME", "unset"))
        return super().fit(X, y)
'''


def _chain_env(slurm_env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(
        slurm_env,
        HPCML_LAUNCHER="mpiexec",
        PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), slurm_env.get("PYTHONPATH")])),
        **extra,
    )


def _successor(job: int, tmp_path: Path) -> int | None:
    found = re.search(r"successor job (\d+) queued", (tmp_path / f"hpcml-{job}.log").read_text())
    return int(found.group(1)) if found else None


def test_cv_long_restart_cap_submits_no_successor(slurm_env: dict[str, str], tmp_path: Path) -> None:
    data = write_digits(tmp_path)
    config = write_search(tmp_path, "svc", SVC_SMALL, data)
    env = _chain_env(slurm_env, tmp_path, HPCML_RESTART="2", HPCML_MAX_RESTARTS="2")
    job = sbatch([*SHORT_JOB, "--ntasks=2", str(SLURM / "cv-long.sbatch"), str(config), "out"], env, tmp_path)
    records = wait_job(job, env, tmp_path, timeout=240)
    assert_exit(records, 0, tmp_path)
    log = (tmp_path / f"hpcml-{job}.log").read_text()
    assert "(restart 2 of at most 2)" in log and "HPCML_MAX_RESTARTS=2 reached" in log, log
    assert _successor(job, tmp_path) is None, log
    assert sorted(journal_units(tmp_path / "out")) == list(range(4 * 5))


def test_cv_long_no_progress_guard_ends_the_chain(slurm_env: dict[str, str], tmp_path: Path) -> None:
    data = write_digits(tmp_path)
    config = write_search(tmp_path, "svc", SVC_SMALL, data)
    # the predecessor started with 0 units and so does this job: the second job in a row without progress
    env = _chain_env(slurm_env, tmp_path, HPCML_RESTART="3", HPCML_NO_PROGRESS="1", HPCML_PREV_UNITS="0")
    job = sbatch([*SHORT_JOB, "--ntasks=2", str(SLURM / "cv-long.sbatch"), str(config), "out"], env, tmp_path)
    records = wait_job(job, env, tmp_path, timeout=120)
    assert_exit(records, 3, tmp_path)
    log = (tmp_path / f"hpcml-{job}.log").read_text()
    assert "no progress in the last two jobs" in log, log
    assert _successor(job, tmp_path) is None, log
    assert not (tmp_path / "out").exists()  # ended before running anything


def test_cv_long_crash_cancels_the_successor(slurm_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "hpcml_slurm_test_raiser.py").write_text(RAISER_MODULE, encoding="utf-8")
    data = write_digits(tmp_path)
    config = write_search(
        tmp_path, "raise", '[[model]]\nestimator = "hpcml_slurm_test_raiser.Raiser"\ngrid = { c = [0, 1] }', data
    )
    config.write_text(config.read_text() + '\n[run]\nerror_score = "raise"\n', encoding="utf-8")
    env = _chain_env(slurm_env, tmp_path)
    job = sbatch([*SHORT_JOB, "--ntasks=2", str(SLURM / "cv-long.sbatch"), str(config), "out"], env, tmp_path)
    records = wait_job(job, env, tmp_path, timeout=240)
    assert_exit(records, 1, tmp_path)
    log = (tmp_path / f"hpcml-{job}.log").read_text()
    successor = _successor(job, tmp_path)
    assert successor is not None, log
    assert f"cancelled successor job {successor}" in log and "ending the chain" in log, log
    assert "this fit always fails" in log, log
    assert [r.get("JobState") for r in wait_job(successor, env, tmp_path, timeout=60)] == ["CANCELLED"]


def test_cv_long_derives_slurm_job_end_time_on_old_slurm(slurm_env: dict[str, str], tmp_path: Path) -> None:
    version = subprocess.run(["scontrol", "--version"], env=slurm_env, capture_output=True, text=True, timeout=30)
    major, minor = map(int, re.search(r"(\d+)\.(\d+)", version.stdout).groups())
    (tmp_path / "hpcml_slurm_test_env.py").write_text(ENV_MODULE, encoding="utf-8")
    data = write_digits(tmp_path)
    config = write_search(
        tmp_path, "env", '[[model]]\nestimator = "hpcml_slurm_test_env.EndTimeKNN"\ngrid = { n_neighbors = [1] }', data
    )
    seen = tmp_path / "seen.txt"
    env = _chain_env(slurm_env, tmp_path, HPCML_TEST_SEEN=str(seen), HPCML_MAX_RESTARTS="0")
    job = sbatch([*SHORT_JOB, "--ntasks=1", str(SLURM / "cv-long.sbatch"), str(config), "out"], env, tmp_path)
    records = wait_job(job, env, tmp_path, timeout=240)
    assert_exit(records, 0, tmp_path)
    end = subprocess.run(
        ["date", "-d", records[0]["EndTime"], "+%s"], capture_output=True, text=True, timeout=30, check=True
    )
    start = subprocess.run(
        ["date", "-d", records[0]["StartTime"], "+%s"], capture_output=True, text=True, timeout=30, check=True
    )
    value = seen.read_text()
    assert value.isdigit(), f"SLURM_JOB_END_TIME seen by the ranks: {value!r} (Slurm {major}.{minor})"
    # the job's time limit, not when it happened to end: start + 5 minutes (squeue %e while it runs)
    assert int(value) == int(start.stdout) + 5 * 60, (value, records[0]["StartTime"], records[0]["EndTime"])
    assert int(end.stdout) <= int(value)


def _wait_for_units(folder: Path, at_least: int, job: int, env: dict[str, str], cwd: Path, timeout: float) -> int:
    """Poll the journal until it holds ``at_least`` finished units (a state, not a sleep); fail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "journal.jsonl").is_file():
            done = len(journal_units_tolerant(folder))
            if done >= at_least:
                return done
        records = job_records(job, env)
        if records and all(r.get("JobState") in FINAL_STATES for r in records):
            pytest.fail(f"job {job} ended before {at_least} units were journaled: {records}\n{logs(cwd)}")
        time.sleep(0.2)
    scancel([job], env)
    pytest.fail(f"job {job}: fewer than {at_least} units journaled after {timeout:.0f} s\n{logs(cwd)}")


def journal_units_tolerant(folder: Path) -> list[int]:
    """Units of a journal that may end in a line still being written (read while the job runs)."""
    units = []
    with open(folder / "journal.jsonl", encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line being appended right now
            if record.get("type") == "unit":
                units.append(record["unit"])
    return units


def hard_kill(job: int, env: dict[str, str]) -> None:
    """SIGKILL to every process of ``job`` at once: no signal to trap, no grace, no partial results.

    ``scancel --signal=KILL`` is not this: Slurm turns it into its termination
    sequence (SIGCONT, SIGTERM, KillWait, SIGKILL), which the recipe forwards as
    a graceful stop.  This is what an OOM kill or a node going down does.
    """
    proc = subprocess.run(["scontrol", "listpids", str(job)], env=env, capture_output=True, text=True, timeout=30)
    pids = [int(line.split()[0]) for line in proc.stdout.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert pids, f"no processes of job {job}: {proc.stdout}{proc.stderr}"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(900)
def test_cv_long_hard_kill_is_resumed_by_the_successor(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """The first job is SIGKILLed mid-search (no signal, no grace): the queued successor resumes to the same result."""
    (tmp_path / "hpcml_slurm_test_slow.py").write_text(SLOW_MODULE, encoding="utf-8")
    data = write_digits(tmp_path)
    config = write_search(tmp_path, "slow", SLOW_GRID, data)
    # SBATCH_SIGNAL reaches the successors too (their #SBATCH @300 would signal a 5-minute job at once)
    env = _chain_env(
        slurm_env, tmp_path, HPCML_TEST_SLEEP=str(SLOW_SLEEP), HPCML_MAX_RESTARTS="3", SBATCH_SIGNAL="B:USR1@60"
    )
    first = sbatch([*SHORT_JOB, "--ntasks=2", str(SLURM / "cv-long.sbatch"), str(config), "out"], env, tmp_path)
    jobs = [first]
    try:
        want = reference(tmp_path, 2, config, "ref", env={"HPCML_TEST_SLEEP": "0", "PYTHONPATH": env["PYTHONPATH"]})
        killed_at = _wait_for_units(tmp_path / "out", 6, first, env, tmp_path, timeout=300)
        hard_kill(first, env)
        first_records = wait_job(first, env, tmp_path, timeout=120)
        successor = _successor(first, tmp_path)
        assert successor is not None, logs(tmp_path)
        jobs.append(successor)
        last = wait_job(successor, env, tmp_path, timeout=400)
        third = _successor(successor, tmp_path)
        if third is not None:
            jobs.append(third)
    finally:
        scancel([j for j in jobs if any(r.get("JobState") not in FINAL_STATES for r in job_records(j, env))], env)
    assert first_records[0].get("ExitCode", "").endswith(":9"), (first_records, logs(tmp_path))
    first_log = (tmp_path / f"hpcml-{first}.log").read_text()
    assert "hpcml.cv exited" not in first_log, first_log  # killed: the script never reached its epilogue
    assert_exit(last, 0, tmp_path)
    succ_log = (tmp_path / f"hpcml-{successor}.log").read_text()
    assert "(restart 1 of" in succ_log and "search complete" in succ_log, succ_log
    started = re.search(r"journal has (\d+) finished unit", succ_log)
    assert started is not None and int(started.group(1)) >= killed_at, succ_log
    if third is not None:  # the completing job cancels its own successor
        assert [r.get("JobState") for r in wait_job(third, env, tmp_path, timeout=60)] == ["CANCELLED"]
    out = tmp_path / "out"
    for name in RESULT_FILES:
        assert (out / name).is_file(), f"{out / name} missing\n{logs(tmp_path)}"
    units = journal_units(out)
    assert len(units) == len(set(units)), "a unit was run twice"
    assert sorted(units) == list(range(SLOW_UNITS))
    assert_same_results(load_results(out), want)

"""Thread pinning under real mpiexec: CPU sets, thread defaults, limits inside units on every rank.

Expectations are computed from this machine's CPU mask (the test process's
``sched_getaffinity``), so the tests hold on 2 cores and on 64.
"""

from __future__ import annotations

import json
import os

from cvfixtures import write_config, write_digits
from helpers import run_mpi

from hpcml.threads import THREAD_VARS

CPUS = sorted(os.sched_getaffinity(0))

LAYOUT = r"""
import json, os, sys
from mpi4py import MPI
from hpcml.threads import THREAD_VARS, apply_layout, limit_loaded_pools, plan_layout

given = None if sys.argv[1] == "none" else int(sys.argv[1])
layout = apply_layout(plan_layout(MPI.COMM_WORLD, given))
import numpy  # after the variables, as the entry points do
from threadpoolctl import threadpool_info
limit_loaded_pools(layout)
record = {
    "threads": layout.threads, "cpus": layout.cpus, "pinned": layout.pinned, "env_applied": layout.env_applied,
    "affinity": sorted(os.sched_getaffinity(0)), "env": {v: os.environ[v] for v in THREAD_VARS},
    "pools": [p["num_threads"] for p in threadpool_info()],
}
with open(os.path.join(sys.argv[2], f"layout-{MPI.COMM_WORLD.Get_rank()}.json"), "w") as fh:
    json.dump(record, fh)
"""


def _layouts(tmp_path, n, threads, slurm_cpus=""):
    script = tmp_path / "layout.py"
    script.write_text(LAYOUT)
    env = {"SLURM_CPUS_PER_TASK": slurm_cpus}  # "" = not inside a Slurm step
    proc = run_mpi(n, [str(script), str(threads), str(tmp_path)], timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"layout-{r}.json").read_text()) for r in range(n)]


def _assert_limited(layout, threads):
    assert layout["threads"] == threads
    assert layout["env_applied"]
    assert layout["env"] == {v: str(threads) for v in THREAD_VARS}
    assert layout["pools"] and all(p == threads for p in layout["pools"]), layout["pools"]


def test_default_gives_each_rank_its_share_and_a_disjoint_cpu_set(tmp_path):
    n = 2
    layouts = _layouts(tmp_path, n, "none")
    share = max(1, len(CPUS) // n)
    fits = n * share <= len(CPUS)
    for rank, layout in enumerate(layouts):
        _assert_limited(layout, share)
        assert layout["pinned"] is fits
        expected = CPUS[rank * share : (rank + 1) * share] if fits else CPUS
        assert layout["cpus"] == expected and layout["affinity"] == expected
    if fits:
        sets = [set(layout["affinity"]) for layout in layouts]
        assert sets[0].isdisjoint(sets[1]) and sets[0] | sets[1] <= set(CPUS)


def test_slurm_cpus_per_task_is_the_default(tmp_path):
    (layout,) = _layouts(tmp_path, 1, "none", slurm_cpus="1")
    _assert_limited(layout, 1)
    assert layout["pinned"] and layout["affinity"] == CPUS[:1]


def test_explicit_threads_beat_slurm_and_oversubscribed_ranks_stay_unpinned(tmp_path):
    threads = len(CPUS)  # two ranks of all the CPUs each do not fit: left to the OS scheduler
    layouts = _layouts(tmp_path, 2, threads, slurm_cpus="1")
    for layout in layouts:
        _assert_limited(layout, threads)
        assert not layout["pinned"] and layout["affinity"] == CPUS


ESTIMATOR = '''
import json, os
import numpy as np
from mpi4py import MPI
from sklearn.base import BaseEstimator, ClassifierMixin
from threadpoolctl import threadpool_info


class ThreadsSeen(ClassifierMixin, BaseEstimator):
    """Scores the largest BLAS/OpenMP thread count in force during its fit; notes the rank that fitted it."""

    def __init__(self, c=1.0):
        self.c = c

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.threads_ = max(p["num_threads"] for p in threadpool_info())
        with open(os.path.join(os.environ["SEEN_DIR"], f"rank-{MPI.COMM_WORLD.Get_rank()}-{os.getpid()}"), "a") as fh:
            fh.write(f"{self.threads_}\\n")
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def score(self, X, y):
        return float(self.threads_)
'''


def test_units_run_under_the_thread_limit_on_every_rank(tmp_path):
    write_digits(tmp_path / "digits.h5", n=120)
    (tmp_path / "seenmod.py").write_text(ESTIMATOR)
    cfg = write_config(
        tmp_path / "c.toml",
        '[data]\npath = "digits.h5"\n[[model]]\nestimator = "seenmod.ThreadsSeen"\n'
        "grid = { c = [1, 2, 3, 4, 5, 6, 7, 8] }\n"
        '[cv]\nsplitter = "KFold"\nn_splits = 4\n',
    )
    for threads in (1, 2):
        seen = tmp_path / f"seen-{threads}"
        seen.mkdir()
        env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
            "SEEN_DIR": str(seen),
            "SLURM_CPUS_PER_TASK": "",
        }
        out = tmp_path / f"o-{threads}"
        args = ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--threads-per-rank", str(threads)]
        proc = run_mpi(2, args, timeout=180, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = json.loads((out / "cv_results.json").read_text())
        assert results["mean_test_score"] == [float(threads)] * 8
        values = [int(v) for f in seen.iterdir() for v in f.read_text().split()]
        assert len(values) == 8 * 4 + 1  # every unit, plus the refit of the best candidate on rank 0
        assert set(values) == {threads}
        report = json.loads((out / "run.json").read_text())
        assert [lay["threads"] for lay in report["layout"]] == [threads, threads]

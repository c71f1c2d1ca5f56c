"""AsyncHalvingSearchCV under real ``mpiexec``: a fault on one rank ends every rank, nothing hangs.

ASHA adds waiting that grid search does not have (ranks answered WAIT while
jobs run and nothing can be decided); a fault inside a unit, on a worker or on
rank 0 (the dispatcher's rank), must still reach every rank as an exception of
its type, so that a script can handle it.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from helpers import run_mpi

SCRIPT = textwrap.dedent(
    """
    import sys
    from mpi4py import MPI
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    import hpcml

    X, y = make_classification(600, 8, random_state=0)
    search = hpcml.AsyncHalvingSearchCV(
        LogisticRegression(), {"C": [0.01, 0.1, 1.0, 10.0, 100.0, 0.03, 0.3, 3.0, 30.0]}, n_candidates=9,
        cv=3, min_resources=60, random_state=0,
    )
    try:
        search.fit(X, y)
    except Exception as exc:
        print(f"rank {MPI.COMM_WORLD.rank} raised {type(exc).__name__}: {exc}", flush=True)
        sys.exit(7)
    print(f"rank {MPI.COMM_WORLD.rank} done {len(search.cv_results_['params'])}", flush=True)
    """
)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "asha_fault.py"
    path.write_text(SCRIPT)
    return path


def test_asha_runs_at_three_ranks(script):
    proc = run_mpi(3, [str(script)], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = re.findall(r"rank (\d) done (\d+)", proc.stdout)  # ranks share stdout: lines may interleave
    assert sorted(r for r, _ in done) == ["0", "1", "2"] and len({n for _, n in done}) == 1, proc.stdout


@pytest.mark.parametrize("spec", ["unit:2:4", "unit:0:6"])
def test_fault_on_one_rank_ends_every_rank(script, spec):
    proc = run_mpi(3, [str(script)], timeout=120, env={"HPCML_INJECT_FAULT": spec})
    point, rank = spec.split(":")[:2]
    raised = re.findall(r"rank (\d) raised InjectedFault: injected fault at '(\w+)' on rank (\d)", proc.stdout)
    assert proc.returncode == 7, proc.stderr[-3000:]
    # every rank raised the same error, of its type (ranks share stdout: lines may interleave)
    assert sorted(r for r, _, _ in raised) == ["0", "1", "2"], proc.stdout
    assert {(p, r) for _, p, r in raised} == {(point, rank)}

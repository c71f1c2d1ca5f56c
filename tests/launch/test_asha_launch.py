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
    outcome = f"{sys.argv[1]}.{MPI.COMM_WORLD.rank}"  # one file per rank: the ranks' stdout may interleave
    try:
        search.fit(X, y)
    except Exception as exc:
        with open(outcome, "w") as fh:
            fh.write(f"raised {type(exc).__name__}: {exc}")
        sys.exit(7)
    with open(outcome, "w") as fh:
        fh.write(f"done {len(search.cv_results_['params'])}")
    """
)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "asha_fault.py"
    path.write_text(SCRIPT)
    return path


def _outcomes(prefix) -> list[str]:
    """Every rank's outcome line, by rank (each rank writes its own file)."""
    files = sorted(prefix.parent.glob(prefix.name + ".*"))
    assert [p.name for p in files] == [f"{prefix.name}.{r}" for r in range(3)], files
    return [p.read_text() for p in files]


def test_asha_runs_at_three_ranks(script, tmp_path):
    proc = run_mpi(3, [str(script), str(tmp_path / "outcome")], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = _outcomes(tmp_path / "outcome")
    assert len(set(done)) == 1 and re.fullmatch(r"done \d+", done[0]), done


@pytest.mark.parametrize("spec", ["unit:2:4", "unit:0:6"])
def test_fault_on_one_rank_ends_every_rank(script, spec, tmp_path):
    proc = run_mpi(3, [str(script), str(tmp_path / "outcome")], timeout=120, env={"HPCML_INJECT_FAULT": spec})
    point, rank = spec.split(":")[:2]
    assert proc.returncode == 7, proc.stderr[-3000:]
    # every rank raised the same error, of its type
    expected = f"raised InjectedFault: injected fault at '{point}' on rank {rank}"
    assert _outcomes(tmp_path / "outcome") == [expected] * 3

"""The API and the CLI share one pipeline: same error for a failing fit, every rank ends on any exception.

Launched under real ``mpiexec`` (tests/helpers.py: every launch has a timeout
shorter than pytest's and kills its process group, so a hang fails the test).
"""

from __future__ import annotations

import re
import textwrap

import pytest
from cvfixtures import write_config, write_digits
from helpers import run_mpi

from hpcml.comm import HOST


def _raised(text: str, who: str = "") -> list[tuple[str, str]]:
    """``(rank, message)`` of every "rank R raised MESSAGE" line, also where the launcher joined two ranks' lines."""
    return re.findall(rf"{who}rank (\d+) raised (.*?)(?=\n|(?:sklearn |hpcml )?rank \d+ raised|\Z)", text)


#: An API search on every rank; each rank prints what its ``fit`` raised (or "finished").
API_FAULT = textwrap.dedent(
    """
    from mpi4py import MPI
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC
    import hpcml

    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    rank = MPI.COMM_WORLD.Get_rank()
    try:
        hpcml.GridSearchCV(SVC(), {"C": [0.5, 1, 2, 5], "gamma": [1e-3, 1e-2]}, cv=3).fit(X, y)
        print(f"rank {rank} finished", flush=True)
    except Exception as exc:
        print(f"rank {rank} raised {type(exc).__name__}: {exc}", flush=True)
    """
)


@pytest.mark.parametrize(("n", "fault"), [(2, "worker:1"), (3, "worker:2"), (2, "worker:0"), (3, "worker:1:3")])
def test_exception_in_the_dispatch_loop_ends_every_rank_of_an_api_fit(tmp_path, n, fault):
    """A poll-hook exception outside any unit (a worker waiting for its reply) made rank 0 wait forever."""
    script = tmp_path / "fault.py"
    script.write_text(API_FAULT)
    proc = run_mpi(n, [str(script)], timeout=120, cwd=tmp_path, env={"HPCML_INJECT_FAULT": fault})
    assert proc.returncode == 0, proc.stderr[-3000:]
    point, rank = fault.split(":")[:2]
    message = f"InjectedFault: injected fault at '{point}' on rank {rank}"
    raised = _raised(proc.stdout)
    assert sorted(raised) == [(str(r), message) for r in range(n)], proc.stdout
    assert "finished" not in proc.stdout


@pytest.mark.parametrize("fault", ["worker:0", "worker:1", "worker:2", "worker:3:4"])
def test_exception_in_a_node_leaders_dispatch_loop_ends_every_rank(tmp_path, fault):
    """The same with hierarchical dispatch on 2 emulated nodes: a leader's poll hook raising outside a unit."""
    script = tmp_path / "fault.py"
    script.write_text(API_FAULT)
    env = {"HPCML_INJECT_FAULT": fault, "HPCML_DISPATCH": "hierarchical", "MPIR_CVAR_NUM_CLIQUES": "2"}
    proc = run_mpi(4, [str(script)], timeout=180, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    point, rank = fault.split(":")[:2]
    message = f"InjectedFault: injected fault at '{point}' on rank {rank}"
    raised = _raised(proc.stdout)
    assert sorted(raised) == [(str(r), message) for r in range(4)], proc.stdout + proc.stderr[-2000:]
    assert "finished" not in proc.stdout


#: scikit-learn's search and hpcml's, both with error_score="raise" on a fit that raises.
API_RAISE = textwrap.dedent(
    """
    import sys
    from mpi4py import MPI
    from sklearn import model_selection
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC
    import hpcml
    from hpcml.data import H5Dataset

    ds = H5Dataset(sys.argv[1])
    X, y = ds.read("X"), ds.read("y")
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    grid = {"gamma": [1e-3, 1e-2]}
    rank = MPI.COMM_WORLD.Get_rank()
    for name, cls in (("sklearn", model_selection.GridSearchCV), ("hpcml", hpcml.GridSearchCV)):
        try:
            cls(SVC(C=-1.0), grid, cv=cv, error_score="raise").fit(X, y)
            print(f"{name} rank {rank} finished", flush=True)
        except Exception as exc:
            print(f"{name} rank {rank} raised {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)
    """
)

CLI_RAISE = """\
[data]
path = "digits.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
params = { C = -1.0 }
grid = { gamma = [1e-3, 1e-2] }

[cv]
splitter = "StratifiedKFold"
n_splits = 3
shuffle = true
random_state = 0

[run]
error_score = "raise"
"""


@pytest.mark.parametrize("n", [1, 2])
def test_failing_fit_raises_the_same_error_through_api_and_cli(tmp_path, n):
    write_digits(tmp_path / "digits.h5", n=120)
    script = tmp_path / "raise.py"
    script.write_text(API_RAISE)
    api = run_mpi(n, [str(script), str(tmp_path / "digits.h5")], timeout=180, cwd=tmp_path)
    assert api.returncode == 0, api.stderr[-3000:]
    sk = _raised(api.stdout, "sklearn ")
    ours = _raised(api.stdout, "hpcml ")
    assert len(sk) == n and len({text for _, text in sk}) == 1, api.stdout
    expected = sk[0][1]
    assert expected.startswith("InvalidParameterError: The 'C' parameter of SVC must be") and "Got -1.0" in expected
    assert sorted(ours) == [(str(r), expected) for r in range(n)], api.stdout

    cfg = write_config(tmp_path / "raise.toml", CLI_RAISE)
    cli = run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=180)
    assert cli.returncode == 1, cli.stderr[-3000:]
    errors = re.findall(r"^hpcml: error: .*$", cli.stderr, flags=re.MULTILINE)
    where = r"rank \d+/%d on %s: " % (n, re.escape(HOST))
    assert len(errors) == 1 and re.fullmatch(where + re.escape(expected), errors[0][len("hpcml: error: ") :]), (
        errors,
        expected,
    )
    assert cli.stderr.count("Traceback") == 1, cli.stderr
    assert not (tmp_path / "o" / "cv_results.json").exists()

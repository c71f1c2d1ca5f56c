"""Launched checks of what only a real launch shows: verbose lines reach the job's stdout once."""

from __future__ import annotations

import re
import textwrap

import pytest
from helpers import run_mpi

SCRIPT = textwrap.dedent(
    """
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    import hpcml

    X, y = load_iris(return_X_y=True)
    hpcml.GridSearchCV(LogisticRegression(max_iter=500), {"C": [1, 10]}, cv=3, verbose=3).fit(X, y)
    hpcml.learning_curve(LogisticRegression(max_iter=500), X, y, cv=3, train_sizes=[0.5, 1.0], verbose=2)
    """
)


@pytest.mark.parametrize("n", [1, 3])
def test_verbose_lines_reach_stdout_once(tmp_path, n):
    script = tmp_path / "verbose.py"
    script.write_text(SCRIPT)
    proc = run_mpi(n, [str(script)], timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines.count("Fitting 3 folds for each of 2 candidates, totalling 6 fits") == 1
    ends = [ln for ln in lines if re.match(r"\[CV [123]/3\] END \.+C=(1|10);, score=[\d.]+ total time=", ln)]
    assert len(ends) == 6, proc.stdout
    assert sorted(ln.split(" END ")[0] for ln in ends) == ["[CV 1/3]"] * 2 + ["[CV 2/3]"] * 2 + ["[CV 3/3]"] * 2
    assert sum(ln.startswith("[learning_curve] Training set sizes: [ 50 100]") for ln in lines) == 1
    assert len([ln for ln in lines if ln.startswith("[CV] END")]) == 6  # learning_curve: 2 sizes x 3 splits

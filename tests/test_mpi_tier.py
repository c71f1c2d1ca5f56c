"""Runs the pytest-mpi tier (tests/mpi) under real mpiexec at 1, 2 and 4 ranks.

pytest-mpi skips ``mpi``-marked tests unless pytest runs under mpiexec with
``--with-mpi`` (and below a test's ``min_size``).  This test launches exactly
that, with a hard timeout, and fails on any failure *and on any skip*: a
skipped MPI test would be a way to go green without testing anything.
"""

from __future__ import annotations

import re

import pytest
from helpers import PYTHON, ROOT, mpiexec_path, run


@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpi_tier(n):
    cmd = [
        mpiexec_path(),
        "-n",
        str(n),
        PYTHON,
        "-m",
        "pytest",
        "--with-mpi",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        str(ROOT / "tests" / "mpi"),
    ]
    proc = run(cmd, timeout=900, cwd=ROOT)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"mpi tier at -n {n} failed:\n{tail}"
    summaries = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", proc.stdout, flags=re.M)
    assert len(summaries) >= 1, tail
    for summary in summaries:  # one per rank
        assert "skipped" not in summary and "failed" not in summary and "error" not in summary, summary
    assert int(re.match(r"(\d+) passed", summaries[0]).group(1)) >= 20, summaries[0]

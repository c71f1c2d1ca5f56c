"""Runs the pytest-mpi tier (tests/mpi) under real mpiexec at 1, 2 and 4 ranks.

pytest-mpi skips ``mpi``-marked tests unless pytest runs under mpiexec with
``--with-mpi`` (and below a test's ``min_size``).  This test launches exactly
that, with a hard timeout, and fails on any failure and on any skip, except,
below 4 ranks, the skips pytest-mpi makes for a ``min_size`` larger than the
launch (those tests run at 4 ranks, where nothing may be skipped).
"""

from __future__ import annotations

import re

import pytest
from helpers import PYTHON, ROOT, mpiexec_path, run

MIN_SIZE_SKIP = re.compile(r"Test requires \d+ MPI processes, only \d+ MPI processes specified")


@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpi_tier(n):
    cmd = [mpiexec_path(), "-n", str(n), PYTHON, "-m", "pytest", "--with-mpi", "-q", "-rs", "-p", "no:cacheprovider"]
    proc = run([*cmd, "-o", "addopts=", str(ROOT / "tests" / "mpi")], timeout=900, cwd=ROOT)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
    assert proc.returncode == 0, f"mpi tier at -n {n} failed:\n{tail}"
    # Ranks share one stdout, so their summary lines may interleave: search, do not anchor.
    passed = re.findall(r"(\d+) passed", proc.stdout)
    assert len(passed) == n, tail  # one summary per rank: every rank ran the suite
    assert min(int(p) for p in passed) >= 30, passed
    assert not re.search(r"\d+ (failed|errors?)\b", proc.stdout), tail
    if n >= 4:
        assert not re.search(r"\d+ skipped", proc.stdout), tail
    for line in proc.stdout.splitlines():
        if line.startswith("SKIPPED"):
            assert n < 4 and MIN_SIZE_SKIP.search(line), line

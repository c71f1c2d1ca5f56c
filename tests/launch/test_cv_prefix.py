"""Prefix reuse at 3 ranks (the pytest-mpi tier runs 1, 2 and 4) and through the CLI's run.json."""

from __future__ import annotations

import re

from helpers import PYTHON, ROOT, mpiexec_path, run


def test_prefix_tier_at_three_ranks():
    cmd = [mpiexec_path(), "-n", "3", PYTHON, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider"]
    proc = run([*cmd, "-o", "addopts=", str(ROOT / "tests" / "mpi" / "test_cv_prefix_mpi.py")], timeout=600, cwd=ROOT)
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    assert proc.returncode == 0, tail
    passed = re.findall(r"(\d+) passed", proc.stdout)
    assert len(passed) == 3 and all(int(p) == int(passed[0]) >= 9 for p in passed), tail
    assert not re.search(r"\d+ (failed|errors?|skipped)\b", proc.stdout), tail

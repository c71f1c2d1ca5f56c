"""Runs the pytest-mpi tier (tests/mpi) under real mpiexec at 1, 2 and 4 ranks.

pytest-mpi skips ``mpi``-marked tests unless pytest runs under mpiexec with
``--with-mpi`` (and below a test's ``min_size``).  This test launches exactly
that, with a timeout shorter than its own pytest-timeout (tests/helpers.py), and
reads what every rank collected and how each test ended (tests/tier_report.py):
every test collected by a plain ``--collect-only`` run must have run on every
rank and passed, except the tests whose ``min_size`` exceeds the launch, which
must be skipped for that reason and nothing else.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import PYTHON, ROOT, mpiexec_path, run

MIN_SIZE_SKIP = re.compile(r"Test requires (\d+) MPI processes, only (\d+) MPI processes specified")
TIER = ["-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider", "-p", "tier_report", "-o", "addopts="]


@pytest.fixture(scope="module")
def collected():
    """The node ids of tests/mpi, from one plain collection run."""
    proc = run([PYTHON, *TIER, "--collect-only", str(ROOT / "tests" / "mpi")], timeout=300, cwd=ROOT / "tests")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    assert ids, proc.stdout
    return ids


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpi_tier(n, collected, tmp_path):
    prefix = tmp_path / "tier"
    cmd = [mpiexec_path(), "-n", str(n), PYTHON, *TIER, "-rfEs", str(ROOT / "tests" / "mpi")]
    proc = run(cmd, timeout=900, cwd=ROOT / "tests", env={"HPCML_TIER_REPORT": str(prefix)})
    lines = (proc.stdout + proc.stderr).splitlines()
    tail = "\n".join([ln for ln in lines if ln.startswith(("FAILED", "ERROR"))] + lines[-40:])
    reports = sorted(tmp_path.glob("tier.*.json"))
    failed = {t for p in reports for t, v in json.loads(p.read_text())["tests"].items() if v["outcome"] == "failed"}
    assert proc.returncode == 0 and not failed, f"mpi tier at -n {n} failed: {sorted(failed)}\n{tail}"
    assert [p.name for p in reports] == [f"tier.{r}.json" for r in range(n)], tail  # every rank ran the suite
    for path in reports:
        report = json.loads(path.read_text())
        tests = report["tests"]
        assert report["size"] == n
        assert set(tests) == collected, f"rank {report['rank']} collected a different suite"
        expected_pass = {t for t, v in tests.items() if (v["min_size"] or 1) <= n}
        passed = {t for t, v in tests.items() if v["outcome"] == "passed"}
        assert passed == expected_pass, {t: v for t, v in tests.items() if (t in passed) != (t in expected_pass)}
        for name, value in tests.items():
            if name in passed:
                continue
            assert value["outcome"] == "skipped", (name, value)
            why = MIN_SIZE_SKIP.search(value.get("reason", ""))
            assert why and int(why.group(1)) == value["min_size"] > n == int(why.group(2)), (name, value)
    if n >= 4:
        assert not re.search(r"\d+ skipped", proc.stdout), tail

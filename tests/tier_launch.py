"""Launch one pytest-mpi test file under ``mpiexec -n N`` and check every rank's outcome file.

The ranks share the launcher's stdout, where their pytest summary lines may be
interleaved or joined; nothing here parses it.  Each rank writes what it
collected and how each test ended (tests/tier_report.py, ``-p tier_report``),
and :func:`run_tier_file` asserts that every rank collected exactly the tests a
plain ``--collect-only`` run collects and passed every one of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import PYTHON, ROOT, mpiexec_path, run

#: pytest's arguments for a tier launch (run with cwd=tests, so that ``-p tier_report`` imports).
TIER = ["-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider", "-p", "tier_report", "-o", "addopts="]


def collected_ids(test_file: Path, timeout: float = 300) -> set[str]:
    """The node ids a plain (one-process) ``--collect-only`` run of ``test_file`` collects."""
    proc = run([PYTHON, *TIER, "--collect-only", str(test_file)], timeout=timeout, cwd=ROOT / "tests")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = {line.strip() for line in proc.stdout.splitlines() if "::" in line}
    assert ids, proc.stdout[-3000:]
    return ids


def run_tier_file(n: int, test_file: Path, tmp_path: Path, timeout: float = 600) -> dict[str, dict]:
    """Run ``test_file`` under ``mpiexec -n n`` and assert that every rank passed every collected test.

    Parameters
    ----------
    n : int
        Number of ranks; every test of ``test_file`` must accept it (``min_size <= n``).
    test_file : Path
        A file of tests/mpi.
    tmp_path : Path
        Folder for the per-rank outcome files (``tier.<rank>.json``).
    timeout : float
        Seconds before the launch's process group is killed (a hang fails the test).

    Returns
    -------
    dict
        Rank 0's outcomes, by node id.
    """
    expected = collected_ids(test_file)
    prefix = tmp_path / "tier"
    cmd = [mpiexec_path(), "-n", str(n), PYTHON, *TIER, "-rfEs", str(test_file)]
    proc = run(cmd, timeout=timeout, cwd=ROOT / "tests", env={"HPCML_TIER_REPORT": str(prefix)})
    lines = (proc.stdout + proc.stderr).splitlines()
    tail = "\n".join([ln for ln in lines if ln.startswith(("FAILED", "ERROR"))] + lines[-40:])
    reports = sorted(tmp_path.glob("tier.*.json"))
    assert [p.name for p in reports] == [f"tier.{r}.json" for r in range(n)], tail  # every rank ran the file
    outcomes = []
    for rank, path in enumerate(reports):
        report = json.loads(path.read_text())
        assert (report["rank"], report["size"]) == (rank, n), (path.name, report["rank"], report["size"])
        tests = report["tests"]
        assert set(tests) == expected, f"rank {rank} collected {len(tests)} tests, a plain run {len(expected)}"
        not_passed = {t: v for t, v in tests.items() if v["outcome"] != "passed"}
        assert not not_passed, f"rank {rank}: {not_passed}\n{tail}"
        outcomes.append(tests)
    assert proc.returncode == 0, tail
    return outcomes[0]

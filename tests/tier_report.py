"""pytest plugin for tests/test_mpi_tier.py: every rank writes what it collected and how each test ended.

Loaded with ``-p tier_report`` by the tier launch only.  With ``HPCML_TIER_REPORT=PREFIX``
each rank writes ``PREFIX.<rank>.json``: ``{"rank", "size", "tests": {nodeid: {"min_size", "outcome"}}}``,
so the tier asserts an outcome for every collected test instead of counting summary lines.
"""

from __future__ import annotations

import json
import os

import pytest

_TESTS: dict[str, dict[str, object]] = {}


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        mark = item.get_closest_marker("mpi")
        min_size = mark.kwargs.get("min_size", 1) if mark is not None else None
        _TESTS[item.nodeid] = {"min_size": min_size, "outcome": "not run"}


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report):
    entry = _TESTS.setdefault(report.nodeid, {"min_size": None, "outcome": "not run"})
    if report.when == "call" or report.outcome != "passed":
        if entry["outcome"] in ("not run", "passed"):  # a failing teardown overrides a passed call
            entry["outcome"] = report.outcome
            if report.skipped:
                entry["reason"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""


def pytest_sessionfinish(session, exitstatus):
    prefix = os.environ.get("HPCML_TIER_REPORT")
    if not prefix:
        return
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    with open(f"{prefix}.{comm.Get_rank()}.json", "w") as fh:
        json.dump({"rank": comm.Get_rank(), "size": comm.Get_size(), "tests": _TESTS}, fh)

"""Test-suite guards.

* A hang dumps every thread's stack and fails instead of blocking CI (pytest-timeout per test;
  faulthandler ends the run BACKSTOP seconds later if that cannot interrupt it); a slow but
  progressing suite is never cut by a run-wide timer.
* Every launch (tests/helpers.py) ends before the test's pytest-timeout would, and
  a process a test started is killed with its whole group when the test ends.
* ``tests/mpi`` holds pytest-mpi tests; they only make sense under
  ``mpiexec -n N python -m pytest --with-mpi tests/mpi``.  A plain ``pytest``
  does not collect them (pytest-mpi would silently skip them); instead
  ``tests/test_mpi_tier.py`` launches that command at N = 1, 2, 4 and fails on
  any failure *or skip*.
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

#: Seconds past a test's pytest-timeout after which faulthandler dumps every stack and ends the run:
#: the backstop for a hang pytest-timeout's signal cannot interrupt (e.g. inside a C call).
BACKSTOP = 120


def pytest_ignore_collect(collection_path, config):
    if collection_path.is_relative_to(HERE / "mpi") and not config.getoption("--with-mpi", default=False):
        return True
    return None


def _timeout_of(item) -> float | None:
    """The pytest-timeout budget of ``item`` in seconds (its marker, else --timeout, else the ini value)."""
    mark = item.get_closest_marker("timeout")
    if mark is not None:
        value = mark.args[0] if mark.args else mark.kwargs.get("timeout")
    else:
        value = item.config.getoption("timeout", None)
        if value is None:
            value = item.config.getini("timeout")
    try:
        return float(value) or None
    except (TypeError, ValueError):
        return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Every launch of the test ends before its pytest-timeout would (helpers.launch_timeout); none outlives it."""
    import helpers

    budget = _timeout_of(item)
    helpers.begin_test(budget)
    if budget:
        faulthandler.dump_traceback_later(budget + BACKSTOP, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        helpers.end_test()

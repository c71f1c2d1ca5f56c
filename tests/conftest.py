"""Test-suite guards.

* A hang dumps every thread's stack and fails instead of blocking CI.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# A hung test run dies with a stack dump (joblib's conftest does the same).
faulthandler.dump_traceback_later(40 * 60, exit=True)


def pytest_ignore_collect(collection_path, config):
    if collection_path.is_relative_to(HERE / "mpi") and not config.getoption("--with-mpi", default=False):
        return True
    return None

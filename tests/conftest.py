"""Test-suite guards: a hang dumps stacks and fails instead of blocking CI."""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# A hung test run dies with a stack dump (joblib's conftest does the same).
faulthandler.dump_traceback_later(30 * 60, exit=True)

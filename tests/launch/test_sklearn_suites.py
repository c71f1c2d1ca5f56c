"""scikit-learn's own test modules, with hpcml's classes swapped in, pass at 1 and 2 ranks.

The modules are copied from the installed scikit-learn at test time
(tests/sklearn_suites.py); the unmodified copy runs first, and hpcml's copy
must pass exactly as many tests, apart from the deselected ones listed here
with the reason they cannot hold for any multi-process search.
"""

from __future__ import annotations

import pytest
from sklearn_suites import counts, prepare, run_suite

HALVING = "sklearn.model_selection.tests.test_successive_halving"
HALVING_SWAP = "from hpcml import HalvingGridSearchCV, HalvingRandomSearchCV"

# test_base_estimator_inputs records every fit and predict in lists closed over
# by a class defined inside the test, and expects them in candidate-major order
# in the calling process.  Fits on other ranks (or in joblib workers: scikit-
# learn's own class fails it with n_jobs=2) append to their own copies of those
# lists, and hpcml's scheduler runs one fold of every candidate first.
HALVING_DESELECT = [
    "test_successive_halving.py::test_base_estimator_inputs[HalvingGridSearchCV]",
    "test_successive_halving.py::test_base_estimator_inputs[HalvingRandomSearchCV]",
]


@pytest.fixture(scope="module")
def halving_reference(tmp_path_factory):
    """Passed count of the unmodified copy, with and without the deselected tests."""
    folder = tmp_path_factory.mktemp("sk_halving_plain")
    prepare(HALVING, folder, swap=None)
    proc = run_suite(folder, None, timeout=540)
    (summary,) = counts(proc.stdout)
    assert proc.returncode == 0 and set(summary) == {"passed"}, proc.stdout[-2000:]
    return summary["passed"]


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the reference run (module fixture) plus this one, each under 560 s
@pytest.mark.parametrize("n", [1, 2])
def test_sklearn_halving_suite_passes_with_hpcml_classes(n, halving_reference, tmp_path):
    test_file = prepare(HALVING, tmp_path, swap=HALVING_SWAP)
    assert HALVING_SWAP in test_file.read_text()
    deselect = [arg for name in HALVING_DESELECT for arg in ("--deselect", name)]
    proc = run_suite(tmp_path, n, timeout=560, extra=deselect)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    summaries = counts(proc.stdout)
    assert len(summaries) == n, tail  # one summary per rank: every rank ran the module
    for summary in summaries:
        assert summary == {"passed": halving_reference - len(HALVING_DESELECT), "deselected": 2}, tail

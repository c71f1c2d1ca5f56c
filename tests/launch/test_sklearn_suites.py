"""scikit-learn's own test files, run against hpcml's classes under ``mpiexec -n 1`` and ``-n 2``.

Each file is copied from the installed scikit-learn at test time with one added
line that swaps hpcml's classes in (tests/sklearn_suites.py).  The unmodified copy
is run once (plain pytest) for the reference counts: with hpcml every rank must
pass exactly as many tests, with no failure and no error.  The 4-rank run is not in
CI (time); run it by hand with ``HPCML_SKLEARN_SUITE_RANKS=4`` (``HPCML_SKLEARN_SUITE_K=EXPR`` runs a
``-k`` subset).
"""

from __future__ import annotations

import os

import pytest
from sklearn_suites import prepare_suite, run_suite

SUITES = {
    "search": (
        "model_selection/tests/test_search.py",
        "from hpcml import GridSearchCV, RandomizedSearchCV",
    ),
    "validation": (
        "model_selection/tests/test_validation.py",
        "from hpcml import cross_validate, cross_val_score, cross_val_predict, validation_curve, learning_curve",
    ),
    "halving": (
        "model_selection/tests/test_successive_halving.py",
        "from hpcml import HalvingGridSearchCV, HalvingRandomSearchCV",
    ),
    "kmeans": (
        "cluster/tests/test_k_means.py",
        "from hpcml.cluster import KMeans",
    ),
}

# Tests deselected in hpcml's run (the unmodified copy runs them all, and hpcml's run must pass
# exactly as many tests less these).  test_base_estimator_inputs records every fit and predict in
# lists closed over by a class defined inside the test and expects them, in candidate-major order,
# in the calling process: fits on other ranks (or in joblib workers: scikit-learn's own class fails
# it with n_jobs=2) append to their own copies, and hpcml's scheduler runs one fold of every
# candidate first.  test_cv_results scores with a closure drawing from one RandomState and, last,
# asserts a property of those draws (the best score of all rungs is not one of the last rung's);
# draws made by copies of that RandomState on several ranks (or joblib workers) in scheduling order
# are other numbers, for which it holds or not by chance.  See docs/halving.md.
DESELECT = {
    "halving": [
        "test_successive_halving.py::test_base_estimator_inputs[HalvingGridSearchCV]",
        "test_successive_halving.py::test_base_estimator_inputs[HalvingRandomSearchCV]",
        "test_successive_halving.py::test_cv_results[HalvingGridSearchCV]",
        "test_successive_halving.py::test_cv_results[HalvingRandomSearchCV]",
    ],
}

# Tests deselected at 2+ ranks only.  test_kmeans_init_auto_with_initial_centroids draws X (and the
# array init) from NumPy's unseeded global RandomState, so every rank passes other data to a collective
# fit: hpcml refuses it on every rank ("X or sample_weight differs between ranks", as
# tests/mpi/test_kmeans_mpi.py checks) instead of fitting a mix of the ranks' data.
DESELECT_AT_2_PLUS = {
    "kmeans": [
        f"test_k_means.py::test_kmeans_init_auto_with_initial_centroids[KMeans-{case}]"
        for case in ("k-means++-1", "random-default", "<lambda>-default", "array-like-1")
    ],
}

RANKS = [int(n) for n in os.environ.get("HPCML_SKLEARN_SUITE_RANKS", "1,2").split(",")]
#: ``-k`` expression to run a subset of the copied files (by hand; CI runs them whole)
SUBSET = ("-k", os.environ["HPCML_SKLEARN_SUITE_K"]) if os.environ.get("HPCML_SKLEARN_SUITE_K") else ()

#: Tests that may fail at 2+ ranks by design (docs/sklearn-compat.md, "Known differences"): they observe
#: side effects of user code run inside a unit (a scorer appending to a list of the test's own, a scorer
#: whose score depends on how often that instance was called), which happen on the rank that ran the
#: unit, as in a worker process with scikit-learn's n_jobs > 1.  Whether they fail on a rank depends on
#: which units it ran (at 4 ranks some ranks run none of cv=2's two units).
KNOWN_AT_2_PLUS = {
    "validation": {
        "test_validation.py::test_cross_val_score_score_func",
        # an estimator/scorer appends itself to a registry of the test's own during the fits
        "test_validation.py::test_learning_curve_exploit_incremental_learning_routing",
        *(
            f"test_validation.py::test_validation_functions_routing[{case}]"
            for case in (
                "cross_validate-extra_args0",
                "cross_val_score-extra_args1",
                "cross_val_predict-extra_args2",
                "learning_curve-extra_args4",
                "validation_curve-extra_args5",
            )
        ),
    },
    "search": {
        # the test draws X from the unseeded global RandomState, so every rank passes other data:
        # hpcml refuses that (the same ValueError on every rank) instead of fitting rank 0's data
        "test_search.py::test_n_features_in",
        "test_search.py::test_cv_results_multi_size_array",
        "test_search.py::test_multi_metric_search_forwards_metadata[GridSearchCV-param_grid]",
        "test_search.py::test_multi_metric_search_forwards_metadata[RandomizedSearchCV-param_distributions]",
        *(
            f"test_search.py::test_searchcv_raise_warning_with_non_finite_score[{case}-{train}]"
            for case in ("GridSearchCV-specialized_params0", "RandomizedSearchCV-specialized_params1")
            for train in ("False", "True")
        ),
    },
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Counts of every unmodified copy (computed once per session)."""
    counts = {}

    def get(name):
        if name not in counts:
            relative, _ = SUITES[name]
            path = prepare_suite(tmp_path_factory.mktemp(f"sk-{name}-orig"), relative, swap=None)
            result = run_suite(path, n=None, timeout=1200, pytest_args=SUBSET)
            assert result.returncode == 0 and result.failed == 0, result.summary()
            counts[name] = result
        return counts[name]

    return get


@pytest.mark.timeout(3600)  # above the reference run (1200 s) + this run's own limit (1500 s)
@pytest.mark.parametrize("n", RANKS)
@pytest.mark.parametrize("name", sorted(SUITES))
def test_sklearn_suite_passes_with_hpcml(name, n, tmp_path, reference):
    ref = reference(name)
    relative, swap = SUITES[name]
    path = prepare_suite(tmp_path, relative, swap=swap)
    assert swap in path.read_text()
    deselect = DESELECT.get(name, []) + (DESELECT_AT_2_PLUS.get(name, []) if n > 1 else [])
    args = tuple(a for d in deselect for a in ("--deselect", d)) + SUBSET
    result = run_suite(path, n=n, timeout=1500, pytest_args=args)
    known = KNOWN_AT_2_PLUS.get(name, set()) if n > 1 else set()
    assert set(result.failed_ids) <= known, result.summary()
    assert result.returncode == (1 if result.failed_ids else 0), result.summary()
    assert len(result.ranks) == n
    for rank, counts in enumerate(result.ranks):
        assert counts["error"] == 0, (rank, counts)
        assert counts["passed"] + counts["failed"] == ref.count("passed") - len(deselect), (rank, counts, ref.ranks[0])
        for key in ("skipped", "xfailed", "xpassed"):
            assert counts[key] == ref.count(key), (rank, key, counts, ref.ranks[0])

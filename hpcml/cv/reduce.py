"""Unit results -> scikit-learn's ``cv_results_`` (plus a ``model`` column), best candidate.

Pure functions, no MPI.  Results are keyed by (candidate, split) upstream and
arrive here in candidate-major order, the layout scikit-learn's own
``_format_results`` (reused here) expects.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from hpcml._compat import format_results, select_best_index


def placeholder(scoring_names: list[str] | None, return_train_score: bool) -> dict[str, Any]:
    """A unit result standing for a unit that has not run (partial results)."""
    scores: Any = {name: math.nan for name in scoring_names} if scoring_names else math.nan
    out = {"test_scores": scores, "fit_time": math.nan, "score_time": math.nan, "n_test_samples": 0, "fit_error": None}
    if return_train_score:
        out["train_scores"] = dict(scores) if isinstance(scores, dict) else scores
    return out


def build_cv_results(
    candidate_params: list[dict[str, Any]],
    n_splits: int,
    out: list[dict[str, Any] | None],
    return_train_score: bool,
    models: list[str] | None = None,
    scoring_names: list[str] | None = None,
) -> dict[str, Any]:
    """scikit-learn's ``cv_results_`` from candidate-major unit results.

    Missing units (a stopped run) count as NaN so that a partial table can be
    written; the caller knows whether the run was complete.
    """
    filled = [item if item is not None else placeholder(scoring_names, return_train_score) for item in out]
    if any(item is None for item in out):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = format_results(candidate_params, n_splits, filled, return_train_score)
    else:
        results = format_results(candidate_params, n_splits, filled, return_train_score)
    if models is not None:
        results = {"model": list(models), **results}
    return results


def best_candidate(results: dict[str, Any], refit_metric: str) -> dict[str, Any]:
    """Index, score and parameters of the best candidate (ties broken as scikit-learn does)."""
    index = select_best_index(False, refit_metric, results)
    return {
        "best_index": index,
        "best_score": float(results[f"mean_test_{refit_metric}"][index]),
        "best_params": results["params"][index],
        "model": results["model"][index] if "model" in results else None,
        "refit_metric": refit_metric,
    }

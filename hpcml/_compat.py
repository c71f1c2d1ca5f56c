"""The only module that imports private scikit-learn names.

hpcml reuses scikit-learn's own split, scoring and result-formatting code so that
its numbers and ``cv_results_`` layout are exactly scikit-learn's; version
differences are absorbed here.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import _fit_context  # noqa: F401
from sklearn.metrics._scorer import (  # noqa: F401
    _BaseScorer,
    _check_multimetric_scoring,
    _MultimetricScorer,
    _PassthroughScorer,
)
from sklearn.model_selection._search import BaseSearchCV
from sklearn.model_selection._search_successive_halving import BaseSuccessiveHalving  # noqa: F401
from sklearn.model_selection._search_successive_halving import _SubsampleMetaSplitter as SubsampleMetaSplitter  # noqa: F401
from sklearn.model_selection._validation import (  # noqa: F401
    _aggregate_score_dicts,
    _check_groups_routing_disabled,
    _check_is_permutation,
    _enforce_prediction_order,
    _fit_and_predict,
    _incremental_fit_estimator,
    _insert_error_scores,
    _normalize_score_results,
    _score,
    _translate_train_sizes,
    _warn_or_raise_about_fit_failures,
)
from sklearn.pipeline import _fit_transform_one  # noqa: F401
from sklearn.utils import _safe_indexing  # noqa: F401
from sklearn.utils._metadata_requests import (  # noqa: F401
    MetadataRouter,
    MethodMapping,
    _routing_enabled,
    process_routing,
)
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads  # noqa: F401
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    validate_params,
)
from sklearn.utils.metaestimators import _safe_split  # noqa: F401
from sklearn.utils.validation import _check_method_params, _num_samples  # noqa: F401


def sklearn_constraints(function: Any) -> dict[str, Any]:
    """The parameter constraints scikit-learn's ``validate_params`` gave a public function."""
    return dict(function._skl_parameter_constraints)


def validate_data(estimator: Any, X: Any, y: Any = "no_validation", *, reset: bool = True, **check_params: Any) -> Any:
    """scikit-learn's ``validate_data`` (>= 1.6) or ``BaseEstimator._validate_data`` (older).

    Checks ``X`` (and ``y``), and sets (``reset=True``) or checks (``reset=False``)
    ``n_features_in_`` and ``feature_names_in_``, with scikit-learn's own messages.
    """
    try:
        from sklearn.utils.validation import validate_data as _validate
    except ImportError:  # pragma: no cover - scikit-learn < 1.6
        return estimator._validate_data(X, y, reset=reset, **check_params)
    return _validate(estimator, X, y, reset=reset, **check_params)


def check_sample_weight(sample_weight: Any, X: Any, dtype: Any) -> Any:
    """scikit-learn's ``_check_sample_weight``: a 1-D float array with one finite weight per row."""
    from sklearn.utils.validation import _check_sample_weight

    return _check_sample_weight(sample_weight, X, dtype=dtype)


def run_search(search: Any, evaluate_candidates: Any, root: Any) -> None:
    """Call ``search._run_search``, with the root callback context when it takes one (scikit-learn >= 1.9)."""
    from inspect import signature

    if root is None or "callback_ctx" not in signature(search._run_search).parameters:
        search._run_search(evaluate_candidates)
        return
    search._run_search(evaluate_candidates, callback_ctx=root)


def routed_score_params(estimator: Any, scoring: Any, error_score: Any, sample_weight: Any) -> dict[str, Any]:
    """The scorer parameters ``GridSearchCV.fit(X, y, sample_weight=w)`` would use.

    scikit-learn forwards ``sample_weight`` to the scorers that accept it (and
    warns about those that do not); asking a ``GridSearchCV`` keeps that rule
    identical across versions.
    """
    if sample_weight is None:
        return {}
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(estimator, {}, scoring=scoring, error_score=error_score, refit=False)
    return dict(search._get_routed_params_for_fit({"sample_weight": sample_weight}).scorer.score)


def format_results(
    candidate_params: list[dict[str, Any]],
    n_splits: int,
    out: list[dict[str, Any]],
    return_train_score: bool,
) -> dict[str, Any]:
    """scikit-learn's ``BaseSearchCV._format_results`` (candidate-major ``out``)."""

    class _Holder:
        pass

    holder = _Holder()
    holder.return_train_score = return_train_score  # type: ignore[attr-defined]
    return BaseSearchCV._format_results(holder, candidate_params, n_splits, out)  # type: ignore[arg-type]


def rank_of_means(means: Any) -> Any:
    """The ``rank_*`` column scikit-learn's ``_format_results`` stores for mean scores (NaN: tied last)."""
    import numpy as np
    from scipy.stats import rankdata
    from sklearn.externals import array_api_extra as xpx

    if np.isnan(means).all():
        return np.ones_like(means, dtype=np.int32)
    filled = xpx.nan_to_num(means, fill_value=np.nanmin(means) - 1)
    return rankdata(-filled, method="min").astype(np.int32, copy=False)


def select_best_index(refit: Any, refit_metric: str, results: dict[str, Any]) -> int:
    """scikit-learn's ``BaseSearchCV._select_best_index``."""
    return int(BaseSearchCV._select_best_index(refit, refit_metric, results))


def euclidean_distances_sq(A: Any, B: Any, b_squared_norms: Any) -> Any:
    """scikit-learn's ``_euclidean_distances(A, B, Y_norm_squared=..., squared=True)`` (no input checks)."""
    from sklearn.metrics.pairwise import _euclidean_distances

    return _euclidean_distances(A, B, Y_norm_squared=b_squared_norms, squared=True)

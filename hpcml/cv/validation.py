"""scikit-learn's ``cross_val_score``, ``cross_val_predict``, ``validation_curve`` and ``learning_curve`` over MPI.

Same signatures, parameter validation, metadata routing and results as the
functions of :mod:`sklearn.model_selection`, plus ``comm`` and
``threads_per_rank`` (and ``prefix_cache_bytes`` where units run through the
engine).  Each is collective over ``comm`` and returns the same
value on every rank.  ``cross_val_score``, ``validation_curve`` and
``learning_curve`` run their (parameter value or training size, split) fits
as units of the search engine (:func:`hpcml.cv.engine.evaluate`: fold reuse,
node-shared folds, cost-aware scheduling); ``cross_val_predict`` and the
incremental ``learning_curve`` run one unit per split through the same
scheduler, with scikit-learn's own per-split functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import model_selection as _skms
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv
from sklearn.utils import Bunch, check_random_state, indexable

from hpcml._compat import (
    _aggregate_score_dicts,
    _check_groups_routing_disabled,
    _check_is_permutation,
    _fit_and_predict,
    _incremental_fit_estimator,
    _translate_train_sizes,
    _warn_or_raise_about_fit_failures,
    sklearn_constraints,
    validate_params,
)
from hpcml.comm import resolve_comm
from hpcml.cv.engine import show_unit_warnings
from hpcml.cv.fitting import WARNINGS_KEY, Problem, captured_warnings, check_error_score, echo
from hpcml.cv.plan import broadcast, compute_splits
from hpcml.cv.search import _EXTRA_CONSTRAINTS, _default_threads, _stored_roles, cross_validate, route
from hpcml.cv.stages import check_same_data, evaluate_units

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


def _constraints(function: Any) -> dict[str, Any]:
    return {**sklearn_constraints(function), **_EXTRA_CONSTRAINTS}


def _evaluate(
    problem: Problem, comm: MPI.Intracomm, threads: int | None, prefix_cache_bytes: int | None = None
) -> list[dict[str, Any]]:
    """The units of ``problem`` over ``comm`` (a fit that raised with ``error_score="raise"`` raises its error)."""
    threads = threads or _default_threads(comm)
    return evaluate_units(problem, comm, threads=threads, prefix_cache_bytes=prefix_cache_bytes).out


def map_units(comm: MPI.Intracomm, n_units: int, work: Callable[[int], Any], threads: int | None) -> list[Any]:
    """``[work(i) for i in range(n_units)]``, the units spread over ``comm``.  Collective.

    Every rank returns the whole list and shows the warnings every unit
    showed.  An exception raised by ``work`` on any rank is raised on every rank.
    """
    import contextlib

    from threadpoolctl import threadpool_limits

    from hpcml.comm import HOST, PackedException
    from hpcml.cv.schedule import UnitQueue, run_units

    rank = comm.Get_rank()

    def guarded(unit: int) -> tuple[Any, Any, Any]:
        # An error is kept as this unit's value, so that every rank raises the error of the
        # first failing unit in scikit-learn's order, whichever rank ran it and whenever.
        try:
            result, shown = captured_warnings(work, unit)
        except Exception as exc:  # noqa: BLE001 - raised below on every rank
            return None, None, PackedException(exc, rank, HOST)
        return result, shown, None

    queue = UnitQueue(range(min(n_units, 1)), range(1, n_units), comm.Get_size()) if rank == 0 else None
    limit = threads or _default_threads(comm)
    with threadpool_limits(limits=limit) if limit else contextlib.nullcontext():
        report = run_units(comm, guarded, queue=queue)
    out = [report.results[i] for i in range(n_units)] if rank == 0 else None
    out = broadcast(out, comm)
    show_unit_warnings([{WARNINGS_KEY: shown} for _, shown, error in out if error is None], comm)
    first = next((error for _, _, error in out if error is not None), None)
    if first is not None:
        raise first.unpack()
    return [result for result, _, _ in out]


@validate_params(_constraints(_skms.cross_val_score), prefer_skip_nested_validation=False)
def cross_val_score(
    estimator: Any,
    X: Any,
    y: Any = None,
    *,
    groups: Any = None,
    scoring: Any = None,
    cv: Any = None,
    n_jobs: Any = None,
    verbose: int = 0,
    params: dict[str, Any] | None = None,
    pre_dispatch: Any = "2*n_jobs",
    error_score: Any = np.nan,
    comm: Any = None,
    threads_per_rank: int | None = None,
    prefix_cache_bytes: int | None = None,
) -> np.ndarray:
    """Evaluate a score by cross-validation, one split per unit, over MPI ranks.

    :func:`sklearn.model_selection.cross_val_score` on :func:`hpcml.cross_validate`,
    plus ``comm``, ``threads_per_rank`` and ``prefix_cache_bytes`` (as in
    :class:`hpcml.GridSearchCV`).  Collective; every rank returns the
    same array of shape ``(n_splits,)``.
    """
    from sklearn.metrics import check_scoring

    scorer = check_scoring(estimator, scoring=scoring)  # a single metric only, as scikit-learn
    results = cross_validate(
        estimator=estimator,
        X=X,
        y=y,
        groups=groups,
        scoring={"score": scorer},
        cv=cv,
        n_jobs=n_jobs,
        verbose=verbose,
        params=params,
        pre_dispatch=pre_dispatch,
        error_score=error_score,
        comm=comm,
        threads_per_rank=threads_per_rank,
        prefix_cache_bytes=prefix_cache_bytes,
    )
    return results["test_score"]


@validate_params(_constraints(_skms.validation_curve), prefer_skip_nested_validation=False)
def validation_curve(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    param_name: str,
    param_range: Any,
    groups: Any = None,
    cv: Any = None,
    scoring: Any = None,
    n_jobs: Any = None,
    pre_dispatch: Any = "all",
    verbose: int = 0,
    error_score: Any = np.nan,
    params: dict[str, Any] | None = None,
    comm: Any = None,
    threads_per_rank: int | None = None,
    prefix_cache_bytes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test scores for each value of one parameter, the (value, split) fits spread over MPI ranks.

    :func:`sklearn.model_selection.validation_curve` plus ``comm``,
    ``threads_per_rank`` and ``prefix_cache_bytes`` (as in :class:`hpcml.GridSearchCV`).
    Collective; every rank returns the same
    ``(train_scores, test_scores)``, each of shape ``(n_values, n_splits)``.
    """
    from sklearn.metrics import check_scoring

    comm = resolve_comm(comm)
    _check_groups_routing_disabled(groups)
    check_error_score(error_score)
    params = {} if params is None else params
    X, y, groups = indexable(X, y, groups)
    check_same_data(comm, X, y)
    cv = check_cv(cv, y, classifier=is_classifier(estimator))
    scorer = check_scoring(estimator, scoring=scoring)
    parts = [("estimator", estimator, ("fit",)), ("splitter", cv, ("split",)), ("scorer", scorer, ("score",))]
    routed = route("validation_curve", parts, params, groups)
    splits = compute_splits(cv, X, y, None, comm, split_params=routed.splitter.split)
    problem = Problem(
        X=X,
        y=y,
        splits=splits,
        estimators=[clone(estimator)],
        candidates=[(0, {param_name: v}) for v in param_range],
        scorer=scorer,
        fit_params=routed.estimator.fit,
        score_params=routed.scorer.score,
        error_score=error_score,
        return_train_score=True,
        verbose=int(verbose),
        collect_warnings=True,
        show_progress=False,
    )
    results = _aggregate_score_dicts(_evaluate(problem, comm, threads_per_rank, prefix_cache_bytes))
    n_params = len(param_range)
    # units are value-major: (value, split) -> value * n_splits + split
    return results["train_scores"].reshape(n_params, -1), results["test_scores"].reshape(n_params, -1)


def _learning_splits(
    cv: Any, X: Any, y: Any, routed: Bunch, train_sizes: Any, shuffle: bool, random_state: Any, comm: MPI.Intracomm
) -> tuple[list[tuple[Any, Any]], np.ndarray]:
    """The splits (rank 0's, shuffled as scikit-learn shuffles them) and the absolute training sizes."""
    splits = compute_splits(cv, X, y, None, comm, split_params=routed.splitter.split)
    train_sizes_abs = _translate_train_sizes(train_sizes, len(splits[0][0]))
    if shuffle:
        # every rank draws (a seeded RandomState advances everywhere); rank 0's draw is the run's
        rng = check_random_state(random_state)
        shuffled = [(rng.permutation(train), test) for train, test in splits]
        splits = broadcast(shuffled if comm.Get_rank() == 0 else None, comm)
    return splits, train_sizes_abs


@validate_params(_constraints(_skms.learning_curve), prefer_skip_nested_validation=False)
def learning_curve(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    train_sizes: Any = np.linspace(0.1, 1.0, 5),  # noqa: B008 - scikit-learn's default
    cv: Any = None,
    scoring: Any = None,
    exploit_incremental_learning: bool = False,
    n_jobs: Any = None,
    pre_dispatch: Any = "all",
    verbose: int = 0,
    shuffle: bool = False,
    random_state: Any = None,
    error_score: Any = np.nan,
    return_times: bool = False,
    params: dict[str, Any] | None = None,
    comm: Any = None,
    threads_per_rank: int | None = None,
    prefix_cache_bytes: int | None = None,
) -> tuple[np.ndarray, ...]:
    """Learning curve: train and test scores for growing training sets, the fits spread over MPI ranks.

    :func:`sklearn.model_selection.learning_curve` plus ``comm``,
    ``threads_per_rank`` and ``prefix_cache_bytes`` (as in :class:`hpcml.GridSearchCV`;
    not used with ``exploit_incremental_learning``).  Collective; every rank returns the same
    ``train_sizes_abs, train_scores, test_scores[, fit_times, score_times]``.
    Each (training size, split) fit is a unit; with
    ``exploit_incremental_learning`` each split is one unit (its ``partial_fit``
    steps depend on each other).
    """
    from sklearn.metrics import check_scoring

    if exploit_incremental_learning and not hasattr(estimator, "partial_fit"):
        raise ValueError("An estimator must support the partial_fit interface to exploit incremental learning")
    comm = resolve_comm(comm)
    _check_groups_routing_disabled(groups)
    check_error_score(error_score)
    params = {} if params is None else params
    X, y, groups = indexable(X, y, groups)
    check_same_data(comm, X, y)
    cv = check_cv(cv, y, classifier=is_classifier(estimator))
    scorer = check_scoring(estimator, scoring=scoring)
    parts = [
        ("estimator", estimator, ("fit", "partial_fit")),
        ("splitter", cv, ("split",)),
        ("scorer", scorer, ("score",)),
    ]
    routed = route("learning_curve", parts, params, groups)
    splits, sizes = _learning_splits(cv, X, y, routed, train_sizes, shuffle, random_state, comm)
    if verbose > 0:
        echo("[learning_curve] Training set sizes: " + str(sizes), comm.Get_rank())
    if exploit_incremental_learning:
        kw = {"error_score": error_score, "return_times": return_times, "threads": threads_per_rank}
        out = _incremental_curve(estimator, X, y, splits, sizes, scorer, routed, comm, **kw)
    else:
        problem = Problem(
            X=X,
            y=y,
            splits=[(train[:n], test) for train, test in splits for n in sizes],
            estimators=[clone(estimator)],
            candidates=[(0, {})],
            scorer=scorer,
            fit_params=routed.estimator.fit,
            score_params=routed.scorer.score,
            error_score=error_score,
            return_train_score=True,
            verbose=int(verbose),
            collect_warnings=True,
            show_params=False,
        )
        results = _evaluate(problem, comm, threads_per_rank, prefix_cache_bytes)
        _warn_or_raise_about_fit_failures(results, error_score)
        results = _aggregate_score_dicts(results)
        keys = ("train_scores", "test_scores") + (("fit_time", "score_time") if return_times else ())
        out = [results[key].reshape(-1, len(sizes)).T for key in keys]
    ret = sizes, out[0], out[1]
    return ret + (out[2], out[3]) if return_times else ret


def _incremental_curve(
    estimator: Any,
    X: Any,
    y: Any,
    splits: list[tuple[Any, Any]],
    sizes: np.ndarray,
    scorer: Any,
    routed: Bunch,
    comm: MPI.Intracomm,
    *,
    error_score: Any,
    return_times: bool,
    threads: int | None,
) -> np.ndarray:
    """``learning_curve(exploit_incremental_learning=True)``: scikit-learn's per-split function, a unit per split."""
    classes = np.unique(y) if is_classifier(estimator) else None

    def work(split: int) -> Any:
        train, test = splits[split]
        return _incremental_fit_estimator(
            clone(estimator),
            X,
            y,
            classes,
            train,
            test,
            sizes,
            scorer,
            return_times,
            error_score=error_score,
            fit_params=routed.estimator.partial_fit,
            score_params=routed.scorer.score,
        )

    return np.asarray(map_units(comm, len(splits), work, threads)).transpose((2, 1, 0))


@validate_params(_constraints(_skms.cross_val_predict), prefer_skip_nested_validation=False)
def cross_val_predict(
    estimator: Any,
    X: Any,
    y: Any = None,
    *,
    groups: Any = None,
    cv: Any = None,
    n_jobs: Any = None,
    verbose: int = 0,
    params: dict[str, Any] | None = None,
    pre_dispatch: Any = "2*n_jobs",
    method: str = "predict",
    comm: Any = None,
    threads_per_rank: int | None = None,
) -> Any:
    """Cross-validated predictions for every sample, one split per unit, over MPI ranks.

    :func:`sklearn.model_selection.cross_val_predict` plus ``comm`` and
    ``threads_per_rank``.  Collective: each split is fitted and predicted on
    the rank its unit lands on, the predictions are gathered on rank 0,
    assembled in sample order as scikit-learn assembles them, and every rank
    returns the same array (or list of arrays, or sparse matrix).  ``X`` may
    also be an :class:`hpcml.H5Dataset`, read once per node (its ``groups`` go to
    the splitter, its ``sample_weight`` to ``fit``).
    """
    from sklearn.preprocessing import LabelEncoder

    from hpcml._compat import _num_samples

    comm = resolve_comm(comm)
    params = {} if params is None else params
    X, y, groups, params = _stored_roles(X, y, groups, params, comm)
    _check_groups_routing_disabled(groups)
    X, y = indexable(X, y)
    check_same_data(comm, X, y)
    cv = check_cv(cv, y, classifier=is_classifier(estimator))
    parts = [("splitter", cv, ("split",)), ("estimator", estimator, ("fit",))]
    routed = route("cross_val_predict", parts, params, groups)
    splits = compute_splits(cv, X, y, None, comm, split_params=routed.splitter.split)
    test_indices = np.concatenate([test for _, test in splits])
    if not _check_is_permutation(test_indices, _num_samples(X)):
        raise ValueError("cross_val_predict only works for partitions")
    encode = method in ["decision_function", "predict_proba", "predict_log_proba"] and y is not None
    if encode:
        y = np.asarray(y)
        if y.ndim == 1:
            y = LabelEncoder().fit_transform(y)
        elif y.ndim == 2:
            y_enc = np.zeros_like(y, dtype=int)
            for i_label in range(y.shape[1]):
                y_enc[:, i_label] = LabelEncoder().fit_transform(y[:, i_label])
            y = y_enc

    def work(split: int) -> Any:
        train, test = splits[split]
        return _fit_and_predict(clone(estimator), X, y, train, test, routed.estimator.fit, method)

    predictions = map_units(comm, len(splits), work, threads_per_rank)
    return _assemble(predictions, test_indices, encode, y)


def _assemble(predictions: list[Any], test_indices: np.ndarray, encode: bool, y: Any) -> Any:
    """scikit-learn's assembly of per-split predictions in sample order."""
    import scipy.sparse as sp

    inv_test_indices = np.empty(len(test_indices), dtype=int)
    inv_test_indices[test_indices] = np.arange(len(test_indices))
    if sp.issparse(predictions[0]):
        predictions = sp.vstack(predictions, format=predictions[0].format)
    elif encode and isinstance(predictions[0], list):
        predictions = [np.concatenate([p[i_label] for p in predictions]) for i_label in range(y.shape[1])]
    else:
        predictions = np.concatenate(predictions)
    if isinstance(predictions, list):
        return [p[inv_test_indices] for p in predictions]
    return predictions[inv_test_indices]

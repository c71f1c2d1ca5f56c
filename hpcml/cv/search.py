"""scikit-learn-compatible search estimators that run over MPI (SPMD).

``hpcml.GridSearchCV`` and ``hpcml.RandomizedSearchCV`` subclass scikit-learn's
own classes: parameters, ``cv_results_`` formatting, best-index selection,
``predict``/``score`` delegation are scikit-learn's code.  Only ``fit`` differs:
it is collective over ``comm`` and the (candidate, split) units are spread over
the ranks by :mod:`hpcml.cv.engine`.  After ``fit`` every rank holds the same
``cv_results_``, ``best_params_``, ``best_score_``, ``best_index_`` and
``best_estimator_``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import model_selection as _skms
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv
from sklearn.utils import Bunch, indexable

from hpcml._compat import (
    Interval,
    MetadataRouter,
    MethodMapping,
    _aggregate_score_dicts,
    _check_groups_routing_disabled,
    _check_method_params,
    _fit_context,
    _insert_error_scores,
    _normalize_score_results,
    _routing_enabled,
    _warn_or_raise_about_fit_failures,
    process_routing,
    run_search,
    validate_params,
)
from hpcml.comm import raise_if_any, resolve_comm
from hpcml.cv.callbacks import (
    TaskSession,
    init_callbacks,
    metadata,
    replay,
    replay_agreed,
    replay_units,
    unit_callbacks,
)
from hpcml.cv.fitting import Problem, check_error_score, echo
from hpcml.cv.plan import broadcast, compute_splits
from hpcml.cv.stages import check_same_data, data_mismatch, evaluate_units, refit_best

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


def _resolve_data(X: Any, y: Any, params: dict[str, Any], comm: MPI.Intracomm) -> tuple[Any, Any, dict[str, Any]]:
    """Accept an ``hpcml.H5Dataset`` as X: load its arrays (node-shared where possible)."""
    from hpcml.data.h5 import H5Dataset

    if not isinstance(X, H5Dataset):
        return X, y, params
    from hpcml.data.shared import load_arrays

    arrays, _ = load_arrays(X, comm)
    params = dict(params)
    for role in ("groups", "sample_weight"):
        if arrays.get(role) is not None and role not in params:
            params[role] = arrays[role]
    return arrays["X"], arrays["y"] if y is None else y, params


def _default_threads(comm: MPI.Intracomm) -> int:
    """Threads per rank when the user gave none: the node's CPUs per rank, within the limit in force.

    A search nested in another hpcml search (or run inside ``threadpool_limits``)
    keeps the caller's BLAS/OpenMP limit instead of raising it to the CPUs it
    sees: the outer ranks already share the node.
    """
    from threadpoolctl import threadpool_info

    from hpcml.threads import plan_layout

    threads = plan_layout(comm).threads
    current = [pool["num_threads"] for pool in threadpool_info() if pool.get("num_threads")]
    return max(1, min(threads, max(current))) if current else threads


def _agree_candidates(local: list[dict[str, Any]], comm: MPI.Intracomm) -> list[dict[str, Any]]:
    """Rank 0's candidate list on every rank, as this rank's own objects when they are the same.

    Collective.  A grid gives the same candidates on every rank; keeping the
    local objects (instead of rank 0's unpickled copies) keeps ``cv_results_
    ["params"]`` holding the grid's own objects, as in scikit-learn.  Unseeded
    samplers differ between ranks: those ranks take rank 0's copies.
    """
    import hashlib
    import pickle

    if comm.Get_size() == 1:
        return local
    try:
        digest: str | None = hashlib.sha256(pickle.dumps(local, protocol=5)).hexdigest()
    except Exception:  # noqa: BLE001 - unpicklable values (lambdas): take rank 0's copies
        digest = None
    root = comm.bcast(digest, root=0)
    same = digest is not None and digest == root
    if comm.allreduce(0 if same else 1) == 0:
        return local
    shared = broadcast(local if comm.Get_rank() == 0 else None, comm)
    return local if same or comm.Get_rank() == 0 else shared


@dataclass
class RunInfo:
    """How a fitted hpcml search laid out its work (see :func:`run_info`).

    Attributes
    ----------
    schedule_reports : list of hpcml.cv.schedule.ScheduleReport
        One per ``evaluate_candidates`` call: per-rank busy seconds, units done, messages.
    folds : dict
        Where the folds' rows were materialised (``copies``: "rank" or "node", ``phases``, ...).
    """

    schedule_reports: list[Any] = field(default_factory=list)
    folds: dict[str, Any] = field(default_factory=dict)


def run_info(search: Any) -> RunInfo:
    """The :class:`RunInfo` of a fitted ``hpcml.GridSearchCV``/``RandomizedSearchCV``.

    Kept out of the public ``*_`` attributes so that a fitted hpcml search has
    exactly scikit-learn's fitted attributes.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``search`` was not fitted by hpcml.
    """
    from sklearn.exceptions import NotFittedError

    info = getattr(search, "_hpcml_run", None)
    if info is None:
        raise NotFittedError(f"{type(search).__name__} was not fitted by hpcml")
    return info


_EXTRA_CONSTRAINTS = {
    "comm": "no_validation",
    "threads_per_rank": [Interval(Integral, 1, None, closed="left"), None],
    "prefix_cache_bytes": [Interval(Integral, 0, None, closed="left"), None],
}


class _MPISearchMixin:
    """The MPI ``fit`` shared by the grid and randomized searches."""

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run fit with all sets of parameters, over all ranks of ``comm``.

        Collective over ``comm``: call it on every rank with the same arguments.

        Parameters
        ----------
        X : array-like, sparse matrix or hpcml.H5Dataset
            Training vectors; an ``H5Dataset`` is read once per node.
        y : array-like, optional
            Target (taken from the ``H5Dataset`` when X is one and y is None).
        **params : dict
            Fit parameters, ``groups`` for the splitter, as in scikit-learn.

        Returns
        -------
        self : object
            The fitted search (identical on every rank).
        """
        comm = resolve_comm(self.comm)
        X, y, params = _resolve_data(X, y, params, comm)
        # Collective, the same answer on every rank; raised after scikit-learn's own local
        # checks below, so that their errors (and messages) come first, as in scikit-learn.
        mismatch = data_mismatch(comm, X, y)
        check_error_score(self.error_score)
        scorers, refit_metric = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        sample_weight = params.get("sample_weight")
        if mismatch is not None:
            self._check_split_parameters(X, y, routed)
            raise ValueError(mismatch)
        root = init_callbacks(self, X, y, sample_weight, comm)
        self._check_split_parameters(X, y, routed)
        base_estimator = clone(self.estimator)
        self._hpcml_run = RunInfo()
        evaluate_candidates, state = self._candidate_evaluator(X, y, routed, scorers, base_estimator, comm)
        run_search(self, evaluate_candidates, root)
        first_test_score = state["out"][0]["test_scores"]
        self.multimetric_ = isinstance(first_test_score, dict)
        if callable(self.scoring) and self.multimetric_:
            self._check_refit_for_multimetric(first_test_score)
            refit_metric = self.refit
        results = state["results"]
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            self._refit(base_estimator, X, y, routed.estimator.fit, sample_weight, root, comm)
        self.scorer_ = scorers._scorers if hasattr(scorers, "_scorers") else scorers
        self.cv_results_ = results
        if root is not None:
            root.call_on_fit_task_end(estimator=self, X=X, y=y, metadata=metadata(sample_weight))
        return self

    def _check_split_parameters(self, X: Any, y: Any, routed: Any) -> None:
        """scikit-learn's local checks of the splitter (and of halving's resource parameters); sets ``n_splits_``."""
        self._checked_cv_orig = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        if hasattr(self, "_check_input_parameters"):
            self._check_input_parameters(X=X, y=y, split_params=routed.splitter.split)
        self.n_splits_ = self._checked_cv_orig.get_n_splits(X, y, **routed.splitter.split)

    def _candidate_evaluator(
        self, X: Any, y: Any, routed: Any, scorers: Any, base_estimator: Any, comm: MPI.Intracomm
    ) -> tuple[Any, dict[str, Any]]:
        """scikit-learn's ``evaluate_candidates`` closure, running the units over ``comm``."""
        threads = self.threads_per_rank or _default_threads(comm)
        state: dict[str, Any] = {"params": [], "out": [], "more": defaultdict(list), "results": {}}

        def evaluate_candidates(
            candidate_params: Any, cv: Any = None, more_results: Any = None, callback_ctx: Any = None
        ) -> Any:
            cv = cv or self._checked_cv_orig
            # Rank 0's candidates and splits are the truth (unseeded samplers/splitters);
            # a rank keeps its own (identical) objects when it can, as scikit-learn does.
            candidate_params = _agree_candidates(list(candidate_params), comm)
            splits = compute_splits(cv, X, y, None, comm, split_params=routed.splitter.split)
            if len(splits) != self.n_splits_:
                raise ValueError(
                    "cv.split and cv.get_n_splits return inconsistent results. "
                    f"Expected {self.n_splits_} splits, got {len(splits)}"
                )
            if hasattr(self, "_check_rung_splits"):  # halving: subsamples too small (identical on every rank)
                self._check_rung_splits(splits, X, y, more_results, comm)
            if self.verbose > 0:
                n_candidates = len(candidate_params)
                echo(
                    f"Fitting {self.n_splits_} folds for each of {n_candidates} candidates, totalling "
                    f"{n_candidates * self.n_splits_} fits",
                    comm.Get_rank(),
                )
            problem = Problem(
                X=X,
                y=y,
                splits=splits,
                estimators=[base_estimator],
                candidates=[(0, p) for p in candidate_params],
                scorer=scorers,
                fit_params=routed.estimator.fit,
                score_params=routed.scorer.score,
                error_score=self.error_score,
                return_train_score=self.return_train_score,
                verbose=int(self.verbose),
                collect_warnings=True,
                callbacks=unit_callbacks(self, callback_ctx, len(candidate_params) * len(splits), comm.Get_rank()),
            )
            evaluation = evaluate_units(problem, comm, threads=threads, prefix_cache_bytes=self.prefix_cache_bytes)
            self._hpcml_run.schedule_reports.append(evaluation.report)
            self._hpcml_run.folds = evaluation.folds
            out = evaluation.out
            replay_units(self, problem, out, comm)
            if len(out) < 1:
                raise ValueError("No fits were performed. Was the CV iterator empty? Were there no candidates?")
            _warn_or_raise_about_fit_failures(out, self.error_score)
            if callable(self.scoring):
                _insert_error_scores(out, self.error_score)
            state["params"].extend(candidate_params)
            state["out"].extend(out)
            if more_results is not None:
                for key, value in more_results.items():
                    state["more"][key].extend(value)
            state["results"] = self._format_results(state["params"], self.n_splits_, state["out"], state["more"])
            return state["results"]

        return evaluate_candidates, state

    def _refit(
        self, base_estimator: Any, X: Any, y: Any, fit_params: dict, sample_weight: Any, root: Any, comm: MPI.Intracomm
    ) -> None:
        """Refit once, on rank 0, and share it (the ``refit-with-best-params`` task).

        Unseeded estimators would otherwise differ between ranks.  If the refit
        raises, every rank raises its exception.  Rank 0 fits alone
        (``comm="self"`` for estimators with a comm parameter); every rank then
        gives the fitted estimator the user's comm values back, as scikit-learn's
        ``clone(estimator).set_params(**best_params_)`` would have them.  The
        callback task runs live on rank 0 and is replayed on the others.
        """
        ctx = None if root is None else root.subcontext(task_name="refit-with-best-params")
        if ctx is not None and not ctx._callbacks:
            ctx = None  # no callbacks: nothing to record or replay
        session = None
        if comm.Get_rank() == 0 and ctx is not None:
            session = TaskSession(ctx, self, X, y, sample_weight)
        around = None if session is None else session.fitting
        self.best_estimator_, self.refit_time_ = refit_best(
            base_estimator, self.best_params_, X, y, fit_params, comm, around=around
        )
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_
        if ctx is not None:
            records, error = None, None
            if session is not None:
                try:
                    records = session.end()
                except Exception as exc:  # noqa: BLE001 - raised on every rank just below
                    error = exc
            raise_if_any(comm, error)
            records = broadcast(records, comm)
            refs = {"X": X, "y": y, "sample_weight": sample_weight}
            replay_agreed(comm, None if session is not None else lambda: replay(records, ctx, self, refs))


class GridSearchCV(_MPISearchMixin, _skms.GridSearchCV):
    """Exhaustive search over a parameter grid, spread over MPI ranks.

    Same parameters and attributes as :class:`sklearn.model_selection.GridSearchCV`
    (``n_jobs`` and ``pre_dispatch`` are accepted and ignored: the ranks are the
    parallelism), plus:

    Parameters
    ----------
    comm : None, "world", "self" or mpi4py.MPI.Intracomm, optional
        Ranks that share the search; ``None`` (default) or ``"world"``:
        ``MPI.COMM_WORLD``, ``"self"``: ``MPI.COMM_SELF`` (this rank alone; hpcml
        gives a search nested inside another hpcml search or ``cross_validate``
        ``comm="self"`` while its unit runs, and the user's value back after).
        ``fit`` is collective over it.
    threads_per_rank : int, optional
        BLAS/OpenMP threads per rank during the fits (default: the node's CPUs
        divided by its ranks, or ``SLURM_CPUS_PER_TASK``, but never more than
        the limit already in force: a search nested in another hpcml search
        keeps the outer search's threads).
    prefix_cache_bytes : int, optional
        Memory budget per rank, in bytes, of the cache of fitted pipeline
        prefixes (docs/reuse.md): ``None`` (default): ``HPCML_PREFIX_CACHE_BYTES``
        or 1 GiB; ``0``: no reuse, every candidate's pipeline is fitted whole.
        The least recently used prefixes are evicted beyond it; the results do
        not depend on it.  ``hpcml.run_info(search).folds["prefix"]`` reports
        the budget, fits, fits avoided, evictions and peak bytes.

    Examples
    --------
    Run under ``mpiexec -n 4 python script.py``::

        from sklearn.svm import SVC
        import hpcml
        search = hpcml.GridSearchCV(SVC(), {"C": [1, 10], "gamma": [1e-3, 1e-4]}, cv=5)
        search.fit(X, y)          # every rank gets the same cv_results_
    """

    _parameter_constraints: dict = {**_skms.GridSearchCV._parameter_constraints, **_EXTRA_CONSTRAINTS}

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        scoring: Any = None,
        n_jobs: Any = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        error_score: Any = np.nan,
        return_train_score: bool = False,
        comm: Any = None,
        threads_per_rank: int | None = None,
        prefix_cache_bytes: int | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator,
            param_grid=param_grid,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.comm = comm
        self.threads_per_rank = threads_per_rank
        self.prefix_cache_bytes = prefix_cache_bytes


class RandomizedSearchCV(_MPISearchMixin, _skms.RandomizedSearchCV):
    """Randomized search over parameter distributions, spread over MPI ranks.

    Same parameters and attributes as
    :class:`sklearn.model_selection.RandomizedSearchCV`, plus ``comm`` and
    ``threads_per_rank`` as in :class:`GridSearchCV`.  The candidates are drawn
    on rank 0 and broadcast, so an unseeded search is still consistent.
    """

    _parameter_constraints: dict = {**_skms.RandomizedSearchCV._parameter_constraints, **_EXTRA_CONSTRAINTS}

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_iter: int = 10,
        scoring: Any = None,
        n_jobs: Any = None,
        refit: Any = True,
        cv: Any = None,
        verbose: int = 0,
        pre_dispatch: Any = "2*n_jobs",
        random_state: Any = None,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        comm: Any = None,
        threads_per_rank: int | None = None,
        prefix_cache_bytes: int | None = None,
    ) -> None:
        super().__init__(
            estimator=estimator,
            param_distributions=param_distributions,
            n_iter=n_iter,
            scoring=scoring,
            n_jobs=n_jobs,
            refit=refit,
            cv=cv,
            verbose=verbose,
            pre_dispatch=pre_dispatch,
            random_state=random_state,
            error_score=error_score,
            return_train_score=return_train_score,
        )
        self.comm = comm
        self.threads_per_rank = threads_per_rank
        self.prefix_cache_bytes = prefix_cache_bytes


def _cross_validate_constraints() -> dict[str, Any]:
    """scikit-learn's parameter constraints of ``cross_validate``, plus hpcml's (X may be an H5Dataset)."""
    from sklearn.metrics import get_scorer_names

    from hpcml._compat import HasMethods, StrOptions
    from hpcml.data.h5 import H5Dataset

    return {
        "estimator": [HasMethods("fit")],
        "X": ["array-like", "sparse matrix", H5Dataset],
        "y": ["array-like", None],
        "groups": ["array-like", None],
        "scoring": [StrOptions(set(get_scorer_names())), callable, list, tuple, dict, None],
        "cv": ["cv_object"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "params": [dict, None],
        "pre_dispatch": [Integral, str],
        "return_train_score": ["boolean"],
        "return_estimator": ["boolean"],
        "return_indices": ["boolean"],
        "error_score": [StrOptions({"raise"}), Real],
        **_EXTRA_CONSTRAINTS,
    }


def route(owner: str, parts: list[tuple[str, Any, tuple[str, ...]]], params: dict[str, Any], groups: Any) -> Bunch:
    """scikit-learn's routing of ``params`` for ``owner`` (``parts``: name, object, callees of ``fit``).

    Without metadata routing: ``params`` go to ``fit`` (and ``partial_fit``), ``groups`` to the splitter.
    """
    from sklearn.exceptions import UnsetMetadataPassedError

    if not _routing_enabled():
        return Bunch(
            estimator=Bunch(fit=params, partial_fit=params),
            splitter=Bunch(split={"groups": groups}),
            scorer=Bunch(score={}),
        )
    router = MetadataRouter(owner=owner)
    for name, obj, callees in parts:
        mapping = MethodMapping()
        for callee in callees:
            mapping.add(caller="fit", callee=callee)
        router.add(**{name: obj}, method_mapping=mapping)
    try:
        routed = process_routing(router, "fit", **params)
    except UnsetMetadataPassedError as e:
        raise UnsetMetadataPassedError(
            message=str(e).replace(f"{owner}.fit", owner),
            unrequested_params=e.unrequested_params,
            routed_params=e.routed_params,
        ) from None
    return routed


@validate_params(_cross_validate_constraints(), prefer_skip_nested_validation=False)
def cross_validate(
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
    return_train_score: bool = False,
    return_estimator: bool = False,
    return_indices: bool = False,
    error_score: Any = np.nan,
    comm: Any = None,
    threads_per_rank: int | None = None,
    prefix_cache_bytes: int | None = None,
) -> dict[str, Any]:
    """Evaluate metric(s) by cross-validation, one split per unit, over MPI ranks.

    Same signature, parameter validation, metadata routing and return value as
    :func:`sklearn.model_selection.cross_validate`, plus ``comm``,
    ``threads_per_rank`` and ``prefix_cache_bytes`` (as in :class:`GridSearchCV`);
    ``X`` may also be an :class:`hpcml.H5Dataset` (its ``groups`` go to the splitter, its ``sample_weight`` to ``fit``).
    Collective over ``comm`` (``None``/``"world"``: ``MPI.COMM_WORLD``,
    ``"self"``: ``MPI.COMM_SELF``, or an intracommunicator); every rank
    returns the same dict.
    """
    comm = resolve_comm(comm)
    X, y, groups, params = _stored_roles(X, y, groups, params, comm)
    _check_groups_routing_disabled(groups)
    check_error_score(error_score)
    X, y = indexable(X, y)
    check_same_data(comm, X, y)
    cv = check_cv(cv, y, classifier=is_classifier(estimator))
    scorers = _cross_validate_scorers(estimator, scoring, error_score)
    parts = [("splitter", cv, ("split",)), ("estimator", estimator, ("fit",)), ("scorer", scorers, ("score",))]
    routed = route("cross_validate", parts, params, groups)
    splits = compute_splits(cv, X, y, None, comm, split_params=dict(routed.splitter.split))
    problem = Problem(
        X=X,
        y=y,
        splits=splits,
        estimators=[clone(estimator)],
        candidates=[(0, {})],
        scorer=scorers,
        fit_params=_check_method_params(X, params=dict(routed.estimator.fit)),
        score_params=dict(routed.scorer.score),
        error_score=error_score,
        return_train_score=return_train_score,
        return_estimator=return_estimator,
        verbose=int(verbose),
        collect_warnings=True,
        show_params=False,
    )
    threads = threads_per_rank or _default_threads(comm)
    results = evaluate_units(problem, comm, threads=threads, prefix_cache_bytes=prefix_cache_bytes).out
    _warn_or_raise_about_fit_failures(results, error_score)
    if callable(scoring):
        _insert_error_scores(results, error_score)
    return _cross_validate_result(results, splits, return_train_score, return_estimator, return_indices)


def _stored_roles(
    X: Any, y: Any, groups: Any, params: dict[str, Any] | None, comm: MPI.Intracomm
) -> tuple[Any, Any, Any, dict[str, Any]]:
    """X as arrays when it is an ``H5Dataset``; its stored groups and sample_weight as parameters."""
    from hpcml.data.h5 import H5Dataset

    params = {} if params is None else dict(params)
    if not isinstance(X, H5Dataset):
        return X, y, groups, params
    X, y, stored = _resolve_data(X, y, {}, comm)
    if groups is None and stored.get("groups") is not None and not _routing_enabled():
        groups = stored["groups"]
    for role in ("groups", "sample_weight") if _routing_enabled() else ("sample_weight",):
        if stored.get(role) is not None:
            params.setdefault(role, stored[role])
    return X, y, groups, params


def _cross_validate_scorers(estimator: Any, scoring: Any, error_score: Any) -> Any:
    """scikit-learn's scorer(s) of ``cross_validate`` (a multimetric scorer raises with ``error_score="raise"``)."""
    from sklearn.metrics import check_scoring

    if scoring is None or isinstance(scoring, str) or callable(scoring):
        return check_scoring(estimator, scoring=scoring)
    return check_scoring(estimator, scoring=scoring, raise_exc=(error_score == "raise"))


def _cross_validate_result(
    results: list[dict[str, Any]],
    splits: list[tuple[Any, Any]],
    return_train_score: bool,
    return_estimator: bool,
    return_indices: bool,
) -> dict[str, Any]:
    """scikit-learn's return value of ``cross_validate`` from the per-split results."""
    agg = _aggregate_score_dicts(results)
    ret: dict[str, Any] = {"fit_time": agg["fit_time"], "score_time": agg["score_time"]}
    if return_estimator:
        ret["estimator"] = agg["estimator"]
    if return_indices:
        ret["indices"] = {}
        ret["indices"]["train"], ret["indices"]["test"] = zip(*splits)
    test_scores = _normalize_score_results(agg["test_scores"])
    train_scores = _normalize_score_results(agg["train_scores"]) if return_train_score else {}
    for name in test_scores:
        ret[f"test_{name}"] = test_scores[name]
        if return_train_score:
            ret[f"train_{name}"] = train_scores[name]
    return ret

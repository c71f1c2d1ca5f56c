"""``hpcml.AsyncHalvingSearchCV``: barrier-free asynchronous successive halving (ASHA) over MPI.

A subclass of scikit-learn's ``BaseSuccessiveHalving`` (so parameter checks,
``min_resources_``/``max_resources_``, ``cv_results_`` formatting, the
best-candidate rule and ``predict``/``score`` delegation are scikit-learn's);
``fit`` runs the (candidate, rung, split) units through hpcml's scheduler with
an :class:`hpcml.cv.asha.AshaQueue` as its work source: rank 0 decides
promotions as jobs finish (:class:`hpcml.cv.asha.AshaRule`), no rank waits for
a rung to complete.  See docs/adaptive.md.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.model_selection import ParameterSampler, check_cv
from sklearn.utils import indexable

from hpcml._compat import (
    BaseSuccessiveHalving,
    Interval,
    SubsampleMetaSplitter,
    _check_method_params,
    _fit_context,
    _num_samples,
    _safe_indexing,
    _warn_or_raise_about_fit_failures,
)
from hpcml._faults import hook as fault_hook
from hpcml.comm import raise_if_any, resolve_comm
from hpcml.cv.asha import AshaLayout, AshaQueue, AshaRule, Job, job_score
from hpcml.cv.engine import comm_params, refit_alone, restore_comm_params, user_estimator
from hpcml.cv.fitting import FitRaised, FoldCache, Problem, check_error_score, fit_and_score, serial_estimator
from hpcml.cv.plan import broadcast, compute_splits
from hpcml.cv.prefix import prefix_cache
from hpcml.cv.schedule import ScheduleReport, run_units
from hpcml.cv.search import _EXTRA_CONSTRAINTS, _agree_candidates, _default_threads, _resolve_data

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from mpi4py import MPI


@dataclass
class AshaRun:
    """Outcome of :func:`run_asha` (identical on every rank)."""

    results: dict[int, dict[str, Any]]
    log: list[dict[str, Any]]
    report: ScheduleReport
    complete: bool


def rung_resources(
    min_resources: int, max_resources: int, factor: float, n_candidates: int
) -> tuple[list[int], int, int]:
    """Resources of the rungs, as scikit-learn's halving computes its iterations.

    Returns
    -------
    resources, n_required, n_possible : list of int, int, int
        ``min(n_possible, n_required)`` rungs; ``n_required = 1 + floor(log(n_candidates, factor))``
        (the rungs after which fewer than ``factor`` candidates remain),
        ``n_possible = 1 + floor(log(max // min, factor))``.
    """
    n_required = 1 + math.floor(math.log(n_candidates, factor))
    n_possible = 1 + math.floor(math.log(max_resources // min_resources, factor))
    n_rungs = min(n_possible, n_required)
    return [min(int(factor**k * min_resources), max_resources) for k in range(n_rungs)], n_required, n_possible


def run_asha(
    problem: Problem,
    layout: AshaLayout,
    rule: AshaRule | None,
    comm: MPI.Intracomm,
    *,
    split_of: Callable[[int, int], int],
    threads: int | None = None,
    done: dict[int, dict[str, Any]] | None = None,
    on_results: Callable[[int, list[tuple[int, Any, float]]], None] | None = None,
    on_finish: Callable[[AshaRule, list[Job]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    deadline: float | None = None,
    prefix_cache_bytes: int | None = None,
) -> AshaRun:
    """Run an ASHA search's units over ``comm``.  Collective.

    Parameters
    ----------
    problem : Problem
        Its candidate ``c * n_rungs + k`` is candidate ``c`` at rung ``k``.
    layout : AshaLayout
        Unit numbering.
    rule : AshaRule
        Rank 0: the rule, fresh or restored from a journal (others: ignored).
    comm : mpi4py.MPI.Intracomm
        The ranks that share the work.
    split_of : callable
        ``split_of(rung, split)``: index into ``problem.splits``.
    threads : int, optional
        BLAS/OpenMP threads per rank while fitting.
    done : dict, optional
        Rank 0: unit results already known (a resumed run).
    on_results, should_stop : callable, optional
        See :func:`hpcml.cv.schedule.run_units`.
    on_finish : callable, optional
        Rank 0: ``on_finish(rule, jobs)`` after results finished jobs (journal, progress).
    deadline : float, optional
        No unit starts after it that would not finish in time.
    prefix_cache_bytes : int, optional
        Budget per rank of the pipeline-prefix cache (:func:`hpcml.cv.prefix.prefix_cache`).

    Returns
    -------
    AshaRun
        Results of every unit run (and of ``done``), and the rule's log.
    """
    problem.estimators = [serial_estimator(clone(est)) for est in problem.estimators]
    cache = FoldCache(problem, size=2)
    cache.prefix = prefix_cache(problem, comm.Get_size(), prefix_cache_bytes)
    rank = comm.Get_rank()
    queue = _resumed_queue(rule, layout, done or {}, comm.Get_size(), deadline) if rank == 0 else None

    unit_fault = fault_hook("unit", rank)  # None unless HPCML_INJECT_FAULT names it (tests)

    def work(unit: int) -> dict[str, Any]:
        if unit_fault is not None:
            unit_fault()
        cand, rung, split = layout.triple(unit)
        return fit_and_score(problem, cache, cand * layout.n_rungs + rung, split_of(rung, split))

    def collect(source: int, items: list[tuple[int, Any, float]]) -> None:
        if on_results is not None:
            on_results(source, items)
        finished = queue.add_results(items)
        if finished and on_finish is not None:
            on_finish(queue.rule, finished)

    with _thread_limits(threads):
        report = run_units(
            comm,
            work,
            queue=queue,
            on_results=collect if rank == 0 else None,
            should_stop=should_stop,
            poll_hook=fault_hook("worker", rank),
        )
    cache.clear()
    return _shared_run(report, queue, done, comm)


def _thread_limits(threads: int | None) -> Any:
    """A threadpoolctl limit of ``threads`` BLAS/OpenMP threads, or no limit."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _shared_run(
    report: ScheduleReport, queue: AshaQueue | None, done: dict[int, dict[str, Any]] | None, comm: MPI.Intracomm
) -> AshaRun:
    """Rank 0's results (with ``done``), decision log and completeness, on every rank; collective."""
    payload = None
    if comm.Get_rank() == 0:
        assert queue is not None
        merged = dict(done or {})
        merged.update(report.results)
        payload = (merged, queue.rule.log, queue.rule.done and not report.stopped)
    merged, log, complete = broadcast(payload, comm)
    return AshaRun(results=merged, log=log, report=report, complete=complete)


def _resumed_queue(
    rule: AshaRule, layout: AshaLayout, done: dict[int, dict[str, Any]], n_ranks: int, deadline: float | None
) -> AshaQueue:
    """Rank 0's queue: jobs decided before a resume whose units are missing run first."""
    first = [
        layout.unit(job.candidate, job.rung, s)
        for job in sorted(rule.running, key=lambda j: (j.rung, j.candidate))
        for s in range(layout.n_splits)
        if layout.unit(job.candidate, job.rung, s) not in done
    ]
    queue = AshaQueue(rule, layout, n_ranks, deadline=deadline, first=first)
    for job in sorted(rule.running, key=lambda j: (j.rung, j.candidate)):
        parts = {s: done[u] for s in range(layout.n_splits) if (u := layout.unit(job.candidate, job.rung, s)) in done}
        if len(parts) == layout.n_splits:  # stopped between its last unit and its finish event
            rule.finish(job, *job_score([parts[s] for s in range(layout.n_splits)]))
        elif parts:
            queue.partial[job] = parts
    for unit, result in done.items():
        queue.record(unit, result["fit_time"] + result["score_time"])
    return queue


class AsyncHalvingSearchCV(BaseSuccessiveHalving):
    """Asynchronous successive halving (ASHA, Li et al. 2020) over MPI ranks, barrier-free.

    Candidates are sampled from ``param_distributions`` as by
    :class:`sklearn.model_selection.ParameterSampler` (a grid of lists without
    replacement).  Rung ``k`` gives a candidate ``min_resources_ * factor**k``
    of the resource (samples, or an integer estimator parameter such as
    ``n_estimators``), up to ``max_resources_``; the rungs are scikit-learn's
    halving iterations (``min(n_possible_iterations_, n_required_iterations_)``).
    A worker that asks for work gets a promotion of a candidate in the top
    ``1/factor`` of a rung among the jobs finished so far (higher rungs first),
    else a new candidate at rung 0.  The best candidate is the best mean test
    score at the highest rung reached (scikit-learn's halving rule).

    Parameters
    ----------
    estimator, param_distributions, n_candidates, factor, resource, min_resources, max_resources, cv, scoring, refit,
    error_score, return_train_score, random_state, verbose
        As in :class:`sklearn.model_selection.HalvingRandomSearchCV` (``n_candidates``
        is an integer here; ``min_resources`` may be an integer, ``"smallest"`` or
        ``"exhaust"``).
    comm, threads_per_rank, prefix_cache_bytes
        As in :class:`hpcml.GridSearchCV`.

    Attributes
    ----------
    cv_results_ : dict
        One row per (candidate, rung) evaluated, ordered by rung then candidate,
        with scikit-learn's halving columns (``iter`` is the rung, ``n_resources``)
        plus ``candidate`` (index into the sampled candidates) and ``promoted``.
    decisions_ : list of dict
        The decision log: ``decide`` events (decision ``start``/``promote``,
        candidate, rung, ``seen``: the evidence at the source rung) and ``finish``
        events (candidate, rung, mean score), in the order rank 0 saw them.
    n_resources_, n_candidates_, n_remaining_candidates_, max_resources_, min_resources_, n_iterations_,
    n_possible_iterations_, n_required_iterations_
        As in scikit-learn's halving, per rung reached.
    """

    _parameter_constraints: dict = {
        **BaseSuccessiveHalving._parameter_constraints,
        "param_distributions": [dict, list],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        **_EXTRA_CONSTRAINTS,
    }
    for _name in ("n_jobs", "aggressive_elimination"):
        _parameter_constraints.pop(_name, None)
    #: the promotion rule (benchmarks swap in a synchronous one to measure the barrier's cost)
    _rule_class: type[AshaRule] = AshaRule

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_candidates: int,
        factor: float = 3,
        resource: str = "n_samples",
        min_resources: Any = "smallest",
        max_resources: Any = "auto",
        cv: Any = 5,
        scoring: Any = None,
        refit: bool = True,
        error_score: Any = np.nan,
        return_train_score: bool = False,
        random_state: Any = None,
        comm: Any = None,
        threads_per_rank: int | None = None,
        verbose: int = 0,
        prefix_cache_bytes: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.param_distributions = param_distributions
        self.n_candidates = n_candidates
        self.factor = factor
        self.resource = resource
        self.min_resources = min_resources
        self.max_resources = max_resources
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.random_state = random_state
        self.comm = comm
        self.threads_per_rank = threads_per_rank
        self.verbose = verbose
        self.prefix_cache_bytes = prefix_cache_bytes

    def _generate_candidate_params(self) -> list[dict[str, Any]]:
        return list(ParameterSampler(self.param_distributions, self.n_candidates, random_state=self.random_state))

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any = None, **params: Any) -> AsyncHalvingSearchCV:
        """Run the asynchronous halving search over all ranks of ``comm``.  Collective.

        Parameters
        ----------
        X : array-like, sparse matrix or hpcml.H5Dataset
            Training vectors.
        y : array-like, optional
            Target.
        **params : dict
            Fit parameters and ``groups``, as in scikit-learn.

        Returns
        -------
        self : AsyncHalvingSearchCV
            Fitted, identical on every rank.
        """
        comm = resolve_comm(self.comm)
        X, y, params = _resolve_data(X, y, params, comm)
        check_error_score(self.error_score)
        problem, layout, split_of = self._prepare(X, y, params, comm)
        rule = self._rule_class(layout.n_candidates, layout.n_rungs, self.factor) if comm.Get_rank() == 0 else None
        try:
            run = run_asha(
                problem,
                layout,
                rule,
                comm,
                split_of=split_of,
                threads=self.threads_per_rank or _default_threads(comm),
                prefix_cache_bytes=self.prefix_cache_bytes,
                on_finish=self._print_occupancy if self.verbose and comm.Get_rank() == 0 else None,
            )
        except FitRaised as exc:
            raise exc.original from None
        self.schedule_report_ = run.report
        self.decisions_ = run.log
        self._store_results(run.results, layout, problem)
        self._refit(X, y, comm)
        return self

    def _prepare(self, X: Any, y: Any, params: dict[str, Any], comm: MPI.Intracomm) -> tuple[Problem, AshaLayout, Any]:
        """Checks, candidates, rungs and the splits of every rung, identical on every rank."""
        self._scorers, _ = self._get_scorers()
        X, y = indexable(X, y)
        params = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(params)
        self._routed_fit = routed.estimator.fit
        groups = routed.splitter.split.get("groups")
        self.check_inputs(X, y, routed.splitter.split)
        candidates = _agree_candidates(self._generate_candidate_params(), comm)
        if self.resource != "n_samples" and any(self.resource in c for c in candidates):
            raise ValueError(
                f"Cannot use parameter {self.resource} as the resource since it is part of the searched parameters."
            )
        self._X, self._y = X, y
        return self.plan(
            X,
            y,
            groups,
            [(0, c) for c in candidates],
            [clone(self.estimator)],
            {"scorer": self._scorers, "fit_params": routed.estimator.fit, "score_params": routed.scorer.score},
            comm,
        )

    def check_inputs(self, X: Any, y: Any, split_params: dict[str, Any]) -> None:
        """scikit-learn's halving checks (``_check_input_parameters``): ``min_resources_``, ``max_resources_``."""
        self._checked_cv_orig = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        self._check_input_parameters(X=X, y=y, split_params=split_params)
        self._n_samples_orig = _num_samples(X)
        self.n_splits_ = self._checked_cv_orig.get_n_splits(X, y, **split_params)

    def plan(
        self,
        X: Any,
        y: Any,
        groups: Any,
        candidates: list[tuple[int, dict[str, Any]]],
        estimators: list[Any],
        scoring: dict[str, Any],
        comm: MPI.Intracomm,
    ) -> tuple[Problem, AshaLayout, Any]:
        """The units of an ASHA search over ``candidates`` ((estimator index, params)); collective.

        Returns
        -------
        problem, layout, split_of
            ``problem``'s candidate ``c * n_rungs + k`` is candidate ``c`` with
            rung ``k``'s resource; ``split_of(rung, split)`` indexes ``problem.splits``.
        """
        self._set_rungs(len(candidates))
        rung_splits = self._rung_splits(X, y, groups, comm)
        expanded = [
            (t, {**c, self.resource: r} if self.resource != "n_samples" else dict(c))
            for t, c in candidates
            for r in self._rung_resources
        ]
        problem = Problem(
            X=X,
            y=y,
            splits=[s for splits in rung_splits for s in splits],
            estimators=estimators,
            candidates=expanded,
            error_score=self.error_score,
            return_train_score=self.return_train_score,
            verbose=int(self.verbose),
            **scoring,
        )
        n_splits = self.n_splits_
        per_rung = len(rung_splits) > 1

        def split_of(rung: int, split: int) -> int:
            return rung * n_splits + split if per_rung else split

        return problem, AshaLayout(len(candidates), len(self._rung_resources), n_splits), split_of

    def _set_rungs(self, n_candidates: int) -> None:
        if self.min_resources == "exhaust":
            n_required = 1 + math.floor(math.log(n_candidates, self.factor))
            self.min_resources_ = max(self.min_resources_, self.max_resources_ // self.factor ** (n_required - 1))
        resources, n_required, n_possible = rung_resources(
            self.min_resources_, self.max_resources_, self.factor, n_candidates
        )
        self._rung_resources = resources
        self.n_required_iterations_ = n_required
        self.n_possible_iterations_ = n_possible

    def _rung_splits(self, X: Any, y: Any, groups: Any, comm: MPI.Intracomm) -> list[list[tuple[Any, Any]]]:
        """Every rung's splits (subsampled as scikit-learn's halving does for ``n_samples``), checked."""
        if self.resource != "n_samples":
            splits = compute_splits(self._checked_cv_orig, X, y, groups, comm)
            return [splits]
        out = []
        for resources in self._rung_resources:
            cv = SubsampleMetaSplitter(
                base_cv=self._checked_cv_orig,
                fraction=resources / self._n_samples_orig,
                subsample_test=True,
                random_state=self.random_state,
            )
            try:
                out.append(compute_splits(_PositionalGroups(cv), X, y, groups, comm))
            except ValueError as exc:  # raised on every rank: resample() of an empty subsample
                raise ValueError(
                    f"min_resources_={self._rung_resources[0]} is too small: subsampling the splits for "
                    f"{resources} rows failed ({exc}); raise min_resources"
                ) from None
        check_subsamples(out[0], X, y, self._rung_resources[0], self.estimator, comm)
        return out

    def _store_results(self, results: dict[int, dict[str, Any]], layout: AshaLayout, problem: Problem) -> None:
        """``cv_results_`` (one row per evaluated (candidate, rung), rung-major) and the halving attributes."""
        jobs = sorted(
            {(rung, cand) for cand, rung, _ in map(layout.triple, results)},
        )
        jobs = [(r, c) for r, c in jobs if all(layout.unit(c, r, s) in results for s in range(layout.n_splits))]
        out = [results[layout.unit(c, r, s)] for r, c in jobs for s in range(layout.n_splits)]
        if not out:
            raise ValueError("No fits were performed. Were there no candidates?")
        _warn_or_raise_about_fit_failures(out, self.error_score)
        reached = {(r, c) for r, c in jobs}
        more = {
            "iter": [r for r, _ in jobs],
            "n_resources": [self._rung_resources[r] for r, _ in jobs],
            "candidate": [c for _, c in jobs],
            "promoted": [(r + 1, c) in reached for r, c in jobs],
        }
        params = [problem.candidates[c * layout.n_rungs + r][1] for r, c in jobs]
        results_ = self._format_results(params, layout.n_splits, out, more)
        self.cv_results_ = results_
        n_iter = max(r for r, _ in jobs) + 1
        self.n_resources_ = self._rung_resources[:n_iter]
        self.n_candidates_ = [sum(1 for r, _ in jobs if r == k) for k in range(n_iter)]
        self.n_remaining_candidates_ = self.n_candidates_[-1]
        self.n_iterations_ = n_iter
        self.multimetric_ = False
        self.best_index_ = self._select_best_index(self.refit, "score", results_)
        self.best_score_ = results_["mean_test_score"][self.best_index_]
        self.best_params_ = results_["params"][self.best_index_]
        self.scorer_ = self._scorers

    def _refit(self, X: Any, y: Any, comm: MPI.Intracomm) -> None:
        """Refit the best candidate on rank 0 alone and share it (as hpcml's grid search does)."""
        if not self.refit:
            del self._X, self._y
            return
        base = clone(self.estimator)
        fitted, error = None, None
        if comm.Get_rank() == 0:
            try:
                fitted = refit_alone(base, self.best_params_, self._X, self._y, self._routed_fit)
            except Exception as exc:  # noqa: BLE001 - raised on every rank just below
                error = exc
        raise_if_any(comm, error)
        self.best_estimator_, self.refit_time_ = broadcast(fitted, comm, what="the refit best_estimator_")
        restore_comm_params(self.best_estimator_, comm_params(user_estimator(base, self.best_params_)))
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_
        del self._X, self._y

    @staticmethod
    def _print_occupancy(rule: AshaRule, jobs: list[Job]) -> None:
        print(f"[ASHA] {format_occupancy(rule)}", flush=True)


class _PositionalGroups:
    """scikit-learn's subsampling splitter with the ``split(X, y, groups)`` signature of other splitters."""

    def __init__(self, cv: Any) -> None:
        self.cv = cv

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        return self.cv.split(X, y, groups=groups)


def format_occupancy(rule: AshaRule) -> str:
    """Rung occupancy as ``rung k: finished+running`` fields, bottom rung first."""
    parts = [f"r{k}:{done}+{running}" for k, (done, running) in enumerate(rule.occupancy())]
    return "rungs " + " ".join(parts)


def check_subsamples(
    splits: list[tuple[Any, Any]],
    X: Any,
    y: Any,
    resources: int,
    estimator: Any,
    comm: MPI.Intracomm,
    convert: Callable[[ValueError], Exception] | None = None,
) -> None:
    """Refuse subsampled folds no fit can use (scikit-learn #20775), before any search fit; collective.

    Shared by synchronous halving (API and CLI) and ASHA.  A split is refused
    when its train or test subsample is empty, or when (for a classifier) its
    training subsample holds a single class and the estimator cannot fit one
    class: rank 0 tries ``clone(estimator).fit`` on that subsample once (a
    classifier that accepts one class, such as ``DummyClassifier``, is left to
    run as in scikit-learn).  ``splits`` must be identical on every rank (rank
    0's, broadcast); the answer is rank 0's, raised on every rank (``convert``
    may turn it into another exception first, e.g. a config error).

    Raises
    ------
    ValueError
        Naming ``min_resources_``, the split and the problem ("raise min_resources").
    """
    error: Exception | None = None
    if comm.Get_rank() == 0:
        try:
            _check_subsamples(splits, X, y, resources, estimator)
        except ValueError as exc:
            error = convert(exc) if convert is not None else exc
    raise_if_any(comm, error)


def _check_subsamples(splits: list[tuple[Any, Any]], X: Any, y: Any, resources: int, estimator: Any) -> None:
    y_arr = None if y is None else np.asarray(y)
    probed = False
    for i, (train, test) in enumerate(splits):
        problem = None
        if len(train) == 0 or len(test) == 0:
            problem = f"{len(train)} training and {len(test)} test rows"
        elif is_classifier(estimator) and y_arr is not None and np.unique(y_arr[train]).shape[0] < 2 and not probed:
            probed = True  # one try: the other single-class subsamples behave the same
            failure = _single_class_fit_error(estimator, X, y_arr, train)
            if failure is not None:
                problem = f"a training subsample of {len(train)} rows with a single class ({failure})"
        if problem is not None:
            raise ValueError(
                f"min_resources_={resources} is too small: split {i} of the first rung has {problem}; "
                "raise min_resources"
            )


def _single_class_fit_error(estimator: Any, X: Any, y: Any, train: Any) -> str | None:
    """The one-line error of ``clone(estimator).fit`` on the rows ``train`` (one class), or None if it fits."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clone(estimator).fit(_safe_indexing(X, train), y[train])
    except Exception as exc:  # noqa: BLE001 - the estimator's own refusal, reported in one line
        text = str(exc).strip()
        return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    return None

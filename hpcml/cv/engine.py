"""Run the units of a search over MPI and return scikit-learn's per-unit results.

Composes :mod:`plan` (unit order), :mod:`schedule` (dispatch), :mod:`fitting`
(the work) and returns the results in candidate-major order, the order
scikit-learn's ``_format_results`` expects.  Shared by the Python API and the CLI.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sklearn.base import clone

from hpcml._faults import hook as fault_hook
from hpcml.comm import is_agreed
from hpcml.cv.cow import ShmFolds
from hpcml.cv.fitting import (
    LINES_KEY,
    WARNINGS_KEY,
    FitRaised,
    FoldCache,
    Problem,
    captured_warnings,
    fit_and_score,
    print_lines,
    serial_estimator,
    show_warnings,
)
from hpcml.cv.folds import FoldPlan, NodeFolds, choose, split_rows
from hpcml.cv.plan import UnitIndex, broadcast, unit_order
from hpcml.cv.prefix import prefix_cache, prefix_counters
from hpcml.cv.schedule import ScheduleReport, UnitQueue, run_units

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


@dataclass
class Evaluation:
    """Outcome of :func:`evaluate` (identical on every rank)."""

    out: list[dict[str, Any] | None]
    complete: bool
    report: ScheduleReport
    fold_cache: dict[str, int] = field(default_factory=dict)
    folds: dict[str, Any] = field(default_factory=dict)


def evaluate(
    problem: Problem,
    comm: MPI.Intracomm,
    *,
    done: dict[int, dict[str, Any]] | None = None,
    on_results: Callable[[int, list[tuple[int, Any, float]]], None] | None = None,
    deadline: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_hook: Callable[[], None] | None = None,
    threads: int | None = None,
    fold_copies: str = "auto",
    prefix_cache_bytes: int | None = None,
    dispatch: str | None = None,
) -> Evaluation:
    """Fit and score every (candidate, split) of ``problem``.  Collective over ``comm``.

    Parameters
    ----------
    problem : Problem
        Identical on every rank.
    comm : mpi4py.MPI.Intracomm
        The ranks that share the work.
    done : dict, optional
        Rank 0: results already known (unit -> result), e.g. from a journal; they
        are not run again, and their times seed the cost estimates.
    on_results, should_stop, poll_hook : callable, optional
        See :func:`hpcml.cv.schedule.run_units`.
    deadline : float, optional
        ``time.time()`` after which no unit is started that would not finish
        in time (estimated from the costs seen so far).
    threads : int, optional
        BLAS/OpenMP threads per rank while fitting (threadpoolctl).
    fold_copies : {"auto", "rank", "node"}
        Where a fold's rows are materialised (:mod:`hpcml.cv.folds`): per rank
        (units of all splits interleave freely), or once per node in shared
        memory (the search then runs split by split).
    prefix_cache_bytes : int, optional
        Memory budget per rank of the pipeline-prefix cache (:mod:`hpcml.cv.prefix`);
        default ``HPCML_PREFIX_CACHE_BYTES`` or 1 GiB; 0 fits every pipeline whole.
    dispatch : {"auto", "flat", "hierarchical"}, optional
        See :func:`hpcml.cv.schedule.run_units` (``HPCML_DISPATCH`` wins when set).

    Returns
    -------
    Evaluation
        ``out`` has one entry per unit in candidate-major order (``None`` for
        units not run because the run was stopped; then ``complete`` is false).

    Raises
    ------
    FitRaised
        On every rank, when a fit raised with ``error_score="raise"``.
    """
    index = UnitIndex(problem.n_candidates, problem.n_splits)
    user_estimators = problem.estimators
    problem.estimators = [serial_estimator(clone(est)) for est in problem.estimators]
    cache = FoldCache(problem)
    cache.prefix = prefix_cache(problem, comm.Get_size(), prefix_cache_bytes)
    done = done or {}
    fold_plan, node_folds = _open_folds(problem, cache, fold_copies, comm)
    queues = _Queues(index, done, comm, deadline, None if cache.prefix is None else cache.prefix.plan.affinity)
    run = functools.partial(
        run_units,
        comm,
        _unit_work(problem, cache, index, comm.Get_rank()),
        poll_hook=poll_hook if poll_hook is not None else fault_hook("worker", comm.Get_rank()),
        on_results=_printing(on_results) if problem.verbose > 1 else on_results,
        should_stop=should_stop,
        dispatch=dispatch,
    )
    report, phases = _schedule(run, problem, cache, node_folds, queues, threads, comm)
    prefix, cow = _release_folds(cache, node_folds, comm)
    out = _collect(problem, index, done, report, user_estimators, comm)
    return Evaluation(
        out=out,
        complete=all(item is not None for item in out),
        report=report,
        fold_cache={"hits": cache.hits, "misses": cache.misses},
        folds={**fold_plan.as_dict(), "phases": phases, "prefix": prefix, "copy_on_write": cow},
    )


def _open_folds(problem: Problem, cache: FoldCache, fold_copies: str, comm: MPI.Intracomm) -> tuple[FoldPlan, Any]:
    """Where the folds' rows live: the plan, and the node-shared folds when they could be opened.  Collective."""
    fold_plan = choose(
        fold_copies,
        problem.X,
        problem.splits,
        comm,
        n_candidates=problem.n_candidates,
        keeps_estimators=problem.return_estimator,
    )
    if fold_plan.mode != "node":
        return fold_plan, None
    node_folds, failure = (None, "copy-on-write folds are off")
    if cache.cow:  # a /dev/shm file: units get private copy-on-write views
        node_folds, failure = ShmFolds.open(problem.X, problem.splits, comm)
    if node_folds is None:
        node_folds, failure = NodeFolds.open(problem.X, problem.splits, comm)
    if node_folds is None:
        fold_plan = FoldPlan("rank", f"fold copies per rank: {failure}", fold_plan.fold_bytes)
    return fold_plan, node_folds


def _release_folds(cache: FoldCache, node_folds: Any, comm: MPI.Intracomm) -> tuple[dict[str, Any], bool]:
    """After a run: the prefix cache's counters and whether folds were copy-on-write; frees the folds."""
    prefix = prefix_counters(cache.prefix, comm)
    cow = cache.cow and (node_folds is None or isinstance(node_folds, ShmFolds))
    cache.clear()
    if node_folds is not None:
        node_folds.close()
    return prefix, cow


def _unit_work(problem: Problem, cache: FoldCache, index: UnitIndex, rank: int) -> Callable[[int], dict[str, Any]]:
    """``work(unit)``: fit and score one (candidate, split); a failing fit's error names its unit."""

    def work(unit: int) -> dict[str, Any]:
        cand, split = index.pair(unit)
        try:
            if not problem.collect_warnings:
                return fit_and_score(problem, cache, cand, split)
            result, shown = captured_warnings(fit_and_score, problem, cache, cand, split)
        except FitRaised as exc:
            exc.unit = unit
            raise
        if shown:
            result[WARNINGS_KEY] = shown
        return result

    unit_fault = fault_hook("unit", rank)  # None unless HPCML_INJECT_FAULT names it (tests)
    if unit_fault is None:
        return work

    def faulty(unit: int) -> dict[str, Any]:
        unit_fault()
        return work(unit)

    return faulty


class _Queues:
    """Rank 0's unit queues, whose cost estimates start from the units done before (journal, earlier splits)."""

    def __init__(
        self,
        index: UnitIndex,
        done: dict[int, dict[str, Any]],
        comm: MPI.Intracomm,
        deadline: float | None,
        affinity: Callable[[int, int], Any] | None,
    ) -> None:
        self.index, self.done, self.comm, self.deadline, self.affinity = index, done, comm, deadline, affinity
        self.costs: dict[int, list[float]] = {}
        self.learn(done)

    def learn(self, results: dict[int, dict[str, Any]]) -> None:
        """Record the time each of ``results`` took (rank 0)."""
        for unit, result in results.items():
            self.costs.setdefault(self.index.candidate(unit), []).append(result["fit_time"] + result["score_time"])

    def queue(self, units: set[int] | None) -> UnitQueue | None:
        """Rank 0: the queue of the units left (of ``units`` only, if given); ``None`` elsewhere."""
        if self.comm.Get_rank() != 0:
            return None
        index, affinity = self.index, self.affinity
        prior = {cand: sum(v) / len(v) for cand, v in self.costs.items()}
        skip = set(self.done) if units is None else set(range(len(index))) - units
        first, rest = unit_order(index, done=skip, known_cost=prior.keys())
        return UnitQueue(
            first,
            rest,
            self.comm.Get_size(),
            group_of=index.candidate,
            prior_costs=prior,
            deadline=self.deadline,
            affinity_of=None if affinity is None else (lambda unit: affinity(*index.pair(unit))),
        )


def _thread_limits(threads: int | None) -> Any:
    """The BLAS/OpenMP limit (threadpoolctl) while fitting (nothing when ``threads`` is None)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def _schedule(
    run: Callable[..., ScheduleReport],
    problem: Problem,
    cache: FoldCache,
    node_folds: Any,
    queues: _Queues,
    threads: int | None,
    comm: MPI.Intracomm,
) -> tuple[ScheduleReport, int]:
    """Run the units under the thread limit: one schedule, or one per split (node-shared folds)."""
    try:
        with _thread_limits(threads):
            if node_folds is None:
                return run(queue=queues.queue(None)), 0
            return _run_by_split(run, problem, cache, node_folds, queues, comm)
    except BaseException as exc:
        cache.clear()
        # Freeing the buffer is collective: only when every rank raises this error
        # (run_units agrees on errors inside units); otherwise this rank is about
        # to abort the run and must not wait for the others in MPI_Win_free.
        if node_folds is not None and is_agreed(exc):
            node_folds.close()
        raise


def _run_by_split(
    run: Callable[..., ScheduleReport],
    problem: Problem,
    cache: FoldCache,
    node_folds: Any,
    queues: _Queues,
    comm: MPI.Intracomm,
) -> tuple[ScheduleReport, int]:
    """Node-shared folds: one schedule per split with units left, after the node built that split's rows."""
    report = ScheduleReport(busy=[0.0] * comm.Get_size())
    phases = 0
    for split, units in _phases(queues.index, queues.done, comm):
        cache.clear()
        train, test = (split_rows(part) for part in problem.splits[split])
        cache.adopt(split, *node_folds.load(problem.X, train, test, split))
        phase = run(queue=queues.queue(units))
        phases += 1
        _merge(report, phase)
        if comm.Get_rank() == 0:
            queues.learn(phase.results)
        if phase.stopped:  # agreed: run_units broadcasts it
            break
    return report, phases


def _collect(
    problem: Problem,
    index: UnitIndex,
    done: dict[int, dict[str, Any]],
    report: ScheduleReport,
    user_estimators: list[Any],
    comm: MPI.Intracomm,
) -> list[dict[str, Any] | None]:
    """Every unit's result in candidate-major order, on every rank (verbose lines, comms, warnings settled)."""
    rank = comm.Get_rank()
    out: list[dict[str, Any] | None] | None = None
    if rank == 0:
        merged = dict(done)
        merged.update(report.results)
        out = [merged.get(unit) for unit in range(len(index))]
    out = broadcast(out, comm)
    if problem.verbose > 1:  # rank 0 printed them as they arrived; the others echo them now
        for result in out:
            if isinstance(result, dict) and rank:
                print_lines(result, rank, drop=True)
            elif isinstance(result, dict):
                result.pop(LINES_KEY, None)
    if problem.return_estimator:
        _restore_unit_comms(out, index, problem.candidates, user_estimators)
    if problem.collect_warnings:
        show_unit_warnings(out, comm)
    return out


def show_unit_warnings(out: list[Any], comm: MPI.Intracomm) -> None:
    """Show on this rank the warnings every unit of ``out`` showed, and drop them from the results.

    Collective: a warning an ``"error"`` filter turns into an exception raises on every rank.
    """
    from hpcml.comm import raise_if_any

    registry: dict[Any, Any] = {}
    error = None
    for result in out:
        shown = result.pop(WARNINGS_KEY, None) if isinstance(result, dict) else None
        if shown and error is None:
            try:
                show_warnings(shown, registry)
            except Exception as exc:  # noqa: BLE001 - agreed below
                error = exc
    raise_if_any(comm, error)


def _printing(
    on_results: Callable[[int, list[tuple[int, Any, float]]], None] | None,
) -> Callable[[int, list[tuple[int, Any, float]]], None]:
    """Rank 0 prints the verbose lines of every unit as its result arrives (workers print nothing)."""

    def record(rank: int, items: list[tuple[int, Any, float]]) -> None:
        for _, result, _ in items:
            if isinstance(result, dict):
                print_lines(result)
        if on_results is not None:
            on_results(rank, items)

    return record


def user_estimator(estimator: Any, params: dict[str, Any]) -> Any:
    """``clone(estimator).set_params(**params)``: the estimator scikit-learn's refit would fit."""
    return clone(estimator).set_params(**clone(params, safe=False))


def comm_params(estimator: Any) -> dict[str, Any]:
    """The ``comm`` and ``*__comm`` parameters of ``estimator`` (hpcml.sgd estimators, nested hpcml searches)."""
    return {k: v for k, v in estimator.get_params(deep=True).items() if k == "comm" or k.endswith("__comm")}


def restore_comm_params(estimator: Any, values: dict[str, Any]) -> Any:
    """Give a (fitted) estimator the ``comm`` parameter values ``values`` back, undoing ``serial_estimator``.

    Parameters
    ----------
    estimator : estimator
        Fitted by :func:`refit_alone` (its communicators were replaced by ``"self"``).
    values : dict
        :func:`comm_params` of the user's estimator with the same parameters.

    Returns
    -------
    estimator
        ``estimator``, changed in place.
    """
    current = comm_params(estimator)
    changed = {k: v for k, v in values.items() if k in current and current[k] is not v}
    return estimator.set_params(**changed) if changed else estimator


def refit_alone(
    estimator: Any,
    params: dict[str, Any],
    X: Any,
    y: Any,
    fit_params: dict[str, Any],
    around: Callable[[Any], Any] | None = None,
) -> tuple[Any, float]:
    """scikit-learn's refit of the best candidate on all data, run by this rank alone.

    Estimators with a ``comm`` parameter (``hpcml.sgd``) fit with
    ``comm="self"``, as inside a unit: the other ranks take no part in the fit.
    The fitted estimator still holds ``"self"``; give it the user's values
    back with :func:`restore_comm_params` (after sending it to other ranks:
    a communicator does not pickle).

    ``around(candidate)``, if given, is a context manager entered around the
    fit (the search's ``refit-with-best-params`` callback task).

    Returns
    -------
    estimator, seconds : estimator, float
        The fitted estimator and the time its ``fit`` took.
    """
    candidate = serial_estimator(user_estimator(estimator, params))
    with around(candidate) if around is not None else contextlib.nullcontext():
        start = time.time()
        if y is not None:
            candidate.fit(X, y, **fit_params)
        else:
            candidate.fit(X, **fit_params)
        seconds = time.time() - start
    return candidate, seconds


def _restore_unit_comms(
    out: list[dict[str, Any] | None],
    index: UnitIndex,
    candidates: list[tuple[int, dict[str, Any]]],
    estimators: list[Any],
) -> None:
    """Returned estimators (``return_estimator``) get the user's ``comm`` values back, on every rank."""
    wanted: dict[int, dict[str, Any]] = {}
    for unit, result in enumerate(out):
        if result is None or result.get("estimator") is None:
            continue
        cand = index.pair(unit)[0]
        if cand not in wanted:
            template, params = candidates[cand]
            wanted[cand] = comm_params(user_estimator(estimators[template], params))
        if wanted[cand]:
            restore_comm_params(result["estimator"], wanted[cand])


def _phases(index: UnitIndex, done: dict[int, Any], comm: MPI.Intracomm) -> list[tuple[int, set[int]]]:
    """The splits with units left, each with those units (rank 0 knows ``done``; broadcast)."""
    phases = None
    if comm.Get_rank() == 0:
        phases = []
        for split in range(index.n_splits):
            units = {index.unit(c, split) for c in range(index.n_candidates)} - set(done)
            if units:
                phases.append((split, units))
    return broadcast(phases, comm)


def _merge(total: ScheduleReport, phase: ScheduleReport) -> None:
    total.results.update(phase.results)
    total.busy = [a + b for a, b in zip(total.busy, phase.busy)]
    if phase.units_done:
        total.units_done = [a + b for a, b in zip(total.units_done or [0] * len(phase.units_done), phase.units_done)]
    total.messages += phase.messages
    total.stopped = total.stopped or phase.stopped
    total.wall += phase.wall
    total.inline_dispatch = phase.inline_dispatch
    total.dispatch = phase.dispatch


__all__ = [
    "Evaluation",
    "FitRaised",
    "comm_params",
    "evaluate",
    "refit_alone",
    "restore_comm_params",
    "user_estimator",
]

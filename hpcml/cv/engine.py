"""Run the units of a search over MPI and return scikit-learn's per-unit results.

Composes :mod:`plan` (unit order), :mod:`schedule` (dispatch), :mod:`fitting`
(the work) and returns the results in candidate-major order, the order
scikit-learn's ``_format_results`` expects.  Shared by the Python API and the CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sklearn.base import clone

from hpcml._faults import inject
from hpcml.cv.fitting import FitRaised, FoldCache, Problem, fit_and_score, serial_estimator
from hpcml.cv.plan import UnitIndex, broadcast, unit_order
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
    problem.estimators = [serial_estimator(clone(est)) for est in problem.estimators]
    cache = FoldCache(problem)

    rank = comm.Get_rank()

    def work(unit: int) -> dict[str, Any]:
        inject("unit", rank)
        cand, split = index.pair(unit)
        return fit_and_score(problem, cache, cand, split)

    queue = None
    done = done or {}
    if comm.Get_rank() == 0:
        costs: dict[int, list[float]] = {}
        for unit, result in done.items():
            costs.setdefault(unit // index.n_splits, []).append(result["fit_time"] + result["score_time"])
        prior = {cand: sum(v) / len(v) for cand, v in costs.items()}
        first, rest = unit_order(index, done=done.keys(), known_cost=prior.keys())
        queue = UnitQueue(first, rest, comm.Get_size(), group_of=index.candidate, prior_costs=prior, deadline=deadline)
    limits = contextlib.nullcontext()
    if threads is not None:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=threads)
    with limits:
        report = run_units(
            comm,
            work,
            poll_hook=poll_hook if poll_hook is not None else (lambda: inject("worker", rank)),
            queue=queue,
            on_results=on_results,
            should_stop=should_stop,
        )
    out: list[dict[str, Any] | None] | None = None
    if comm.Get_rank() == 0:
        merged = dict(done)
        merged.update(report.results)
        out = [merged.get(unit) for unit in range(len(index))]
    out = broadcast(out, comm)
    return Evaluation(
        out=out,
        complete=all(item is not None for item in out),
        report=report,
        fold_cache={"hits": cache.hits, "misses": cache.misses},
    )


__all__ = ["Evaluation", "FitRaised", "evaluate"]

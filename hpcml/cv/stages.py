"""The stages the CLI run and the Python API share, and the CLI's stop checkpoints and bounded plan.

:func:`evaluate_units` (evaluate, with the one error handling for a failing
fit) and :func:`refit_best` (refit on rank 0 alone, shared, the user's
communicators back) are the same code for ``python -m hpcml.cv``
(:mod:`hpcml.cv.runner`) and for ``GridSearchCV.fit`` / ``cross_validate``
(:mod:`hpcml.cv.search`, :mod:`hpcml.cv.validation`), so the two cannot drift.

A signal (SIGTERM, SIGINT, SIGUSR1) must act at every stage, not only while
units run: between stages rank 0 looks at its :class:`hpcml.signals.StopFlag`
and every rank learns the answer (:func:`checkpoint`), and the candidate list
is built in slices that look at the flag too (:func:`make_candidates`).
A plan is held in memory on every rank, so its size is bounded
(:data:`MAX_CANDIDATES`, :data:`MAX_UNITS`): a larger search is refused with one
line before anything is built.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from hpcml.comm import HOST, mark_agreed, mark_origin, origin_of, raise_if_any
from hpcml.cv.engine import Evaluation, comm_params, evaluate, refit_alone, restore_comm_params, user_estimator
from hpcml.cv.fitting import FitRaised, Problem
from hpcml.cv.plan import broadcast
from hpcml.errors import ConfigError, Incomplete
from hpcml.signals import StopFlag

#: Most candidates one search may have (the list is built, broadcast and hashed on every rank).
MAX_CANDIDATES = 100_000

#: Most units (candidates x splits) one search may have (one result per unit is kept in memory).
MAX_UNITS = 1_000_000

#: Candidates drawn between two looks at the stop flag.
_SLICE = 1024


def stopped(stop: StopFlag | None, stage: str) -> Incomplete:
    """The error that ends a run stopped by a signal before its units ran."""
    signum = stop.signum if stop is not None else None
    return Incomplete(f"stopped by signal {signum} while {stage}; no unit ran, nothing to resume (run again)")


def checkpoint(stop: StopFlag | None, comm: MPI.Intracomm, stage: str) -> None:
    """Collective: if rank 0 has seen a stop signal, every rank raises :class:`Incomplete` (exit 3).

    Parameters
    ----------
    stop : StopFlag or None
        The run's stop flag (``None``: no signals handled, nothing to check).
    comm : mpi4py.MPI.Intracomm
        The run's communicator.
    stage : str
        What the run was doing, for the message (``"loading the data"``).
    """
    seen = bool(stop) if comm.Get_rank() == 0 and stop is not None else False
    if comm.bcast(seen, root=0):
        error = stopped(stop, stage)
        error.agreed = True  # type: ignore[attr-defined]  # rank 0 prints it once
        raise error


def count_candidates(model: Any) -> int:
    """Candidates of one configured model, without drawing them (scikit-learn's own ``len``)."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if model.distributions is not None:
        return len(ParameterSampler(model.distributions, model.n_iter, random_state=0))
    return len(ParameterGrid(model.grid if model.grid is not None else [{}]))


def make_candidates(config: Any, stop: StopFlag | None) -> list[tuple[str, dict[str, Any]]]:
    """Every (model name, parameters) of the search, refusing a plan above :data:`MAX_CANDIDATES`.

    Drawn exactly as scikit-learn's ``ParameterGrid``/``ParameterSampler`` do,
    in slices between which the stop flag is read (rank 0 only).
    """
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    total = sum(count_candidates(model) for model in config.models)
    if total > MAX_CANDIDATES:
        raise ConfigError(
            f"{config.source}: the search has {total} candidates, more than hpcml plans at once "
            f"({MAX_CANDIDATES}); lower n_iter or split the grid into several searches"
        )
    out: list[tuple[str, dict[str, Any]]] = []
    for model in config.models:
        if model.distributions is not None:
            source = iter(ParameterSampler(model.distributions, model.n_iter, random_state=model.random_state))
        else:
            source = iter(ParameterGrid(model.grid if model.grid is not None else [{}]))
        while chunk := list(itertools.islice(source, _SLICE)):
            if stop is not None and stop:
                raise stopped(stop, "drawing the candidates")
            out.extend((model.name, params) for params in chunk)
    return out


def check_units(config: Any, n_candidates: int, n_splits: int) -> None:
    """Refuse a plan without splits (scikit-learn: "No fits were performed") or above :data:`MAX_UNITS` units."""
    if n_splits == 0:
        raise ConfigError(
            f"{config.source}: [cv] {type(config.cv).__name__} gives no split: no fits were performed "
            "(was the CV iterator empty? a PredefinedSplit needs a test_fold other than -1)"
        )
    if n_candidates * n_splits > MAX_UNITS:
        raise ConfigError(
            f"{config.source}: the search has {n_candidates} candidates x {n_splits} splits = "
            f"{n_candidates * n_splits} units, more than hpcml plans at once ({MAX_UNITS}); "
            "use fewer candidates or splits, or split the search"
        )


def check_target(config: Any) -> None:
    """Refuse ``[data] y = false`` for a model that needs a target (scikit-learn's ``target_tags.required``)."""
    if config.data.y is not None:
        return
    for model in config.models:
        tags = model.estimator.__sklearn_tags__()
        if tags.target_tags.required:
            raise ConfigError(
                f"{config.source}: [data] y = false, but model '{model.name}' ({type(model.estimator).__name__}) "
                "needs a target: name the y dataset"
            )


def oversubscription(layouts: list[dict[str, Any]]) -> str | None:
    """A warning when ranks given several threads each hold more threads than their host's CPUs.

    One thread per rank is never warned about: more ranks than CPUs is a choice
    made at launch (``mpiexec -n``), visible there.
    """
    by_host: dict[str, tuple[int, set[int]]] = {}
    if all(int(lay["threads"]) <= 1 for lay in layouts):
        return None
    for lay in layouts:
        threads, cpus = by_host.get(lay["host"], (0, set()))
        by_host[lay["host"]] = (threads + int(lay["threads"]), cpus | set(lay["cpus"]))
    worst = [(host, t, len(c)) for host, (t, c) in sorted(by_host.items()) if c and t > len(c)]
    if not worst:
        return None
    host, threads, cpus = max(worst, key=lambda w: w[1] / w[2])
    return (
        f"{threads} threads on {cpus} CPUs of {host} ({threads / cpus:.1f}x oversubscribed: BLAS/OpenMP "
        "threads will compete and fits slow down); lower --threads-per-rank or the number of ranks"
    )


def _digest(value: Any) -> tuple[Any, ...] | None:
    """Type, shape and a CRC-32 of the bytes of an array (dense or sparse); ``None`` for ``None``."""
    import zlib

    import numpy as np
    import scipy.sparse as sp

    if value is None:
        return None
    if sp.issparse(value):
        parts = [value.data, getattr(value, "indices", None), getattr(value, "indptr", None)]
    else:
        array = value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
        if array.dtype.hasobject:  # no cheap byte identity: compare the shape only
            return (type(value).__name__, tuple(array.shape), str(array.dtype))
        parts = [array]
    crc = 0
    for part in parts:
        if part is not None:
            crc = zlib.crc32(np.ascontiguousarray(part).reshape(-1).view(np.uint8), crc)
    return (type(value).__name__, tuple(np.shape(value)), str(getattr(value, "dtype", "")), crc)


def check_same_data(comm: MPI.Intracomm, X: Any, y: Any) -> None:
    """Collective (one allgather): every rank must hold the same X and y, as the API requires.

    A CRC-32 over the bytes (after ``indexable``) catches data loaded or shuffled
    differently on some ranks, which would otherwise give silently wrong scores.
    Nothing is exchanged on a single rank.
    """
    message = data_mismatch(comm, X, y)
    if message is not None:
        raise ValueError(message)


def data_mismatch(comm: MPI.Intracomm, X: Any, y: Any) -> str | None:
    """Collective: ``None`` when every rank holds the same X and y, else the error message.

    Every rank gets the same answer, so a caller may run more local checks first
    (scikit-learn's own parameter errors) and raise the mismatch after them
    without entering another collective.
    """
    if comm.Get_size() == 1:
        return None
    digests = comm.allgather((_digest(X), _digest(y)))
    for rank, (dx, dy) in enumerate(digests):
        for name, mine, theirs in (("X", digests[0][0], dx), ("y", digests[0][1], dy)):
            if mine != theirs:
                return (
                    f"{name} differs between ranks (rank {rank} holds other data than rank 0); every rank of "
                    "comm must pass the same X and y to fit"
                )
    return None


def fit_failure(exc: FitRaised) -> BaseException:
    """The exception a failing unit raises on every rank: the fit's own, as scikit-learn raises it.

    With ``error_score="raise"`` (or an error ``error_score`` does not cover,
    such as a scorer the estimator cannot serve) scikit-learn re-raises the
    fit's exception: same type, same message.  hpcml does the same on every
    rank, and records where it came from (rank, host, the fit's traceback) so
    that the CLI prints it once.
    """
    original = exc.original
    origin = origin_of(exc)
    mark_origin(original, origin.rank if origin.rank is not None else 0, origin.host or HOST, exc.tb)
    mark_agreed(original)
    return original


def fit_failure_note(error_score: Any) -> str:
    """The CLI's line before a failing fit's error: why a fit error ends the run."""
    if error_score == "raise":
        return "a fit raised with error_score='raise'; the search stops (its traceback follows)"
    return (
        f"a unit raised an error that error_score={error_score!r} does not cover (scikit-learn raises it too); "
        "the search stops (its traceback follows)"
    )


def evaluate_units(
    problem: Problem,
    comm: MPI.Intracomm,
    *,
    on_fit_failure: Callable[[], None] | None = None,
    **options: Any,
) -> Evaluation:
    """Stage "evaluate", the same for the CLI and the API: :func:`hpcml.cv.engine.evaluate`.  Collective.

    Parameters
    ----------
    problem : Problem
        What to fit and score, identical on every rank.
    comm : mpi4py.MPI.Intracomm
        The ranks that share the work.
    on_fit_failure : callable, optional
        Called on every rank before a failing fit's exception is raised
        (the CLI closes its journal and prints :func:`fit_failure_note`).
    **options
        Passed to :func:`hpcml.cv.engine.evaluate` (``threads``, ``done``, ...).

    Returns
    -------
    Evaluation
        As :func:`hpcml.cv.engine.evaluate`.

    Raises
    ------
    Exception
        On every rank, the failing fit's own exception (:func:`fit_failure`).
    """
    try:
        return evaluate(problem, comm, **options)
    except FitRaised as exc:
        error = fit_failure(exc)
        if on_fit_failure is not None:
            on_fit_failure()
        raise error from None


def refit_best(
    estimator: Any,
    params: dict[str, Any],
    X: Any,
    y: Any,
    fit_params: dict[str, Any],
    comm: MPI.Intracomm,
    around: Callable[[Any], Any] | None = None,
) -> tuple[Any, float]:
    """Stage "refit", the same for the CLI and the API: the best candidate on all rows.  Collective.

    Rank 0 fits ``clone(estimator).set_params(**params)`` alone
    (:func:`hpcml.cv.engine.refit_alone`: ``comm="self"`` inside); if it
    raises, every rank raises its exception.  Every rank gets the fitted
    estimator (unseeded estimators would otherwise differ between ranks),
    holding the user's ``comm`` values again, as scikit-learn's refit would.
    The CLI refits on ``MPI.COMM_SELF`` from rank 0.

    Parameters
    ----------
    estimator : estimator
        The user's (unfitted) estimator.
    params : dict
        The best candidate's parameters.
    X, y, fit_params
        All rows, and the parameters of ``fit``.
    comm : mpi4py.MPI.Intracomm
        The ranks that share the result.
    around : callable, optional
        Rank 0: a context manager factory entered around the fit (callbacks).

    Returns
    -------
    estimator, seconds : estimator, float
        The fitted estimator and the time its ``fit`` took, on every rank.
    """
    fitted, error = None, None
    if comm.Get_rank() == 0:
        try:
            fitted = refit_alone(estimator, params, X, y, fit_params, around=around)
        except Exception as exc:  # noqa: BLE001 - raised on every rank just below
            error = exc
    raise_if_any(comm, error)
    best, seconds = broadcast(fitted, comm, what="the refit best_estimator_")
    restore_comm_params(best, comm_params(user_estimator(estimator, params)))
    return best, seconds

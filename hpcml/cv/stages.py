"""Stage helpers of a CLI search run: stop checkpoints between stages and a bounded plan.

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
from typing import Any

from mpi4py import MPI

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

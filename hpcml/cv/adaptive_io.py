"""Inputs and outputs of the adaptive CLI runs (``strategy = "halving"`` and ``"async_halving"``).

Both runs (:mod:`hpcml.cv.halving_run`, :mod:`hpcml.cv.asha_run`) load the
data and the scorer the same way and write the same files on rank 0:
``cv_results.json/.csv`` (``cv_results.partial.json`` when stopped),
``best.json`` (with the best row's ``iter`` and ``n_resources``), the refit
model and ``run.json`` (with scikit-learn's halving attributes).  What differs
(the run's own ``run.json`` keys, how the best row is chosen, the summary
printed) stays in the run modules.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from hpcml._compat import routed_score_params
from hpcml.cv import output
from hpcml.cv.config import SearchConfig
from hpcml.cv.engine import comm_params, refit_alone, restore_comm_params, user_estimator
from hpcml.errors import RunError
from hpcml.runreport import common_sections

if TYPE_CHECKING:  # pragma: no cover
    from hpcml.threads import RankLayout

#: scikit-learn's halving attributes copied into ``run.json``
HALVING_ATTRIBUTES = (
    "n_resources_",
    "n_candidates_",
    "n_remaining_candidates_",
    "n_iterations_",
    "n_possible_iterations_",
    "n_required_iterations_",
)


@dataclass
class Inputs:
    """The data of a run (identical on every rank) and how it was loaded."""

    X: Any
    y: Any
    groups: Any
    fit_params: dict[str, Any]
    data_info: dict[str, Any]
    fingerprint: str
    load_seconds: float


def load_inputs(config: SearchConfig, comm: MPI.Intracomm) -> Inputs:
    """Load the config's data on every rank (collective), with ``sample_weight`` as a fit parameter.

    Parameters
    ----------
    config : SearchConfig
        The run's configuration.
    comm : MPI.Intracomm
        The run's communicator.

    Returns
    -------
    Inputs
        Arrays, fit parameters and the data's description for ``run.json``.
    """
    from hpcml.cv import runner as r

    t0 = time.perf_counter()
    arrays, data_info, fingerprint = r._load_data(config, comm)
    load_seconds = time.perf_counter() - t0
    weight = arrays.get("sample_weight")
    fit_params = {"sample_weight": weight} if weight is not None else {}
    return Inputs(arrays["X"], arrays["y"], arrays.get("groups"), fit_params, data_info, fingerprint, load_seconds)


def scoring(config: SearchConfig, comm: MPI.Intracomm, inputs: Inputs) -> tuple[Any, dict[str, Any]]:
    """The scorer and the score parameters routed to it (warnings from rank 0 only); collective.

    Returns
    -------
    scorer, score_params
        As :func:`hpcml.cv.runner._scorer` and :func:`hpcml._compat.routed_score_params` give them.
    """
    from hpcml.cv import runner as r

    scorer, _ = r._agree(comm, r._scorer, config)
    with warnings.catch_warnings():
        if comm.Get_rank() != 0:
            warnings.simplefilter("ignore")
        score_params = routed_score_params(
            config.models[0].estimator, config.scoring, config.error_score, inputs.fit_params.get("sample_weight")
        )
    return scorer, score_params


def static_info(
    config: SearchConfig,
    config_path: str,
    comm: MPI.Intracomm,
    inputs: Inputs,
    n_resumed: int,
    layout: RankLayout | None = None,
) -> dict[str, Any]:
    """The ``run.json`` entries known before the run: the shared head (:mod:`hpcml.runreport`), data, resumed units.

    Collective over ``comm`` when ``layout`` is given (every rank's layout is gathered to rank 0).
    """
    from hpcml.cv import runner as r

    data = {"path": config.data.path, "fingerprint": inputs.fingerprint, "load_seconds": inputs.load_seconds}
    layouts = comm.gather(layout.as_dict(), root=0) if layout is not None else None
    head = (
        common_sections("hpcml.cv", config_path, layouts)
        if layouts is not None
        else {"config": os.path.abspath(config_path), "n_ranks": comm.Get_size(), "versions": r._versions()}
    )
    return {**head, "config_hash": config.hash, "data": {**data, **inputs.data_info}, "n_resumed": n_resumed}


def write_stopped(folder: str, results: dict[str, Any] | None, info: dict[str, Any], started: float, line: str) -> None:
    """Rank 0, run stopped: the partial ``cv_results`` (if any), ``run.json``, and one line on stderr."""
    if results is not None:
        output.write_cv_results(folder, results, partial=True)
    info["wall_seconds"] = time.time() - started
    output.write_json(folder, output.RUN_JSON, info)
    print(line, file=sys.stderr)


@dataclass
class Best:
    """The best row of a finished adaptive run and what its refit needs."""

    model: str
    index: int
    estimator: Any
    refit: bool


def write_complete(
    folder: str,
    config: SearchConfig,
    search: Any,
    results: dict[str, Any],
    best: Best,
    inputs: Inputs,
    info: dict[str, Any],
    started: float,
) -> tuple[dict[str, Any], str | None]:
    """Rank 0, run finished: ``cv_results``, ``best.json``, the refit model (``best.refit``) and ``run.json``.

    Returns
    -------
    best_record, refit_error
        ``best.json``'s content and the refit's one-line error, if it failed
        (``run.json`` holds it too; the results are kept).
    """
    output.write_cv_results(folder, results)
    for key in HALVING_ATTRIBUTES:
        info[key] = getattr(search, key)
    i = best.index
    record = {
        "model": best.model,
        "best_params": results["params"][i],
        "best_score": float(results["mean_test_score"][i]),
        "best_index": i,
        "refit_metric": config.refit_metric,
        "iter": int(results["iter"][i]),
        "n_resources": int(results["n_resources"][i]),
    }
    output.write_json(folder, output.BEST_JSON, record)
    refit_error = None
    if best.refit:
        refit_error = refit_best(best.estimator, record["best_params"], inputs, folder, info)
    info["wall_seconds"] = time.time() - started
    output.write_json(folder, output.RUN_JSON, info)
    return record, refit_error


def refit_best(user: Any, params: dict[str, Any], inputs: Inputs, folder: str, info: dict[str, Any]) -> str | None:
    """Refit ``user`` with ``params`` on all rows (rank 0 alone) and write it; returns the error line, if any."""
    try:
        estimator, seconds = refit_alone(user, params, inputs.X, inputs.y, inputs.fit_params)
        restore_comm_params(estimator, comm_params(user_estimator(user, params)))
    except Exception as exc:  # noqa: BLE001 - one line, results kept
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        info["refit_error"] = error
        return error
    info["refit_seconds"] = seconds
    output.write_model(folder, estimator)
    return None


def report_problems(caught: list[Any], refit_error: str | None, best: dict[str, Any], folder: str) -> None:
    """Print the fit warnings (one line each) and raise the refit's failure, if any.

    Raises
    ------
    RunError
        The refit failed (the results are written).
    """
    for warning in caught:
        print(
            f"hpcml: warning: {str(warning.message).strip().splitlines()[0]} (tracebacks in journal.jsonl)",
            file=sys.stderr,
        )
    if refit_error is not None:
        raise RunError(
            f"refit of the best candidate ({best['best_params']}) failed: {refit_error}; cv_results are in {folder}/"
        )

"""One search run of ``python -m hpcml.cv``: config -> data -> plan -> units -> results.

Called on every rank by :mod:`hpcml.cv.__main__` after the thread limits are in
place.  Rank 0 owns the output folder, the journal and the progress report.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv

from hpcml import __version__
from hpcml._compat import (
    _check_multimetric_scoring,
    _MultimetricScorer,
    _warn_or_raise_about_fit_failures,
    routed_score_params,
)
from hpcml._faults import active as faults_active
from hpcml._faults import hook as fault_hook
from hpcml.cliargs import make_out_dir
from hpcml.comm import HOST, idle_barrier, raise_if_any
from hpcml.cv import output
from hpcml.cv.accrue import ResultColumns
from hpcml.cv.config import SearchConfig, load_config
from hpcml.cv.fitting import Problem
from hpcml.cv.folds import choose
from hpcml.cv.hierarchy import NodeResults
from hpcml.cv.journal import Journal, check_header, read_journal
from hpcml.cv.observer import RunObserver
from hpcml.cv.plan import UnitIndex, broadcast, compute_splits
from hpcml.cv.progress import Progress, best_so_far_score
from hpcml.cv.reduce import best_candidate, build_cv_results
from hpcml.cv.stages import (
    check_target,
    check_units,
    checkpoint,
    evaluate_units,
    fit_failure,  # noqa: F401 - the halving and ASHA runs raise a failing fit with r.fit_failure
    fit_failure_note,
    make_candidates,
    oversubscription,
    refit_best,
)
from hpcml.data.fingerprint import combined, fingerprints
from hpcml.errors import EXIT_INCOMPLETE, ConfigError, DataError, RunError, UsageError
from hpcml.runreport import common_sections
from hpcml.runreport import versions as _versions  # noqa: F401 - halving_run, asha_run, hpcml.__main__ use it
from hpcml.signals import StopFlag
from hpcml.startup import Startup, summarize
from hpcml.threads import RankLayout, describe_layouts, limit_loaded_pools
from hpcml.tomlconf import read_config_bytes

DEFAULT_OUT = "hpcml-out"
DEMO_OUT = "hpcml-demo"


@dataclass
class Options:
    """Command-line options of ``python -m hpcml.cv``."""

    config: str | None
    demo: bool
    out: str | None
    dry_run: bool
    quiet: bool
    resume: bool
    overwrite: bool
    grace: float
    time_limit: float | None
    stop: StopFlag | None = None
    startup: Startup | None = None  # hpcml.startup: marks config, data, plan


def _agree(comm: MPI.Intracomm, func: Any, *args: Any, root_only: bool = False) -> Any:
    """Run ``func`` (on rank 0 only if ``root_only``); every rank raises if any failed."""
    result, error = None, None
    if not root_only or comm.Get_rank() == 0:
        try:
            result = func(*args)
        except Exception as exc:  # noqa: BLE001 - agreed below
            error = exc
    raise_if_any(comm, error)
    return result


def _read_config(opts: Options, comm: MPI.Intracomm) -> tuple[SearchConfig, str]:
    """Rank 0 reads the file (or writes the demo); every rank parses the same bytes."""

    def read() -> tuple[str, bytes]:
        if opts.demo:
            from hpcml.cv.demo import write_demo

            path = write_demo(os.path.join(opts.out or DEMO_OUT, "demo"))
        else:
            assert opts.config is not None
            path = opts.config
        return path, read_config_bytes(path)

    path, data = broadcast(_agree(comm, read, root_only=True), comm)
    config = _agree(comm, load_config, data, path)
    return config, path


def _scorer(config: SearchConfig) -> tuple[Any, list[str] | None]:
    estimator = config.models[0].estimator
    if config.multimetric:
        scorers = _check_multimetric_scoring(estimator, config.scoring)
        return _MultimetricScorer(scorers=scorers, raise_exc=(config.error_score == "raise")), list(scorers)
    return check_scoring(estimator, config.scoring), None


def _load_data(config: SearchConfig, comm: MPI.Intracomm) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from hpcml.data.h5 import H5Dataset
    from hpcml.data.shared import load_arrays

    d = config.data
    dataset = H5Dataset(d.path, X=d.X, y=d.y, groups=d.groups, sample_weight=d.sample_weight)
    if faults_active():  # tests only: no extra collective on a normal run
        load_fault = fault_hook("load", comm.Get_rank())
        _agree(comm, load_fault if load_fault is not None else (lambda: None))
    arrays, info = load_arrays(dataset, comm, load=d.load)

    def check() -> None:
        y = arrays.get("y")
        if y is not None and y.dtype.kind == "f" and np.isnan(y).any():
            raise DataError(f"{d.path}: dataset '{d.y}' (y) holds {int(np.isnan(y).sum())} NaN values")

    _agree(comm, check, root_only=True)
    prints = _agree(comm, fingerprints, dict(arrays), comm)  # every byte, hashed by all ranks (resume)
    return arrays, info, prints


def _plan_hash(models: list[str], candidates: list[dict[str, Any]], splits: list[tuple[Any, Any]]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([[m, repr(sorted(c.items()))] for m, c in zip(models, candidates)]).encode())
    for train, test in splits:
        h.update(np.ascontiguousarray(train, dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.ascontiguousarray(test, dtype=np.int64).tobytes())
    return h.hexdigest()


def _prepare_out(folder: str, opts: Options, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Rank 0: check the output folder; returns the units already done (``--resume``)."""
    make_out_dir(folder)
    present = [name for name in output.OUTPUT_FILES if os.path.exists(os.path.join(folder, name))]
    if opts.overwrite:
        for name in present:
            os.unlink(os.path.join(folder, name))
        return {}
    if opts.resume:
        old_header, units, _ = read_journal(folder)
        if old_header is None and not units:
            return {}
        check_header(old_header, header, os.path.join(folder, "journal.jsonl"))
        return units
    if present:
        raise UsageError(
            f"{folder}: output folder already holds search results ({', '.join(present)}); "
            "use --resume to continue that search or --overwrite to replace it"
        )
    return {}


def _result_of(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("test_scores", "train_scores", "fit_time", "score_time", "n_test_samples", "fit_error")
    return {k: record[k] for k in keys if k in record}


def _dry_run(
    config: SearchConfig,
    candidates: list[Any],
    splits: list[Any],
    layouts: list[dict[str, Any]],
    info: dict[str, Any],
    folds: str,
    comm: MPI.Intracomm,
) -> None:
    n_ranks = comm.Get_size()
    hosts = sorted({lay["host"] for lay in layouts})
    # Nodes are COMM_TYPE_SHARED groups, not host names (emulated nodes share one name).
    n_nodes = len({lay["node"] for lay in layouts})
    print(f"hpcml.cv plan for {config.source} (dry run: nothing is written)")
    print(f"  data     {config.data.path} (X={config.data.X}, y={config.data.y}); loaded {info.get('method', '?')}")
    for model in config.models:
        n = sum(1 for m, _ in candidates if m == model.name)
        kind = f"random search, n_iter={model.n_iter}" if model.distributions is not None else "grid"
        print(f"  model    {model.name}: {model.label} ({kind}), {n} candidates")
    print(f"  cv       {config.cv_label}: {len(splits)} folds; {folds}")
    metrics = config.scoring if config.scoring is not None else "estimator's score"
    print(f"  scoring  {metrics} (refit metric: {config.refit_metric})")
    print(f"  units    {len(candidates)} candidates x {len(splits)} folds = {len(candidates) * len(splits)} units")
    print(f"  ranks    {n_ranks} on {n_nodes} node(s), host(s): {', '.join(hosts)}")
    print("  layout")
    for line in describe_layouts(layouts).splitlines():
        print("    " + line)


@dataclass
class Loaded:
    """Stage "load data": the arrays every rank holds and what identifies them."""

    arrays: dict[str, Any]
    info: dict[str, Any]
    prints: dict[str, Any]
    fingerprint: str
    seconds: float

    @property
    def fit_params(self) -> dict[str, Any]:
        """``sample_weight`` for every fit, when the data has one."""
        w = self.arrays.get("sample_weight")
        return {"sample_weight": w} if w is not None else {}


@dataclass
class Planned:
    """Stage "plan": candidates, splits and scorer, identical on every rank."""

    candidates: list[tuple[str, dict[str, Any]]]
    splits: list[tuple[Any, Any]]
    scorer: Any
    scoring_names: list[str] | None
    score_params: dict[str, Any]
    layouts: list[dict[str, Any]] | None


def run(opts: Options, layout: RankLayout, comm: MPI.Intracomm) -> int:
    """Run one search.  Collective over ``comm``; returns the exit status.

    The stages: read config, load data, plan, (dry run), open outputs, evaluate, finish.
    Between stages every rank learns whether rank 0 saw a stop signal.
    """
    started = time.time()
    stop = opts.stop if opts.stop is not None else StopFlag()
    if opts.stop is None:
        stop.install()
    limit_loaded_pools(layout)  # NumPy/SciPy are loaded now: enforce and record their pools
    startup = opts.startup if opts.startup is not None else Startup(count_files=False)
    config, config_path = _read_config(opts, comm)
    _agree(comm, check_target, config)
    checkpoint(stop, comm, "reading the config")
    startup.mark("config")
    if config.search.strategy == "halving":  # scikit-learn's successive halving, rung by rung
        from hpcml.cv.halving_run import run_halving

        return run_halving(opts, comm, config, config_path, started, layout)
    if config.search.strategy == "async_halving":  # ASHA: barrier-free, promotions decided as results arrive
        from hpcml.cv.asha_run import run_async_halving

        return run_async_halving(opts, comm, config, config_path, started, layout)
    loaded = _load_stage(config, comm)
    checkpoint(stop, comm, "loading the data")
    startup.mark("data")
    planned = _plan_stage(config, loaded, layout, comm, stop)
    if opts.dry_run:
        fold_plan = choose(
            config.fold_copies, loaded.arrays["X"], planned.splits, comm, n_candidates=len(planned.candidates)
        )
        if comm.Get_rank() == 0:
            _dry_run(
                config, planned.candidates, planned.splits, planned.layouts or [], loaded.info, fold_plan.reason, comm
            )
        return 0
    plan, header, done = _open_outputs(opts, config, loaded, planned, comm)
    host_of = comm.allgather(HOST)
    observer = _agree(comm, _open_observer, plan, header, done, host_of, opts, root_only=True)
    startup.mark("plan")
    startups = comm.gather(startup.as_dict(), root=0)
    evaluation = _evaluate_stage(opts, plan, done, observer, stop, started, comm)
    status, error = 0, None
    if observer is not None:
        try:
            static_info = _static_info(config, config_path, loaded, planned.layouts or [], host_of)
            static_info["startup"] = summarize(startups)
            status = _finish(opts, plan, evaluation, static_info, started, stop, len(done))
        except Exception as exc:  # noqa: BLE001 - agreed below
            error = exc
        finally:
            observer.close()
    idle_barrier(comm)
    raise_if_any(comm, error)
    return int(comm.bcast(status, root=0))


def _load_stage(config: SearchConfig, comm: MPI.Intracomm) -> Loaded:
    t0 = time.perf_counter()
    arrays, info, prints = _load_data(config, comm)
    return Loaded(arrays, info, prints, combined(prints), time.perf_counter() - t0)


def _plan_stage(
    config: SearchConfig, loaded: Loaded, layout: RankLayout, comm: MPI.Intracomm, stop: StopFlag
) -> Planned:
    """Candidates (bounded, drawn on rank 0), splits, scorer and score parameters; the layout report."""
    X, y, groups = loaded.arrays["X"], loaded.arrays["y"], loaded.arrays.get("groups")
    candidates = broadcast(_agree(comm, make_candidates, config, stop, root_only=True), comm)
    if not candidates:
        raise ConfigError(f"{config.source}: the search has no candidates")
    checkpoint(stop, comm, "drawing the candidates")
    classifier = any(is_classifier(m.estimator) for m in config.models)
    cv = _agree(comm, lambda: check_cv(config.cv, y, classifier=classifier))

    def split_error(exc: Exception) -> Exception:
        if isinstance(exc, ValueError) and config.data.groups is None and "groups" in str(exc):
            return ConfigError(f"{config.source}: [cv] {config.cv_label} needs groups: set [data] groups")
        return ConfigError(f"{config.source}: [cv] {exc}") if isinstance(exc, ValueError | TypeError) else exc

    splits = compute_splits(cv, X, y, groups, comm, convert=split_error, check_n_splits=True, split_everywhere=False)
    _agree(comm, check_units, config, len(candidates), len(splits))
    checkpoint(stop, comm, "computing the splits")
    scorer, scoring_names = _agree(comm, _scorer, config)
    with warnings.catch_warnings():
        if comm.Get_rank() != 0:  # scikit-learn's warning about scorers without sample_weight: once
            warnings.simplefilter("ignore")
        score_params = routed_score_params(
            config.models[0].estimator, config.scoring, config.error_score, loaded.fit_params.get("sample_weight")
        )
    layouts = comm.gather(layout.as_dict(), root=0)
    warning = oversubscription(layouts) if layouts is not None else None
    if warning is not None:
        print(f"hpcml: warning: {warning}", file=sys.stderr, flush=True)
    return Planned(candidates, splits, scorer, scoring_names, score_params, layouts)


def _open_outputs(
    opts: Options, config: SearchConfig, loaded: Loaded, planned: Planned, comm: MPI.Intracomm
) -> tuple[_Plan, dict[str, Any], dict[int, dict[str, Any]]]:
    """The output folder (checked, or resumed) and the problem every rank evaluates."""
    folder = opts.out or (DEMO_OUT if opts.demo else (config.out or DEFAULT_OUT))
    models = [m for m, _ in planned.candidates]
    params = [p for _, p in planned.candidates]
    header = {
        "hpcml_version": __version__,
        "config_hash": config.hash,
        "data_fingerprint": loaded.fingerprint,
        "data": loaded.prints,
        "plan_hash": _plan_hash(models, params, planned.splits),
        "n_candidates": len(planned.candidates),
        "n_splits": len(planned.splits),
        "created": time.time(),
    }
    index = UnitIndex(len(planned.candidates), len(planned.splits))
    done_records = broadcast(_agree(comm, _prepare_out, folder, opts, header, root_only=True), comm)
    done = {u: _result_of(r) for u, r in (done_records or {}).items() if u < len(index)}
    model_index = {m.name: i for i, m in enumerate(config.models)}
    problem = Problem(
        X=loaded.arrays["X"],
        y=loaded.arrays["y"],
        splits=planned.splits,
        estimators=[m.estimator for m in config.models],
        candidates=[(model_index[m], p) for m, p in planned.candidates],
        scorer=planned.scorer,
        fit_params=loaded.fit_params,
        score_params=planned.score_params,
        error_score=config.error_score,
        return_train_score=config.return_train_score,
    )
    return _Plan(config, folder, index, params, models, planned.scoring_names, problem), header, done


def _evaluate_stage(
    opts: Options,
    plan: _Plan,
    done: dict[int, dict[str, Any]],
    observer: RunObserver | None,
    stop: StopFlag,
    started: float,
    comm: MPI.Intracomm,
) -> Any:
    """Evaluate every unit not done yet; rank 0's observer journals them and watches the signals."""
    if observer is not None:
        observer.watch(stop, opts.grace, len(plan.index), comm)
        plan.observer = observer

    def fit_failed() -> None:
        if observer is not None:
            observer.close()
            observer.journal.close()
        if comm.Get_rank() == 0:
            print(f"hpcml: {fit_failure_note(plan.config.error_score)}", file=sys.stderr, flush=True)

    try:
        return evaluate_units(
            plan.problem,
            comm,
            on_fit_failure=fit_failed,
            done=done if comm.Get_rank() == 0 else None,
            on_results=NodeResults(observer.on_parts) if observer is not None else None,
            should_stop=(lambda: bool(stop)) if comm.Get_rank() == 0 else None,
            deadline=_deadline(opts, started),
            fold_copies=plan.config.fold_copies,
            prefix_cache_bytes=plan.config.prefix_cache_bytes,
            dispatch=plan.config.dispatch,
        )
    finally:
        if observer is not None:
            observer.units_over()
            observer.journal.close()
            observer.progress.finish()


def _static_info(
    config: SearchConfig, config_path: str, loaded: Loaded, layouts: list[dict[str, Any]], host_of: list[str]
) -> dict[str, Any]:
    """The parts of run.json known before the results (the shared head: hpcml.runreport)."""
    return {
        **common_sections("hpcml.cv", config_path, layouts),
        "config_hash": config.hash,
        "data": {
            "path": config.data.path,
            "fingerprint": loaded.fingerprint,
            "load_seconds": loaded.seconds,
            **loaded.info,
        },
        "hosts": sorted(set(host_of)),
    }


def _deadline(opts: Options, started: float) -> float | None:
    """When to stop starting units: ``--time-limit``, else Slurm's job end time less a margin.

    The margin is the grace period, but at most a tenth of the job's remaining
    time, so that a short job is not stopped at once.
    """
    if opts.time_limit is not None:
        return started + opts.time_limit
    end = os.environ.get("SLURM_JOB_END_TIME", "")
    if end.isdigit():
        remaining = max(0.0, float(end) - started)
        return float(end) - min(max(opts.grace, 0.0), 0.1 * remaining)
    return None


@dataclass
class _Plan:
    """What rank 0 needs to write the results of a run."""

    config: SearchConfig
    folder: str
    index: UnitIndex
    params: list[dict[str, Any]]
    models: list[str]
    scoring_names: list[str] | None
    problem: Problem
    observer: RunObserver | None = None


def _open_observer(
    plan: _Plan, header: dict[str, Any], done: dict[int, dict[str, Any]], host_of: list[str], opts: Options
) -> RunObserver:
    """Rank 0: the journal (new or resumed), the progress line and the observer feeding both."""
    index, models, params, metric = plan.index, plan.models, plan.params, plan.config.refit_metric
    journal = Journal(plan.folder, header)
    progress = Progress(len(index), len(done), index.n_splits, metric, enabled=not opts.quiet)
    for unit, result in done.items():
        cand = unit // index.n_splits
        progress.seed(cand, best_so_far_score(result, metric), models[cand])

    def describe(unit: int) -> tuple[int, int, str, dict[str, Any]]:
        cand, split = index.pair(unit)
        return cand, split, models[cand], params[cand]

    columns = ResultColumns(params, index.n_splits, models, plan.scoring_names, plan.config.return_train_score)
    return RunObserver(
        journal, progress, describe, dict(done), lambda fin: _write_partial(plan, fin), host_of, metric, columns
    )


def _finish(
    opts: Options,
    plan: _Plan,
    evaluation: Any,
    static_info: dict[str, Any],
    started: float,
    stop: StopFlag,
    n_resumed: int,
) -> int:
    """Rank 0: write cv_results, best.json, the refit model and run.json; return the exit status."""
    config, folder, index = plan.config, plan.folder, plan.index
    out = evaluation.out
    complete = evaluation.complete
    folded = plan.observer.columns.finish() if complete and plan.observer and plan.observer.columns else None
    if folded is None:  # a stopped run, or values the folded columns do not know (hpcml.cv.accrue)
        results = build_cv_results(
            plan.params, index.n_splits, out, config.return_train_score, plan.models, plan.scoring_names
        )
    else:
        results = folded[0]
    run_info = _run_info(evaluation, static_info, len(index), n_resumed, started, stop)
    if not complete:
        output.write_cv_results(folder, results, partial=True)
        output.write_json(folder, output.RUN_JSON, run_info)
        print(
            f"hpcml: stopped ({run_info['stopped_by']}): {run_info['units']['done']}/{len(index)} units finished; "
            f"partial results in {os.path.join(folder, output.PARTIAL_JSON)}; continue with --resume",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    failure = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _warn_or_raise_about_fit_failures(out, config.error_score)
        except ValueError as exc:
            failure = exc
    n_failed = sum(1 for item in out if item["fit_error"] is not None)
    run_info["failed_fits"] = n_failed
    run_info["cv_results_folded"] = folded is not None
    if folded is None:
        output.write_cv_results(folder, results)
    else:
        output.write_cv_texts(folder, folded[1], folded[2])
    best = best_candidate(results, config.refit_metric)
    output.write_json(folder, output.BEST_JSON, best)
    refit_error = _refit_best(plan, best, run_info) if config.refit and failure is None else None
    run_info["wall_seconds"] = time.time() - started
    output.write_json(folder, output.RUN_JSON, run_info)
    for warning in caught:
        print(
            f"hpcml: warning: {str(warning.message).strip().splitlines()[0]} (tracebacks in journal.jsonl)",
            file=sys.stderr,
        )
    if refit_error is not None:
        raise RunError(
            f"refit of the best candidate ({best['model']} {best['best_params']}) failed: {refit_error}; "
            f"cv_results are in {folder}/"
        )
    if failure is not None:
        raise UsageError(
            f"all {len(out)} fits failed; the model is probably misconfigured (tracebacks in "
            f'{os.path.join(folder, "journal.jsonl")}; set [run] error_score = "raise" to stop at the first)'
        )
    if not opts.quiet:
        print(output.summary_table(results, config.refit_metric))
        print(
            f"\nbest: {best['model']} {best['best_params']} mean {config.refit_metric} = {best['best_score']:.5f}"
            f"\n{len(index)} units on {run_info['n_ranks']} ranks in {run_info['wall_seconds']:.1f} s "
            f"(load balance {run_info['load_balance'] or 0:.2f}); results in {folder}/"
        )
    return 0


def _run_info(
    evaluation: Any, static_info: dict[str, Any], total: int, n_resumed: int, started: float, stop: StopFlag
) -> dict[str, Any]:
    """run.json's content for a finished or stopped evaluation."""
    out, report = evaluation.out, evaluation.report
    return {
        "status": "complete" if evaluation.complete else "incomplete",
        **static_info,
        "units": {
            "total": total,
            "resumed": n_resumed,
            "ran": len(report.results) if report.results else 0,
            "done": sum(item is not None for item in out),
        },
        "wall_seconds": time.time() - started,
        "schedule_seconds": report.wall,
        "busy_seconds": report.busy,
        "load_balance": (
            float(np.mean(report.busy) / max(report.busy)) if report.busy and max(report.busy) > 0 else None
        ),
        "messages": report.messages,
        "inline_dispatch": report.inline_dispatch,
        "dispatch": report.dispatch,
        "stopped_by": (f"signal {stop.signum}" if stop else ("time limit" if report.stopped else None)),
        "fold_cache": evaluation.fold_cache,
        "folds": evaluation.folds,
    }


def _refit_best(plan: _Plan, best: dict[str, Any], run_info: dict[str, Any]) -> str | None:
    """Rank 0: refit the best candidate on all rows and write best_model.joblib; the error line, if any."""
    if plan.observer is not None:
        plan.observer.refit_starts()
    template, cand_params = plan.problem.candidates[best["best_index"]]
    # The model as configured (the engine gave problem.estimators comm="self").
    user = plan.config.models[template].estimator
    problem = plan.problem
    try:  # the API's refit, on rank 0 alone; best_model.joblib holds the configured comm values
        estimator, seconds = refit_best(user, cand_params, problem.X, problem.y, problem.fit_params, MPI.COMM_SELF)
    except Exception as exc:  # noqa: BLE001 - reported as one line by the caller, results kept
        text = str(exc).strip()
        refit_error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        run_info["refit_error"] = refit_error
        return refit_error
    run_info["refit_seconds"] = seconds
    output.write_model(plan.folder, estimator)
    return None


def _write_partial(plan: _Plan, finished: dict[int, dict[str, Any]]) -> None:
    out = [finished.get(unit) for unit in range(len(plan.index))]
    cfg = plan.config
    results = build_cv_results(
        plan.params, plan.index.n_splits, out, cfg.return_train_score, plan.models, plan.scoring_names
    )
    output.write_cv_results(plan.folder, results, partial=True)

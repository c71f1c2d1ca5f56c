"""The ``strategy = "halving"`` run of ``python -m hpcml.cv``: scikit-learn's successive halving.

scikit-learn's own ``HalvingGridSearchCV`` / ``HalvingRandomSearchCV`` object
decides everything (rungs, resources, subsampled splits, survivors): its
``_run_search`` loop runs on every rank and calls :func:`_Rungs.evaluate` once
per rung.  Each rung is one :func:`hpcml.cv.engine.evaluate` over all ranks, so
its (candidate, split) units go through hpcml's scheduler, with the journal,
signals, time limit and progress of :mod:`hpcml.cv.runner`.

Units are numbered across rungs: rung ``r``'s unit ``u`` is journal unit
``offset_r + u`` where ``offset_r`` counts the units of the rungs before it.
Rung sizes and candidates follow from the results, which the journal holds
exactly, so ``--resume`` replays the finished rungs from the journal, finishes
the interrupted rung and goes on: the same search as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI
from sklearn.base import is_classifier
from sklearn.model_selection import check_cv

from hpcml import __version__
from hpcml._compat import SubsampleMetaSplitter, _warn_or_raise_about_fit_failures, run_search
from hpcml.comm import HOST, idle_barrier, raise_if_any
from hpcml.cv import adaptive_io, output
from hpcml.cv.async_search import check_subsamples
from hpcml.cv.config import SearchConfig
from hpcml.cv.engine import evaluate
from hpcml.cv.fitting import FitRaised, Problem
from hpcml.cv.journal import Journal, _clean
from hpcml.cv.plan import broadcast, compute_splits
from hpcml.cv.progress import Progress, best_so_far_score
from hpcml.cv.reduce import placeholder
from hpcml.errors import EXIT_INCOMPLETE, ConfigError, UsageError
from hpcml.signals import StopFlag
from hpcml.threads import RankLayout


class _Stopped(Exception):
    """A rung was stopped (signal or time limit): the run ends with status 3."""


class RungProgress(Progress):
    """:class:`~hpcml.cv.progress.Progress` of one rung, its line prefixed with the rung."""

    def __init__(self, rung: int, n_rungs: int, n_candidates: int, n_resources: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix = f"rung {rung + 1}/{n_rungs} ({n_candidates} candidates, {n_resources} resources)"

    def line(self, now: float | None = None) -> str:
        """The progress line, with the rung."""
        return super().line(now).replace("hpcml: ", f"hpcml: {self.prefix} | ", 1)


def make_search(config: SearchConfig) -> Any:
    """scikit-learn's halving search object for the config's one model (never fitted)."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV

    from hpcml._compat import InvalidParameterError

    model, s = config.models[0], config.search
    common = {
        **s.sklearn_params(),
        "cv": config.cv,
        "scoring": config.scoring,
        "refit": False,
        "error_score": config.error_score,
        "return_train_score": config.return_train_score,
        "random_state": s.random_state,
    }
    if model.distributions is not None:
        search = HalvingRandomSearchCV(model.estimator, model.distributions, n_candidates=s.n_candidates, **common)
    else:
        search = HalvingGridSearchCV(model.estimator, model.grid, **common)
    try:
        search._validate_params()
    except InvalidParameterError as exc:
        raise ConfigError(f"{config.source}: [search] {exc}") from None
    return search


def prepare_search(search: Any, config: SearchConfig, X: Any, y: Any, groups: Any) -> None:
    """scikit-learn's checks before the first rung (``_check_input_parameters``), as config errors."""
    classifier = is_classifier(search.estimator)
    search._checked_cv_orig = check_cv(config.cv, y, classifier=classifier)
    search._n_samples_orig = len(X)
    split_params = {} if groups is None else {"groups": groups}
    search.n_splits_ = search._checked_cv_orig.get_n_splits(X, y, **split_params)
    try:
        search._check_input_parameters(X=X, y=y, split_params=split_params)
    except ValueError as exc:
        raise ConfigError(f"{config.source}: [search] {exc}") from None
    if search.resource == "n_samples" and search.max_resources_ > X.shape[0]:  # scikit-learn fails in a rung
        raise ConfigError(
            f"{config.source}: [search] max_resources = {search.max_resources_} is greater than the number "
            f"of samples ({X.shape[0]}): a rung cannot subsample more rows than the data has"
        )


def rung_schedule(search: Any, candidates: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(candidates, resources) of every rung, from scikit-learn's loop run on dummy scores.

    The numbers of candidates and resources per rung do not depend on the
    scores, only on the counts; this runs ``_run_search`` on a copy of the
    search with every score 0 and records what each call was given.
    """
    import copy

    dry = copy.copy(search)
    dry._generate_candidate_params = lambda: list(candidates)
    seen: list[tuple[int, int]] = []
    rows: dict[str, list[Any]] = {"iter": [], "mean_test_score": [], "params": []}

    def fake(candidate_params: Any, cv: Any = None, more_results: Any = None, **_: Any) -> dict[str, Any]:
        params = list(candidate_params)
        seen.append((len(params), int(more_results["n_resources"][0])))
        rows["iter"] += more_results["iter"]
        rows["mean_test_score"] += [0.0] * len(params)
        rows["params"] += params
        return {k: np.asarray(v, dtype=object if k == "params" else None) for k, v in rows.items()}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_search(dry, fake, _callback_root(dry, None, None))
    return seen


def check_first_rung(
    search: Any, config: SearchConfig, schedule: list[tuple[int, int]], X: Any, y: Any, groups: Any, comm: MPI.Intracomm
) -> None:
    """Refuse first-rung subsamples no fit can use (scikit-learn #20775) before any fit; collective.

    The rung's splits are scikit-learn's (its subsampling splitter over the
    configured one); the check is ASHA's :func:`~hpcml.cv.async_search.check_subsamples`.

    Raises
    ------
    ConfigError
        On every rank, naming ``min_resources_``, the split and the problem.
    """
    if search.resource != "n_samples" or not schedule:
        return
    n_resources = schedule[0][1]
    cv = SubsampleMetaSplitter(
        base_cv=search._checked_cv_orig,
        fraction=n_resources / search._n_samples_orig,
        subsample_test=True,
        random_state=search.random_state,
    )

    def convert(exc: Exception) -> Exception:
        if not isinstance(exc, ValueError):
            return exc
        return ConfigError(
            f"{config.source}: [search] min_resources_={n_resources} is too small: subsampling the splits "
            f"failed ({exc}); raise min_resources"
        )

    split_params = {} if groups is None else {"groups": groups}
    splits = compute_splits(cv, X, y, None, comm, convert=convert, split_everywhere=False, split_params=split_params)
    refused = lambda exc: ConfigError(f"{config.source}: [search] {exc}")  # noqa: E731
    check_subsamples(splits, X, y, n_resources, search.estimator, comm, convert=refused)


def _callback_root(search: Any, X: Any, y: Any) -> Any:
    """scikit-learn's root callback context of ``search`` (its halving loop needs one), or None before 1.9."""
    if not hasattr(search, "_init_callback_context"):
        return None
    root = search._init_callback_context(max_subtasks=1)
    root.call_on_fit_task_begin(estimator=search, X=X, y=y)
    return root


@dataclass
class _Rungs:
    """State of a halving run shared by the rung callbacks (rank 0 holds the journal and progress)."""

    config: SearchConfig
    search: Any
    comm: MPI.Intracomm
    X: Any
    y: Any
    groups: Any
    split_params: dict[str, Any]
    problem_kw: dict[str, Any]
    done: dict[int, dict[str, Any]]
    schedule: list[tuple[int, int]]
    journal: Journal | None
    stop: StopFlag
    deadline: float | None
    quiet: bool
    host_of: list[str]
    offset: int = 0
    all_params: list[dict[str, Any]] = field(default_factory=list)
    all_out: list[dict[str, Any]] = field(default_factory=list)
    more: dict[str, list[Any]] = field(default_factory=lambda: {"iter": [], "n_resources": []})
    finished: dict[int, dict[str, Any]] = field(default_factory=dict)
    reports: list[Any] = field(default_factory=list)
    caught: list[Any] = field(default_factory=list)
    failure: Exception | None = None
    current: tuple[list[dict[str, Any]], dict[str, Any], int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    journaled_params: dict[int, Any] = field(default_factory=dict)
    inputs: Any = None  # adaptive_io.Inputs (rank 0's refit)

    def evaluate(self, candidate_params: Any, cv: Any = None, more_results: Any = None, **_: Any) -> dict[str, Any]:
        """One rung: ``evaluate_candidates`` of scikit-learn's search, over every rank."""
        params = list(candidate_params)
        rung, n_resources = int(more_results["iter"][0]), int(more_results["n_resources"][0])
        splits = compute_splits(
            cv, self.X, self.y, None, self.comm, split_everywhere=False, split_params=self.split_params
        )
        n_units = len(params) * len(splits)
        problem = Problem(X=self.X, y=self.y, splits=splits, candidates=[(0, p) for p in params], **self.problem_kw)
        done = {u - self.offset: r for u, r in self.done.items() if self.offset <= u < self.offset + n_units}
        error = None
        if self.comm.Get_rank() == 0:
            try:
                self._check_journal(done, params, len(splits))
            except ConfigError as exc:
                error = exc
        raise_if_any(self.comm, error)  # one error line, every rank exits 2
        self.current = (params, more_results, n_units)
        progress = None
        if self.comm.Get_rank() == 0:
            progress = RungProgress(
                rung,
                len(self.schedule),
                len(params),
                n_resources,
                total=n_units,
                done=len(done),
                n_splits=len(splits),
                metric="score",
                enabled=not self.quiet,
            )
            for unit, result in done.items():
                self.finished[self.offset + unit] = result
                progress.seed(unit // len(splits), best_so_far_score(result, "score"), f"rung {rung + 1}")
        on_results = self._recorder(rung, params, len(splits), progress)
        try:
            evaluation = evaluate(
                problem,
                self.comm,
                done=done if self.comm.Get_rank() == 0 else None,
                on_results=on_results if progress is not None else None,
                should_stop=(lambda: bool(self.stop)) if progress is not None else None,
                deadline=self.deadline,
                fold_copies=self.config.fold_copies,
            )
        finally:
            if self.journal is not None:
                self.journal.sync()
        self.reports.append(evaluation.report)
        if progress is not None:
            progress.finish()
        if not evaluation.complete:
            raise _Stopped()
        return self._add_rung(params, more_results, evaluation.out, n_units)

    def _check_journal(self, done: dict[int, dict[str, Any]], params: list[dict[str, Any]], n_splits: int) -> None:
        """Refuse to resume when a journaled unit of this rung holds other parameters than the rung's candidate."""
        for unit in done:
            journaled = self.journaled_params.get(self.offset + unit)
            if journaled is not None and journaled != json.loads(json.dumps(_clean(params[unit // n_splits]))):
                raise ConfigError(
                    f"{self.config.source}: cannot resume: journal unit {self.offset + unit} holds {journaled}, "
                    f"but this rung's candidate is {params[unit // n_splits]} (use --overwrite to start over)"
                )

    def _add_rung(self, params: list[dict[str, Any]], more: dict[str, Any], out: Any, n_units: int) -> dict[str, Any]:
        if self.comm.Get_rank() == 0:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    _warn_or_raise_about_fit_failures(out, self.config.error_score)
                except ValueError as exc:
                    self.failure = self.failure or exc
            self.caught.extend(caught)
        self.offset += n_units
        self.current = None
        self.all_params.extend(params)
        self.all_out.extend(out)
        for key in self.more:
            self.more[key].extend(more[key])
        return self.results()

    def _recorder(self, rung: int, params: list[dict[str, Any]], n_splits: int, progress: Any) -> Any:
        offset = self.offset

        def on_results(source: int, items: list[tuple[int, Any, float]]) -> None:
            records, seen = [], []
            with self.lock:
                for unit, result, seconds in items:
                    cand, split = divmod(unit, n_splits)
                    self.finished[offset + unit] = result
                    records.append(
                        {
                            "unit": offset + unit,
                            "rung": rung,
                            "cand": cand,
                            "split": split,
                            "model": self.config.models[0].name,
                            "params": params[cand],
                            **result,
                            "rank": source,
                            "host": self.host_of[source],
                            "seconds": seconds,
                            "time": time.time(),
                        }
                    )
                    seen.append((cand, best_so_far_score(result, "score"), f"rung {rung + 1}"))
                assert self.journal is not None
                self.journal.append(records)
                progress.update(seen)

        return on_results

    def results(self, partial: bool = False) -> dict[str, Any]:
        """``cv_results_`` of the rungs so far (with the current rung's finished units if ``partial``)."""
        params, out, more = list(self.all_params), list(self.all_out), {k: list(v) for k, v in self.more.items()}
        if partial and self.current is not None:
            cur_params, cur_more, n_units = self.current
            empty = placeholder(None, self.config.return_train_score)
            out += [self.finished.get(self.offset + u) or empty for u in range(n_units)]
            params += cur_params
            for key in more:
                more[key] += cur_more[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.search._format_results(params, self.search.n_splits_, out, more)


def _journal_header(
    config: SearchConfig, fingerprint: Any, candidates: list[Any], splits: list[Any], schedule: list[tuple[int, int]]
) -> dict[str, Any]:
    """The journal's header of a halving run (what ``--resume`` must find unchanged)."""
    from hpcml.cv import runner as r

    model = config.models[0].name
    return {
        "hpcml_version": __version__,
        "config_hash": config.hash,
        "data_fingerprint": fingerprint,
        "plan_hash": r._plan_hash([model] * len(candidates), candidates, splits),
        "strategy": "halving",
        "n_candidates": len(candidates),
        "n_splits": len(splits),
        "rungs": schedule,
        "created": time.time(),
    }


def run_halving(
    opts: Any,
    comm: MPI.Intracomm,
    config: SearchConfig,
    config_path: str,
    started: float,
    rank_layout: RankLayout | None = None,
) -> int:
    """Run a ``strategy = "halving"`` search.  Collective over ``comm``; returns the exit status."""
    from hpcml.cv import runner as r

    rank = comm.Get_rank()
    folder = opts.out or config.out or r.DEFAULT_OUT
    inputs = adaptive_io.load_inputs(config, comm)
    X, y, groups = inputs.X, inputs.y, inputs.groups
    search = r._agree(comm, make_search, config)
    r._agree(comm, prepare_search, search, config, X, y, groups)
    candidates = broadcast(r._agree(comm, lambda: list(search._generate_candidate_params()), root_only=True), comm)
    search._generate_candidate_params = lambda: candidates  # rank 0's (an unseeded sampler differs)
    split_params = {} if groups is None else {"groups": groups}
    base_splits = compute_splits(
        search._checked_cv_orig,
        X,
        y,
        None,
        comm,
        split_everywhere=False,
        split_params=split_params,
        convert=lambda exc: ConfigError(f"{config.source}: [cv] {exc}") if isinstance(exc, ValueError) else exc,
    )
    schedule = r._agree(comm, rung_schedule, search, candidates)
    check_first_rung(search, config, schedule, X, y, groups, comm)
    scorer, score_params = adaptive_io.scoring(config, comm, inputs)
    if opts.dry_run:
        if rank == 0:
            _print_plan(config, search, candidates, base_splits, schedule)
        return 0
    header = _journal_header(config, inputs.fingerprint, candidates, base_splits, schedule)
    done_records = broadcast(r._agree(comm, r._prepare_out, folder, opts, header, root_only=True), comm)
    done = {u: r._result_of(rec) for u, rec in (done_records or {}).items()}
    journal = r._agree(comm, Journal, folder, header, root_only=True) if rank == 0 else None
    if rank != 0:
        r._agree(comm, lambda: None, root_only=True)
    stop = opts.stop if opts.stop is not None else StopFlag()
    if opts.stop is None:
        stop.install()
    problem_kw = {
        "estimators": [config.models[0].estimator],
        "scorer": scorer,
        "fit_params": inputs.fit_params,
        "score_params": score_params,
        "error_score": config.error_score,
        "return_train_score": config.return_train_score,
    }
    rungs = _Rungs(
        config,
        search,
        comm,
        X,
        y,
        groups,
        split_params,
        problem_kw,
        done,
        schedule,
        journal,
        stop,
        r._deadline(opts, started),
        opts.quiet,
        comm.allgather(HOST),
    )
    rungs.journaled_params = {u: rec.get("params") for u, rec in (done_records or {}).items()}
    rungs.inputs = inputs
    static = adaptive_io.static_info(config, config_path, comm, inputs, len(done), rank_layout)
    return _search_and_finish(opts, rungs, folder, static, started)


def _search_and_finish(opts: Any, rungs: _Rungs, folder: str, static: dict[str, Any], started: float) -> int:
    """Run the rungs (grace timer on rank 0 as in the runner), then write the outputs on rank 0."""
    from hpcml.cv import runner as r

    comm, rank = rungs.comm, rungs.comm.Get_rank()
    timers: list[threading.Timer] = []

    def abandon() -> None:
        with rungs.lock:
            if rungs.journal is not None:
                rungs.journal.sync()
            output.write_cv_results(folder, _with_model(rungs, rungs.results(partial=True)), partial=True)
        print(
            f"hpcml: stopped by signal {rungs.stop.signum}: units still running after the {opts.grace:g} s "
            "grace period are lost; continue with --resume",
            file=sys.stderr,
            flush=True,
        )
        comm.Abort(EXIT_INCOMPLETE)

    if rank == 0:

        def start_grace_timer() -> None:
            timer = threading.Timer(max(opts.grace, 0.0), abandon)
            timer.daemon = True
            timers.append(timer)
            timer.start()

        rungs.stop.on_first(start_grace_timer)
    stopped = False
    try:
        run_search(rungs.search, rungs.evaluate, _callback_root(rungs.search, rungs.X, rungs.y))
    except _Stopped:
        stopped = True
    except FitRaised as exc:
        raise r.fit_failure(exc) from None
    finally:
        for timer in timers:
            timer.cancel()
        if rungs.journal is not None:
            rungs.journal.close()
    status, error = (EXIT_INCOMPLETE if stopped else 0), None
    if rank == 0:
        try:
            _write_outputs(opts, rungs, folder, static, started, stopped)
        except Exception as exc:  # noqa: BLE001 - agreed below
            error = exc
    idle_barrier(comm)
    raise_if_any(comm, error)
    return status


def _with_model(rungs: _Rungs, results: dict[str, Any]) -> dict[str, Any]:
    n = len(results["params"])
    return {"model": [rungs.config.models[0].name] * n, **results}


def _run_info(rungs: _Rungs, static: dict[str, Any], started: float, stopped: bool) -> dict[str, Any]:
    search = rungs.search
    busy = [float(sum(rep.busy[i] for rep in rungs.reports)) for i in range(static["n_ranks"])]
    return {
        "status": "incomplete" if stopped else "complete",
        "strategy": "halving",
        **static,
        "rungs": [{"n_candidates": c, "n_resources": n} for c, n in rungs.schedule],
        "units": {"total": sum(c for c, _ in rungs.schedule) * search.n_splits_, "done": len(rungs.finished)},
        "min_resources_": search.min_resources_,
        "max_resources_": search.max_resources_,
        "wall_seconds": time.time() - started,
        "schedule_seconds": [rep.wall for rep in rungs.reports],
        "busy_seconds": busy,
        "load_balance": float(np.mean(busy) / max(busy)) if busy and max(busy) > 0 else None,
        "stopped_by": (f"signal {rungs.stop.signum}" if rungs.stop else ("time limit" if stopped else None)),
    }


def _write_outputs(
    opts: Any, rungs: _Rungs, folder: str, static: dict[str, Any], started: float, stopped: bool
) -> None:
    """Rank 0: cv_results (partial when stopped), best.json, the refit model, run.json."""
    config, search = rungs.config, rungs.search
    info = _run_info(rungs, static, started, stopped)
    if stopped:
        line = (
            f"hpcml: stopped ({info['stopped_by']}) in rung {len(rungs.reports)}/{len(rungs.schedule)}: "
            f"{info['units']['done']}/{info['units']['total']} units finished; "
            f"partial results in {os.path.join(folder, output.PARTIAL_JSON)}; continue with --resume"
        )
        adaptive_io.write_stopped(folder, _with_model(rungs, rungs.results(partial=True)), info, started, line)
        return
    results = _with_model(rungs, rungs.results())
    best_index = int(search._select_best_index(False, "score", results))
    model = config.models[0]
    chosen = adaptive_io.Best(model.name, best_index, model.estimator, config.refit and rungs.failure is None)
    best, refit_error = adaptive_io.write_complete(folder, config, search, results, chosen, rungs.inputs, info, started)
    adaptive_io.report_problems(rungs.caught, refit_error, best, folder)
    if rungs.failure is not None:
        raise UsageError(
            f"all fits of a rung failed; the model is probably misconfigured (tracebacks in "
            f'{os.path.join(folder, "journal.jsonl")}; set [run] error_score = "raise" to stop at the first)'
        )
    if not opts.quiet:
        _summary(rungs, folder, results, best, info)


def _summary(rungs: _Rungs, folder: str, results: dict[str, Any], best: dict[str, Any], info: dict[str, Any]) -> None:
    last = [i for i, it in enumerate(results["iter"]) if it == best["iter"]]
    rows = {k: [results[k][i] for i in last] for k in ("model", "params", "mean_test_score", "std_test_score")}
    ordered = sorted(rows["mean_test_score"], reverse=True)
    rows["rank_test_score"] = [1 + ordered.index(m) for m in rows["mean_test_score"]]
    print(f"last rung ({best['n_resources']} {rungs.config.search.resource}):")
    print(output.summary_table(rows, "score"))
    print(
        f"\nbest (last rung, {best['n_resources']} resources): {best['model']} {best['best_params']} "
        f"mean score = {best['best_score']:.5f}\n{info['units']['total']} units in {len(rungs.schedule)} rungs "
        f"on {info['n_ranks']} ranks in {info['wall_seconds']:.1f} s; results in {folder}/"
    )


def _print_plan(config: SearchConfig, search: Any, candidates: list[Any], splits: list[Any], schedule: Any) -> None:
    s = config.search
    print(f"hpcml.cv plan for {config.source}")
    print(f"  data     {config.data.path} (X={config.data.X}, y={config.data.y})")
    print(f"  model    {config.models[0].name}: {config.models[0].label}, {len(candidates)} candidates")
    print(
        f"  search   halving: factor={s.factor:g}, resource={s.resource}, min_resources_={search.min_resources_}, "
        f"max_resources_={search.max_resources_}, aggressive_elimination={s.aggressive_elimination}"
    )
    print(f"  cv       {config.cv_label}: {len(splits)} folds")
    for i, (n_cand, n_res) in enumerate(schedule):
        print(
            f"  rung {i + 1}   {n_cand} candidates x {len(splits)} folds = {n_cand * len(splits)} units, "
            f"{n_res} {s.resource}"
        )
    print(f"  units    {sum(c for c, _ in schedule) * len(splits)} in {len(schedule)} rungs")

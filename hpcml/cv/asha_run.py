"""The ``strategy = "async_halving"`` run of ``python -m hpcml.cv``: ASHA from a TOML config.

Candidates are every ``[[model]]``'s (a grid's all, ``n_candidates`` draws of
distributions), compared on the same rungs and splits.  The run goes through
:func:`hpcml.cv.async_search.run_asha`; rank 0 journals every finished unit
and every ASHA event (decisions with the scores they saw, finished jobs) in
``journal.jsonl``, in the order they happened, so ``--resume`` replays the
decisions exactly (:meth:`hpcml.cv.asha.AshaRule.replay`), runs the missing
units of the jobs decided before the stop first and goes on.  The progress
line shows the rung occupancy.  See docs/adaptive.md.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from typing import Any

from mpi4py import MPI
from sklearn.model_selection import ParameterGrid, ParameterSampler

from hpcml import __version__
from hpcml.comm import HOST, idle_barrier, raise_if_any
from hpcml.cv import adaptive_io, output
from hpcml.cv.asha import AshaLayout, AshaRule
from hpcml.cv.async_search import AshaRun, AsyncHalvingSearchCV, format_occupancy, run_asha
from hpcml.cv.config import SearchConfig
from hpcml.cv.fitting import FitRaised
from hpcml.cv.journal import JOURNAL, Journal
from hpcml.cv.plan import broadcast
from hpcml.cv.progress import Progress, best_so_far_score
from hpcml.errors import EXIT_INCOMPLETE, ConfigError, UsageError
from hpcml.signals import StopFlag
from hpcml.threads import RankLayout


class AshaProgress(Progress):
    """Progress of an ASHA run: units done and the rung occupancy (finished+running jobs per rung)."""

    rule: AshaRule | None = None

    def line(self, now: float | None = None) -> str:
        """The progress line, with the rungs."""
        now = time.monotonic() if now is None else now
        rungs = "" if self.rule is None else f" | {format_occupancy(self.rule)}"
        best = "" if self.best is None else f" | best score {self.best[0]:.4f} ({self.best[1]})"
        elapsed = time.strftime("%H:%M:%S", time.gmtime(now - self.start))
        return f"hpcml: {self.done} units{rungs} | elapsed {elapsed}{best}"


def make_search(config: SearchConfig) -> AsyncHalvingSearchCV:
    """The (never fitted) search object whose checks, rungs and formatting the run uses."""
    from hpcml._compat import InvalidParameterError

    s = config.search
    search = AsyncHalvingSearchCV(
        config.models[0].estimator,
        {},
        n_candidates=1,
        factor=s.factor,
        resource=s.resource,
        min_resources=s.min_resources,
        max_resources=s.max_resources,
        cv=config.cv,
        scoring=config.scoring,
        error_score=config.error_score,
        return_train_score=config.return_train_score,
        random_state=s.random_state,
    )
    try:
        search._validate_params()
    except InvalidParameterError as exc:
        raise ConfigError(f"{config.source}: [search] {exc}") from None
    if s.aggressive_elimination:
        raise ConfigError(
            f'{config.source}: [search] aggressive_elimination: only for strategy = "halving" '
            "(ASHA's rungs are scikit-learn's halving iterations without it)"
        )
    if s.resource == "n_samples" and s.random_state is None:
        raise ConfigError(
            f"{config.source}: [search] strategy: async_halving on n_samples subsamples each rung at random: "
            "set [run] random_state (an integer) so that a --resume draws the same rows"
        )
    return search


def check_search(search: AsyncHalvingSearchCV, config: SearchConfig, X: Any, y: Any, groups: Any) -> None:
    """scikit-learn's halving checks as config errors (every rank)."""
    try:
        search.check_inputs(X, y, {} if groups is None else {"groups": groups})
    except ValueError as exc:
        raise ConfigError(f"{config.source}: [search] {exc}") from None
    if search.resource == "n_samples" and search.max_resources_ > X.shape[0]:  # scikit-learn fails in a rung
        raise ConfigError(
            f"{config.source}: [search] max_resources = {search.max_resources_} is greater than the number "
            f"of samples ({X.shape[0]}): a rung cannot subsample more rows than the data has"
        )


def make_candidates(config: SearchConfig, search: AsyncHalvingSearchCV) -> list[tuple[int, dict[str, Any]]]:
    """Rank 0: (model index, params) of every model; distributions give ``n_candidates`` draws."""
    out: list[tuple[int, dict[str, Any]]] = []
    n = config.search.n_candidates
    if n == "exhaust":
        n = search.max_resources_ // search.min_resources_
    for i, model in enumerate(config.models):
        if model.distributions is not None:
            params = list(ParameterSampler(model.distributions, n, random_state=model.random_state))
        else:
            params = list(ParameterGrid(model.grid))
        out.extend((i, p) for p in params)
    return out


def read_events(folder: str) -> list[dict[str, Any]]:
    """The ASHA events of a journal, in order (a line torn by a kill is skipped)."""
    path = os.path.join(folder, JOURNAL)
    events = []
    if not os.path.exists(path):
        return events
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("type") == "asha":
                events.append({k: v for k, v in record.items() if k != "type"})
    return events


class _Recorder:
    """Rank 0: journals units and ASHA events in order and feeds the progress line."""

    def __init__(
        self,
        journal: Journal,
        progress: AshaProgress,
        layout: AshaLayout,
        names: list[str],
        params: list[dict[str, Any]],
        host_of: list[str],
        n_logged: int,
    ) -> None:
        self.journal, self.progress, self.layout = journal, progress, layout
        self.names, self.params, self.host_of = names, params, host_of
        self.n_logged = n_logged  # events of the rule's log already in the journal
        self.lock = threading.Lock()
        self.finished: dict[int, dict[str, Any]] = {}

    def flush_events(self, rule: AshaRule) -> None:
        """Journal the rule's events not journaled yet (decisions precede the units they produced)."""
        new = rule.log[self.n_logged :]
        if new:
            self.journal.note([{"type": "asha", **event} for event in new])
            self.n_logged = len(rule.log)

    def on_results(self, rule: AshaRule, source: int, items: list[tuple[int, Any, float]]) -> None:
        """Journal finished units (after the decisions that made them), then the progress line."""
        with self.lock:
            self.flush_events(rule)
            records, seen = [], []
            for unit, result, seconds in items:
                cand, rung, split = self.layout.triple(unit)
                self.finished[unit] = result
                records.append(
                    {
                        "unit": unit,
                        "cand": cand,
                        "rung": rung,
                        "split": split,
                        "model": self.names[cand],
                        "params": self.params[cand * self.layout.n_rungs + rung],
                        **result,
                        "rank": source,
                        "host": self.host_of[source],
                        "seconds": seconds,
                        "time": time.time(),
                    }
                )
                seen.append((cand * self.layout.n_rungs + rung, best_so_far_score(result, "score"), f"rung {rung}"))
            self.journal.append(records)
            self.progress.update(seen)


def run_async_halving(
    opts: Any,
    comm: MPI.Intracomm,
    config: SearchConfig,
    config_path: str,
    started: float,
    rank_layout: RankLayout | None = None,
) -> int:
    """Run a ``strategy = "async_halving"`` search.  Collective over ``comm``; returns the exit status."""
    from hpcml.cv import runner as r

    rank = comm.Get_rank()
    folder = opts.out or config.out or r.DEFAULT_OUT
    inputs = adaptive_io.load_inputs(config, comm)
    X, y, groups = inputs.X, inputs.y, inputs.groups
    search = r._agree(comm, make_search, config)
    r._agree(comm, check_search, search, config, X, y, groups)
    candidates = broadcast(r._agree(comm, make_candidates, config, search, root_only=True), comm)
    if not candidates:
        raise ConfigError(f"{config.source}: the search has no candidates")
    scorer, score_params = adaptive_io.scoring(config, comm, inputs)
    search._scorers = scorer
    scoring = {"scorer": scorer, "fit_params": inputs.fit_params, "score_params": score_params}
    estimators = [m.estimator for m in config.models]

    def plan() -> tuple[Any, AshaLayout, Any]:
        try:
            return search.plan(X, y, groups, candidates, estimators, scoring, comm)
        except ValueError as exc:  # raised on every rank (the splits are rank 0's, broadcast)
            raise ConfigError(f"{config.source}: [search] {exc}") from None

    problem, layout, split_of = r._agree(comm, plan)
    if opts.dry_run:
        if rank == 0:
            _print_plan(config, search, candidates, layout)
        return 0
    names = [config.models[t].name for t, _ in candidates]
    header = {
        "hpcml_version": __version__,
        "config_hash": config.hash,
        "data_fingerprint": inputs.fingerprint,
        "plan_hash": r._plan_hash(names, [p for _, p in candidates], problem.splits),
        "strategy": "async_halving",
        "n_candidates": len(candidates),
        "n_splits": layout.n_splits,
        "rungs": search._rung_resources,
        "created": time.time(),
    }
    done_records = broadcast(r._agree(comm, r._prepare_out, folder, opts, header, root_only=True), comm)
    done = {u: r._result_of(rec) for u, rec in (done_records or {}).items()}
    run = _run(opts, comm, config, search, problem, layout, split_of, names, done, folder, header, started)
    static = adaptive_io.static_info(config, config_path, comm, inputs, len(done), rank_layout)
    status, error = (0 if run.complete else EXIT_INCOMPLETE), None
    if rank == 0:
        try:
            _write_outputs(opts, config, search, problem, layout, run, names, folder, static, started, inputs)
        except Exception as exc:  # noqa: BLE001 - agreed below
            error = exc
    idle_barrier(comm)
    raise_if_any(comm, error)
    return status


def _run(
    opts: Any,
    comm: MPI.Intracomm,
    config: SearchConfig,
    search: AsyncHalvingSearchCV,
    problem: Any,
    layout: AshaLayout,
    split_of: Any,
    names: list[str],
    done: dict[int, Any],
    folder: str,
    header: dict[str, Any],
    started: float,
) -> AshaRun:
    """The units (rank 0: journal, progress, replayed decisions, signals with a grace period)."""
    from hpcml.cv import runner as r

    rank = comm.Get_rank()
    host_of = comm.allgather(HOST)
    stop = opts.stop if opts.stop is not None else StopFlag()
    if opts.stop is None:
        stop.install()
    rule, recorder, timers = None, None, []
    if rank == 0:
        events = read_events(folder) if opts.resume else []
        rule = r._agree(
            comm, AshaRule.replay, layout.n_candidates, layout.n_rungs, search.factor, events, root_only=True
        )
        journal = r._agree(comm, Journal, folder, header, root_only=True)
        progress = AshaProgress(0, len(done), layout.n_splits, "score", enabled=not opts.quiet)
        progress.rule = rule
        recorder = _Recorder(
            journal, progress, layout, names, [p for _, p in problem.candidates], host_of, len(rule.log)
        )
        recorder.finished.update(done)

        def abandon() -> None:
            with recorder.lock:
                journal.sync()
            print(
                f"hpcml: stopped by signal {stop.signum}: units still running after the {opts.grace:g} s "
                "grace period are lost; continue with --resume",
                file=sys.stderr,
                flush=True,
            )
            comm.Abort(EXIT_INCOMPLETE)

        def start_grace_timer() -> None:
            timer = threading.Timer(max(opts.grace, 0.0), abandon)
            timer.daemon = True
            timers.append(timer)
            timer.start()

        stop.on_first(start_grace_timer)
    else:
        r._agree(comm, lambda: None, root_only=True)
        r._agree(comm, lambda: None, root_only=True)
    try:
        return run_asha(
            problem,
            layout,
            rule,
            comm,
            split_of=split_of,
            done=done if rank == 0 else None,
            on_results=(lambda source, items: recorder.on_results(rule, source, items)) if rank == 0 else None,
            should_stop=(lambda: bool(stop)) if rank == 0 else None,
            deadline=r._deadline(opts, started),
            prefix_cache_bytes=config.prefix_cache_bytes,
        )
    except FitRaised as exc:
        raise r.fit_failure(exc) from None
    finally:
        for timer in timers:
            timer.cancel()
        if recorder is not None:
            recorder.flush_events(rule)
            recorder.journal.close()
            recorder.progress.finish()


def _with_model(results: dict[str, Any], layout: AshaLayout, names: list[str]) -> dict[str, Any]:
    return {"model": [names[c] for c in results["candidate"]], **results}


def _write_outputs(
    opts: Any,
    config: SearchConfig,
    search: AsyncHalvingSearchCV,
    problem: Any,
    layout: AshaLayout,
    run: AshaRun,
    names: list[str],
    folder: str,
    static: dict[str, Any],
    started: float,
    inputs: adaptive_io.Inputs,
) -> None:
    """Rank 0: cv_results (partial when stopped), best.json, the refit model, run.json."""
    report = run.report
    size = static["n_ranks"]
    info: dict[str, Any] = {
        "status": "complete" if run.complete else "incomplete",
        "strategy": "async_halving",
        **static,
        "rungs": search._rung_resources,
        "units": {"ran": len(report.results), "done": len(run.results)},
        "decisions": sum(1 for e in run.log if e["event"] == "decide"),
        "min_resources_": search.min_resources_,
        "max_resources_": search.max_resources_,
        "schedule_seconds": report.wall,
        "busy_seconds": report.busy,
        "idle_fraction": 1 - sum(report.busy) / (size * report.wall) if report.wall else None,
    }
    failure = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            search._store_results(run.results, layout, problem)
        except ValueError as exc:  # no job finished, or every fit failed
            failure = exc
    results = getattr(search, "cv_results_", None)
    if not run.complete:
        line = (
            f"hpcml: stopped: {len(run.results)} units finished; partial results in "
            f"{os.path.join(folder, output.PARTIAL_JSON)}; continue with --resume"
        )
        partial = _with_model(results, layout, names) if results is not None else None
        adaptive_io.write_stopped(folder, partial, info, started, line)
        return
    if failure is not None or results is None:
        raise UsageError(
            f"all fits failed; the model is probably misconfigured (tracebacks in "
            f'{os.path.join(folder, "journal.jsonl")}; set [run] error_score = "raise" to stop at the first)'
        )
    results = _with_model(results, layout, names)
    best_index = int(search.best_index_)
    cand = results["candidate"][best_index]
    template = problem.candidates[cand * layout.n_rungs][0]
    chosen = adaptive_io.Best(names[cand], best_index, config.models[template].estimator, bool(config.refit))
    best, refit_error = adaptive_io.write_complete(folder, config, search, results, chosen, inputs, info, started)
    adaptive_io.report_problems(list(caught), refit_error, best, folder)
    if not opts.quiet:
        print(output.summary_table(results, "score"))
        print(
            f"\nbest (rung {best['iter']}, {best['n_resources']} resources): {best['model']} {best['best_params']} "
            f"mean score = {best['best_score']:.5f}\n{len(run.results)} units, {info['decisions']} decisions on "
            f"{size} ranks in {info['wall_seconds']:.1f} s (idle {info['idle_fraction'] or 0:.1%}); "
            f"results in {folder}/"
        )


def _print_plan(config: SearchConfig, search: AsyncHalvingSearchCV, candidates: list[Any], layout: AshaLayout) -> None:
    s = config.search
    print(f"hpcml.cv plan for {config.source}")
    print(f"  data     {config.data.path} (X={config.data.X}, y={config.data.y})")
    for i, model in enumerate(config.models):
        print(f"  model    {model.name}: {model.label}, {sum(1 for t, _ in candidates if t == i)} candidates")
    print(
        f"  search   async_halving (ASHA): factor={s.factor:g}, resource={s.resource}, "
        f"min_resources_={search.min_resources_}, max_resources_={search.max_resources_}"
    )
    print(f"  cv       {config.cv_label}: {layout.n_splits} folds")
    for k, n_res in enumerate(search._rung_resources):
        print(f"  rung {k}   {n_res} {s.resource}; promotes the top 1/{s.factor:g} of its finished jobs")
    print(f"  units    {len(candidates) * layout.n_splits} at rung 0, the rest as candidates are promoted")

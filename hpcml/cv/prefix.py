"""Pipeline prefixes fitted once per (prefix parameters, fold).  Pure: no MPI here.

In a grid over a :class:`~sklearn.pipeline.Pipeline`, scikit-learn refits every
step for every candidate.  hpcml knows the plan up front: candidates whose
leading steps get the same parameters share those steps' fit on a fold.  For a
candidate, *level* ``j`` is the prefix ``steps[0..j]``; its key is the template,
the candidate's parameters of steps ``0..j`` (and pipeline-level parameters).
A :class:`PrefixCache` entry of ``(split, key)`` holds what scikit-learn's
``Pipeline.fit`` / ``predict`` would compute for that prefix on that fold:

* the fitted transformers of steps ``0..j`` (shared, never refitted),
* ``fit``: the output of ``fit_transform`` that the next step is fitted on,
* ``test``: the test rows transformed by the fitted steps (``predict`` path),
* ``train``: the train rows transformed likewise (train scores only).

A unit then fits only the steps after the deepest cached level, scores a
pipeline whose cached steps are ``"passthrough"`` on the cached transformed
rows, and (``return_estimator``) is handed the full fitted pipeline with
private copies of the shared transformers.  The numbers are scikit-learn's:
the same calls on the same arrays in the same order.

Which pipelines take part (:func:`plan_prefixes`): a plain ``Pipeline`` with
``memory=None``, ``verbose=False``, no ``transform_input``, at least two steps
and a final estimator.  A leading step is cached only while every step up to it
is deterministic given its parameters: a ``random_state`` parameter (its own or
nested) left at ``None``, or the scikit-learn tag ``non_deterministic``, stops
the caching at that step (a user marks a random transformer without
``random_state`` by that tag).  Anything unusual at run time (a step that fails
validation, metadata routed in ways that differ between candidates) falls back
to scikit-learn's own ``Pipeline.fit`` for that unit.

Memory: the cache holds at most ``budget`` bytes per rank (default
:data:`DEFAULT_BUDGET_BYTES`, ``[run] prefix_cache_bytes``,
``HPCML_PREFIX_CACHE_BYTES``; 0 turns reuse off).  Eviction is least recently
used; an entry larger than the whole budget is used by its unit and dropped.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

#: Default memory budget of a rank's prefix cache, in bytes.
DEFAULT_BUDGET_BYTES = 1 << 30

#: Environment variable overriding the budget (bytes; 0 turns prefix reuse off).
ENV_PREFIX_CACHE = "HPCML_PREFIX_CACHE_BYTES"

#: Affinity uses the shallowest level that gives at least this many groups per rank.
GROUPS_PER_RANK = 2


def budget_bytes(requested: int | None = None) -> int:
    """The cache budget: ``requested``, else ``HPCML_PREFIX_CACHE_BYTES``, else the default."""
    if requested is not None:
        return max(0, int(requested))
    env = os.environ.get(ENV_PREFIX_CACHE, "").strip()
    if env:
        try:
            return max(0, int(float(env)))
        except ValueError:
            raise ValueError(f"{ENV_PREFIX_CACHE} must be a number of bytes, got {env!r}") from None
    return DEFAULT_BUDGET_BYTES


@dataclass
class PrefixPlan:
    """Per candidate, the keys of its cacheable levels (empty tuple: not cached)."""

    keys: list[tuple[Hashable, ...]]
    affinity_level: int = 0
    #: the keys as planned (``keys`` may drop a candidate at run time; the schedule's groups must not change)
    planned: list[tuple[Hashable, ...]] | None = None

    def __post_init__(self) -> None:
        if self.planned is None:
            self.planned = list(self.keys)

    def any(self) -> bool:
        """Whether any candidate takes part."""
        return any(self.keys)

    def affinity(self, cand: int, split: int) -> Hashable | None:
        """Units with the same value should run on the same rank (None: no preference)."""
        assert self.planned is not None
        keys = self.planned[cand]
        if not keys:
            return None
        return (split, keys[min(self.affinity_level, len(keys) - 1)])


def _canon(value: Any) -> Hashable:
    """A hashable stand-in for a parameter value (equal values, equal stand-ins)."""
    import joblib

    try:
        hash(value)
        if isinstance(value, str | int | float | bool | type(None) | tuple):
            return (type(value).__name__, value)
    except TypeError:
        pass
    return joblib.hash(value)


def _eligible(pipe: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return (
        type(pipe) is Pipeline
        and pipe.memory is None
        and not pipe.verbose
        and getattr(pipe, "transform_input", None) is None
        and len(pipe.steps) >= 2
        and pipe.steps[-1][1] not in (None, "passthrough")
    )


def _deterministic(step: Any) -> bool:
    """Whether a step gives the same fit for the same parameters and data."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return True
    try:
        if step.__sklearn_tags__().non_deterministic:
            return False
        params = step.get_params(deep=True)
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: do not cache it
        return False
    return not any(v is None for k, v in params.items() if k == "random_state" or k.endswith("__random_state"))


def candidate_keys(template: int, estimator: Any, params: dict[str, Any]) -> tuple[Hashable, ...]:
    """The keys of the cacheable prefix levels of one candidate (``()`` when none)."""
    try:
        pipe = clone(estimator).set_params(**clone(params, safe=False))
    except Exception:  # noqa: BLE001 - the unit reports it, as scikit-learn would
        return ()
    if not _eligible(pipe) or "steps" in params:
        return ()
    names = [name for name, _ in pipe.steps]
    depth = 0
    while depth < len(names) - 1 and _deterministic(pipe.steps[depth][1]):
        depth += 1
    per_step: list[list[tuple[str, Hashable]]] = [[] for _ in names]
    shared: list[tuple[str, Hashable]] = []
    try:
        for key in sorted(params):
            head = key.split("__", 1)[0]
            entry = (key, _canon(params[key]))
            (per_step[names.index(head)] if head in names else shared).append(entry)
    except Exception:  # noqa: BLE001 - a value joblib cannot hash: no reuse for it
        return ()
    keys: list[Hashable] = []
    for level in range(depth):
        keys.append((template, tuple(shared), tuple(tuple(per_step[i]) for i in range(level + 1))))
    return tuple(keys)


def plan_prefixes(
    estimators: list[Any], candidates: list[tuple[int, dict[str, Any]]], n_splits: int, n_ranks: int
) -> PrefixPlan:
    """Group the candidates by prefix; pick the affinity level for ``n_ranks`` ranks.

    Affinity keeps the units of one (fold, prefix) on one rank.  The shallowest
    level is used when its (fold, prefix) groups number at least
    :data:`GROUPS_PER_RANK` per rank, so that every shared step is fitted once
    per fold; otherwise a deeper one, trading repeated fits of the first steps
    (at most once per rank and fold) for load balance.
    """
    keys = [candidate_keys(t, estimators[t], p) for t, p in candidates]
    # A level no other candidate shares is never reused: such candidates fit it (and what follows) whole.
    counts: dict[Hashable, int] = {}
    for k in keys:
        for key in k:
            counts[key] = counts.get(key, 0) + 1
    keys = [tuple(itertools.takewhile(lambda key: counts[key] > 1, k)) for k in keys]
    depth = max((len(k) for k in keys), default=0)
    level = 0
    for level in range(depth):
        groups = {k[min(level, len(k) - 1)] for k in keys if k}
        if len(groups) * n_splits >= GROUPS_PER_RANK * n_ranks or level == depth - 1:
            break
    return PrefixPlan(keys=keys, affinity_level=level)


def nbytes(obj: Any) -> int:
    """Bytes held by an array, a sparse matrix or a DataFrame (0 when unknown)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if hasattr(obj, "indptr") and isinstance(getattr(obj, "data", None), np.ndarray):
        return obj.data.nbytes + obj.indices.nbytes + obj.indptr.nbytes
    memory_usage = getattr(obj, "memory_usage", None)
    if callable(memory_usage):
        try:
            usage = memory_usage(deep=True)
            return int(usage.sum() if hasattr(usage, "sum") else usage)
        except Exception:  # noqa: BLE001
            return 0
    return 0


@dataclass
class Level:
    """One cached prefix on one fold."""

    fitted: list[Any]
    fit: Any
    test: Any = None
    train: Any = None
    test_error: bool = False
    train_error: bool = False
    size: int = 0


@dataclass
class PrefixCache:
    """A rank's cache of fitted prefixes, bounded by ``budget`` bytes (least recently used goes first)."""

    budget: int
    plan: PrefixPlan
    entries: OrderedDict[Hashable, Level] = field(default_factory=OrderedDict)
    bytes: int = 0
    peak_bytes: int = 0
    fits: int = 0
    avoided: int = 0
    evictions: int = 0

    def get(self, key: Hashable) -> Level | None:
        """The entry of ``key``, marked as recently used."""
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: Level) -> None:
        """Store ``entry``, evicting the least recently used ones to stay within the budget."""
        from hpcml.cv.fitting import _freeze

        for part in (entry.fit, entry.test, entry.train):
            _freeze(part)
        entry.size = sum(nbytes(part) for part in (entry.fit, entry.test, entry.train))
        if entry.size > self.budget:
            return
        while self.entries and self.bytes + entry.size > self.budget:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.size
            self.evictions += 1
        self.entries[key] = entry
        self.bytes += entry.size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def clear(self) -> None:
        """Drop every entry."""
        self.entries.clear()
        self.bytes = 0

    def counters(self) -> dict[str, int]:
        """The counters of this rank."""
        return {
            "fits": self.fits,
            "avoided": self.avoided,
            "evictions": self.evictions,
            "peak_bytes": self.peak_bytes,
        }


def _build(
    step: Any, name: str, prev: Level, pipe: Any, params: dict[str, Any], y: Any, train_scores: bool
) -> tuple[Level, float, float]:
    """Fit ``step`` on ``prev.fit`` and transform the test (and train) rows: one new level.

    Returns the level, the seconds spent fitting and the seconds spent transforming.
    """
    from hpcml._compat import _fit_transform_one

    if step is None or (isinstance(step, str) and step == "passthrough"):
        return Level([*prev.fitted, step], prev.fit, prev.test, prev.train, prev.test_error, prev.train_error), 0.0, 0.0
    start = time.time()
    routed = pipe._check_method_params(method="fit", props=params)[name]
    fit, fitted = _fit_transform_one(step, prev.fit, y, None, message_clsname="Pipeline", params=routed)
    if _aliases(fit, prev.fit) or _aliases(fit, prev.train):
        # the step hands back (or works in) its input: later in-place edits would reach the rows
        # the next step is fitted on, in another order than scikit-learn's; fit this unit whole
        raise NotShareable(name)
    fit_seconds = time.time() - start
    level = Level([*prev.fitted, fitted], fit)
    start = time.time()
    level.test, level.test_error = _transform(fitted, prev.test, prev.test_error)
    if train_scores:
        level.train, level.train_error = _transform(fitted, prev.train, prev.train_error)
    return level, fit_seconds, time.time() - start


class NotShareable(Exception):
    """A step's output aliases its input: the unit runs scikit-learn's whole ``Pipeline.fit`` instead."""


def _aliases(a: Any, b: Any) -> bool:
    """Whether ``a`` is ``b`` or an array sharing memory with it."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.shares_memory(a, b))
    return False


def _transform(fitted: Any, X: Any, failed: bool) -> tuple[Any, bool]:
    """``fitted.transform(X)``; a failure is left for the scorer to meet again (as in ``predict``)."""
    if failed:
        return None, True
    try:
        return fitted.transform(X), False
    except Exception:  # noqa: BLE001 - reproduced by scoring the whole pipeline
        return None, True


def _routed_names(pipe: Any, params: dict[str, Any], n_levels: int) -> Hashable:
    """Which metadata reach the cached steps (part of the cache key)."""
    routed = pipe._check_method_params(method="fit", props=params)
    names = []
    for name, _ in pipe.steps[:n_levels]:
        step = routed[name] if name in routed else {}
        names.append(tuple((m, tuple(sorted(step[m]))) for m in ("fit", "fit_transform", "transform") if m in step))
    return tuple(names)


def fit_prefixed(
    cache: PrefixCache,
    pipe: Any,
    cand: int,
    split: int,
    cached: dict[str, Any],
    fit_params: dict[str, Any],
    train_scores: bool,
) -> tuple[Level, float, float]:
    """Fit ``pipe`` (this unit's clone) reusing cached levels; its cached steps become ``"passthrough"``.

    Returns
    -------
    level, fit_seconds, transform_seconds
        The deepest level (its ``test``/``train`` rows feed the final estimator's
        scoring), the seconds this unit spent fitting (prefix steps it built and
        the final step) and transforming rows through the steps it built.
    """
    keys = cache.plan.keys[cand]
    pipe._validate_params()
    pipe.steps = list(pipe.steps)
    pipe._validate_steps()
    y = cached["y_train"]
    routing = _routed_names(pipe, fit_params, len(keys))
    from hpcml.cv.fitting import unit_rows

    X_train = unit_rows(cached, "X_train", False)
    level = Level([], X_train, unit_rows(cached, "X_test", False), X_train)
    start_level = 0
    for depth in range(len(keys) - 1, -1, -1):
        hit = cache.get((split, routing, keys[depth]))
        if hit is not None and (hit.train is not None or hit.train_error or not train_scores):
            level, start_level = hit, depth + 1
            cache.avoided += depth + 1
            break
    fit_seconds = transform_seconds = 0.0
    for depth in range(start_level, len(pipe.steps) - 1):
        name, step = pipe.steps[depth]
        level, fit_s, transform_s = _build(step, name, level, pipe, fit_params, y, train_scores)
        fit_seconds += fit_s
        transform_seconds += transform_s
        if depth < len(keys):
            cache.fits += not (step is None or (isinstance(step, str) and step == "passthrough"))
            cache.put((split, routing, keys[depth]), level)
    pipe.steps = [(name, "passthrough") for name, _ in pipe.steps[:-1]] + [pipe.steps[-1]]
    name, final = pipe.steps[-1]
    final_params = pipe._check_method_params(method="fit", props=fit_params)[name]["fit"]
    start = time.time()
    try:
        final.fit(level.fit, y, **final_params)
    finally:
        fit_seconds += time.time() - start
    return level, fit_seconds, transform_seconds


def restore_steps(pipe: Any, level: Level, private: bool) -> Any:
    """Give ``pipe`` its fitted prefix steps back (copies when ``private``: they are shared)."""
    fitted = [copy.deepcopy(step) if private else step for step in level.fitted]
    pipe.steps = [(name, fitted[i]) for i, (name, _) in enumerate(pipe.steps[:-1])] + [pipe.steps[-1]]
    return pipe


def format_tb() -> str:
    """The traceback text of the exception being handled."""
    return traceback.format_exc()


__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "ENV_PREFIX_CACHE",
    "Level",
    "PrefixCache",
    "PrefixPlan",
    "budget_bytes",
    "candidate_keys",
    "fit_prefixed",
    "plan_prefixes",
    "restore_steps",
]


def response_only(scorer: Any) -> bool:
    """Whether ``scorer`` only calls the estimator's response methods (``predict``, ``score``, ...).

    scikit-learn's own scorers (strings, ``make_scorer``, ``None``) do; for them a
    unit scores a pipeline whose cached steps are ``"passthrough"`` on the cached
    transformed rows.  A user's callable may inspect the steps, so it gets the
    whole fitted pipeline and the raw rows (the prefix fits are still reused).
    """
    from hpcml._compat import _BaseScorer, _MultimetricScorer, _PassthroughScorer

    if isinstance(scorer, _MultimetricScorer):
        return all(response_only(s) for s in scorer._scorers.values())
    return isinstance(scorer, _BaseScorer | _PassthroughScorer)


def run_prefixed(
    problem: Any, prefix: PrefixCache, pipe: Any, cand: int, split: int, cached: dict[str, Any]
) -> dict[str, Any] | None:
    """One unit of a prefix-cached pipeline candidate: scikit-learn's per-unit result dict.

    ``fit_time`` is what this unit spent fitting (the prefix steps it built for
    the cache and the steps after them); ``score_time`` is scoring plus the
    transform of the test (and train) rows through the steps it built.  A unit
    that reuses a cached prefix is not charged for it.  Returns None when a step
    hands back its input (:class:`NotShareable`): the caller then fits the unit whole.
    """
    from hpcml.cv.fitting import (
        FitRaised,
        _fit_failed,
        _fresh,
        _NeedsWritable,
        _read_only_error,
        _score_unit,
        _unit_params,
        unit_rows,
    )

    fit_params = _unit_params(cached["fit_params"])
    start = time.time()
    try:
        level, fit_time, transform_time = fit_prefixed(
            prefix, pipe, cand, split, cached, fit_params, problem.return_train_score
        )
    except NotShareable:
        prefix.plan.keys[cand] = ()  # this candidate fits whole from now on (fresh rows: the caller's path)
        return None
    except Exception as exc:
        if _read_only_error(exc):
            raise _NeedsWritable from exc
        tb = format_tb()
        if problem.error_score == "raise":
            raise FitRaised(exc, tb) from exc
        return _fit_failed(problem, cached, pipe, tb, time.time() - start)
    result: dict[str, Any] = {}
    # A transform failed, or the scorer may look at the pipeline's steps: score the whole pipeline on raw rows.
    whole = level.test_error or level.train_error or not response_only(problem.scorer)
    X_test, X_train = (cached["X_test"], cached["X_train"]) if whole else (level.test, level.train)
    if whole:
        restore_steps(pipe, level, private=False)
        X_test, X_train = unit_rows(cached, "X_test", False), unit_rows(cached, "X_train", False)
    start = time.time()
    try:
        result["test_scores"] = _score_unit(
            pipe,
            _fresh(X_test, False),
            _fresh(cached["y_test"], False),
            problem.scorer,
            _unit_params(cached["score_params_test"]),
            problem.error_score,
            False,
        )
        score_time = time.time() - start + transform_time
        if problem.return_train_score:
            result["train_scores"] = _score_unit(
                pipe,
                _fresh(X_train, False),
                _fresh(cached["y_train"], False),
                problem.scorer,
                _unit_params(cached["score_params_train"]),
                problem.error_score,
                False,
            )
    except _NeedsWritable:
        raise
    except Exception as exc:  # scoring raised with error_score="raise"
        raise FitRaised(exc, format_tb()) from exc
    result.update(fit_error=None, fit_time=fit_time, score_time=score_time, n_test_samples=cached["n_test_samples"])
    if problem.return_estimator:
        result["estimator"] = restore_steps(pipe, level, private=True)
    return result


def prefix_cache(problem: Any, n_ranks: int, requested: int | None = None) -> PrefixCache | None:
    """The rank's prefix cache for ``problem`` (None when no candidate takes part or the budget is 0)."""
    budget = budget_bytes(requested)
    if budget <= 0:
        return None
    plan = plan_prefixes(problem.estimators, problem.candidates, problem.n_splits, n_ranks)
    return PrefixCache(budget=budget, plan=plan) if plan.any() else None


def prefix_counters(cache: PrefixCache | None, comm: Any) -> dict[str, Any]:
    """The run's prefix counters, summed over ranks (peak bytes: the largest rank's).  Collective over ``comm``.

    ``fits``: prefix step fits done; ``avoided``: step fits skipped by reuse;
    ``evictions``: entries dropped for the budget; ``peak_bytes``: the largest
    cache of a rank; ``budget_bytes``: the budget per rank (0: off).
    """
    from mpi4py import MPI

    mine = np.array(
        [0, 0, 0, 0] if cache is None else [cache.fits, cache.avoided, cache.evictions, cache.peak_bytes],
        dtype=np.int64,
    )
    total = np.zeros_like(mine)
    peak = np.zeros(1, dtype=np.int64)
    if comm.Get_size() > 1:
        comm.Allreduce(mine, total, op=MPI.SUM)
        comm.Allreduce(mine[3:], peak, op=MPI.MAX)
    else:
        total, peak = mine, mine[3:]
    return {
        "enabled": cache is not None,
        "fits": int(total[0]),
        "avoided": int(total[1]),
        "evictions": int(total[2]),
        "peak_bytes": int(peak[0]),
        "budget_bytes": 0 if cache is None else cache.budget,
    }

"""Fit and score one work unit (candidate x split).  Pure: no MPI here.

Mirrors scikit-learn's ``_fit_and_score`` (same cloning, parameter setting,
``error_score`` semantics and scorer calls) but takes the train/test arrays from
a :class:`FoldCache`, so that consecutive units of one fold reuse the
materialised rows instead of copying them again.
"""

from __future__ import annotations

import contextlib
import copy
import numbers
import re
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from hpcml._compat import _check_method_params, _MultimetricScorer, _safe_indexing, _safe_split, _score
from hpcml.cv.callbacks import RECORDS_KEY
from hpcml.cv.cow import CowSource, LazyRows, cowable, materialize
from hpcml.cv.cow import available as cow_available


@dataclass
class Problem:
    """Everything a rank needs to run units: data, splits, candidates, scoring.

    Identical on every rank (the arrays may be node-shared, read-only).
    """

    X: Any
    y: Any
    splits: list[tuple[Any, Any]]
    estimators: list[Any]
    candidates: list[tuple[int, dict[str, Any]]]
    scorer: Any
    fit_params: dict[str, Any]
    score_params: dict[str, Any]
    error_score: Any = float("nan")
    return_train_score: bool = False
    return_estimator: bool = False
    verbose: int = 0
    #: ``cv_results_`` order of the candidates' parameters, for verbose messages (None: cross_validate)
    show_params: bool = True
    #: ``[CV k/n]`` progress in verbose messages (None: as ``show_params``; validation_curve shows params only)
    show_progress: bool | None = None
    #: scikit-learn callbacks of the search (:class:`hpcml.cv.callbacks.UnitCallbacks`), or None
    callbacks: Any = None
    #: warnings a unit shows travel with its result and are shown on every rank (the API; not the CLI)
    collect_warnings: bool = False

    @property
    def n_candidates(self) -> int:
        """Number of candidates (model x parameter set)."""
        return len(self.candidates)

    @property
    def n_splits(self) -> int:
        """Number of CV splits."""
        return len(self.splits)


class FoldCache:
    """The materialised train/test rows of the most recently used fold(s).

    Parameters
    ----------
    problem : Problem
        Source of X, y, splits and fit parameters.
    size : int
        How many folds to keep (1 is enough when units arrive fold by fold).
    """

    def __init__(self, problem: Problem, size: int = 1) -> None:
        self.problem = problem
        self.size = size
        self._cache: dict[tuple[int, bool], dict[str, Any]] = {}
        self._shared: tuple[int, dict[str, Any]] | None = None
        self.hits = 0
        self.misses = 0
        #: dense fold rows in memory files, handed to units as copy-on-write views (hpcml.cv.cow)
        self.cow = cow_available()
        #: the rank's :class:`hpcml.cv.prefix.PrefixCache` (None: prefixes are not reused)
        self.prefix: Any = None
        #: candidate -> (comm parameters to set to "self", whether it works in place on its input)
        self.candidate_plan: dict[int, tuple[dict[str, str], bool]] = {}

    def get(self, split: int, estimator: Any) -> dict[str, Any]:
        """Train/test arrays of ``split`` as ``_safe_split`` makes them for ``estimator``."""
        pairwise = bool(getattr(estimator.__sklearn_tags__().input_tags, "pairwise", False))
        if not pairwise and self._shared is not None and self._shared[0] == split:
            self.hits += 1
            return self._shared[1]
        key = (split, pairwise)
        hit = self._cache.get(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        # Drop the old fold before materialising the new one: never two fold copies at once.
        while len(self._cache) >= self.size:
            self._cache.pop(next(iter(self._cache)))
        p = self.problem
        train, test = p.splits[split]
        if not pairwise and self.cow and cowable(p.X):
            # copy-on-write fold rows (hpcml.cv.cow): units get writable private views
            from hpcml.cv.folds import split_rows

            # the test rows are built after each unit's fit (LazyRows): not held while fitting
            X_train, X_test = materialize(p.X, split_rows(train)), LazyRows.of(p.X, split_rows(test))
            y_train = None if p.y is None else _safe_indexing(p.y, train)
            y_test = None if p.y is None else _safe_indexing(p.y, test)
        else:
            X_train, y_train = _safe_split(estimator, p.X, p.y, train)
            X_test, y_test = _safe_split(estimator, p.X, p.y, test, train)
        self._cache[key] = self._entry(split, X_train, y_train, X_test, y_test)
        return self._cache[key]

    def adopt(self, split: int, X_train: Any, X_test: Any) -> None:
        """Use rows of X materialised elsewhere (a node-shared fold) for ``split``.

        They serve every non-pairwise estimator of that split; ``y`` and the
        fit/score parameters are still indexed here (they are small).
        """
        self._cache.clear()
        self.misses += 1
        p = self.problem
        train, test = p.splits[split]
        y_train = None if p.y is None else _safe_indexing(p.y, train)
        y_test = None if p.y is None else _safe_indexing(p.y, test)
        self._shared = (split, self._entry(split, X_train, y_train, X_test, y_test))

    def clear(self) -> None:
        """Forget every fold (e.g. before a node-shared buffer is reused), cached prefixes too."""
        self._cache.clear()
        self._shared = None
        if self.prefix is not None:
            self.prefix.clear()

    def _entry(self, split: int, X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> dict[str, Any]:
        p = self.problem
        train, test = p.splits[split]
        # Read-only, as joblib's memmaps are under scikit-learn's n_jobs > 1:
        # estimators that work in place (copy=False) copy read-only input first,
        # so a fold's rows stay intact for the next unit that reuses them.
        # Dense rows in a memory file (CowSource) reach units as private copy-on-write views;
        # LazyRows (test rows built after the fit) stay lazy: "X_test" is the LazyRows then.
        pairs = (("X_train", X_train), ("X_test", X_test))
        cow = {f"cow_{name}": src for name, src in pairs if isinstance(src, CowSource | LazyRows)}
        X_train, X_test = (x.array if isinstance(x, CowSource) else x for x in (X_train, X_test))
        for array in (X_train, y_train, X_test, y_test):
            _freeze(array)
        return {
            **cow,
            "X_train": X_train,
            "y_train": y_train,
            "X_test": X_test,
            "y_test": y_test,
            "fit_params": _check_method_params(p.X, params=p.fit_params, indices=train),
            "score_params_train": _check_method_params(p.X, params=p.score_params, indices=train),
            "score_params_test": _check_method_params(p.X, params=p.score_params, indices=test),
            "n_test_samples": X_test.shape[0] if hasattr(X_test, "shape") else len(X_test),
        }


def _freeze(array: Any) -> None:
    """Make a NumPy array (or a sparse matrix's buffers) read-only; other types are left alone."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    elif hasattr(array, "data") and isinstance(getattr(array, "data", None), np.ndarray):
        for name in ("data", "indices", "indptr"):
            part = getattr(array, name, None)
            if isinstance(part, np.ndarray):
                part.flags.writeable = False


def serial_estimator(estimator: Any) -> Any:
    """Estimators with a ``comm`` parameter (``hpcml.sgd``) fit serially inside a unit.

    A unit runs on one rank, so an estimator that would otherwise make collective
    calls gets ``comm="self"``: ``None``/``"world"`` and any communicator of more
    than one rank (a fit on it would wait forever for the other ranks).
    """
    serial = _serial_params(estimator.get_params(deep=True))
    return estimator.set_params(**serial) if serial else estimator


def _serial_params(params: dict[str, Any]) -> dict[str, str]:
    """The ``comm`` parameters (of ``get_params(deep=True)``) to set to ``"self"``."""
    return {k: "self" for k, v in params.items() if (k == "comm" or k.endswith("__comm")) and _collective(v)}


def _collective(comm: Any) -> bool:
    """Whether a ``comm`` parameter value would make a fit wait for other ranks."""
    if comm is None or (isinstance(comm, str) and comm == "world"):
        return True
    get_size = getattr(comm, "Get_size", None)
    return callable(get_size) and get_size() > 1


class FitRaised(Exception):
    """A fit raised with ``error_score="raise"``; carries the original exception."""

    def __init__(self, original: BaseException, tb: str, unit: int | None = None) -> None:
        super().__init__(str(original))
        self.original = original
        self.tb = tb
        #: the unit that raised (set by the engine): of several failures, the earliest unit's is raised
        self.unit = unit

    def __reduce__(self) -> tuple[Any, ...]:
        return (FitRaised, (self.original, self.tb, self.unit))


class _NeedsWritable(Exception):
    """A fit or score failed because the cached fold arrays are read-only."""


_READ_ONLY = re.compile(r"read-only|readonly|not writeable|WRITEBACKIFCOPY", re.IGNORECASE)


def _read_only_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) complains about a read-only buffer."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ValueError | TypeError | BufferError) and _READ_ONLY.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


_COPY_PARAM = re.compile(r"(?:^|__)copy(?:_x)?$", re.IGNORECASE)


def _overwrites_input(params: dict[str, Any]) -> bool:
    """Whether an estimator (its ``get_params(deep=True)``) was asked to work in place on its input.

    That is a ``copy``, ``copy_X`` or ``copy_x`` parameter, its own or a step's,
    set to False.  scikit-learn hands every unit fresh copies of its fold, so
    such an estimator changes them, and what it changed is what the scorers see
    (e.g. ``StandardScaler(copy=False)`` in a pipeline scales ``X_train`` in
    place and the train score transforms it again).  On a read-only fold the
    estimator would copy silently instead, so these units get writable copies.
    """
    return any(value is False and _COPY_PARAM.search(key) for key, value in params.items())


def _fresh(obj: Any, writable: bool) -> Any:
    """What one unit may use of a cached fold object.

    NumPy arrays and sparse matrices are shared read-only (the fast path), or
    copied when ``writable``; other containers (pandas DataFrame/Series, lists)
    are handed out as a new object per unit, as scikit-learn's indexing does,
    so an estimator that edits its input in place cannot change the next unit's
    rows (pandas Copy-on-Write makes the shallow copy enough).
    """
    if obj is None:
        return None
    if isinstance(obj, np.ndarray) or _is_sparse(obj):
        return obj.copy() if writable else obj
    if isinstance(obj, list):
        return list(obj)
    copy = getattr(obj, "copy", None)
    if callable(copy):
        try:
            return copy(deep=writable or not _pandas_cow())
        except TypeError:
            return copy()
    return obj


def unit_rows(cached: dict[str, Any], name: str, writable: bool) -> Any:
    """A unit's ``X_train``/``X_test``: a private copy-on-write view when the fold has one, else :func:`_fresh`."""
    source = cached.get(f"cow_{name}")
    if source is not None:
        return source.view()
    return _fresh(cached[name], writable)


def _is_sparse(obj: Any) -> bool:
    return hasattr(obj, "indptr") and isinstance(getattr(obj, "data", None), np.ndarray)


def _pandas_cow() -> bool:
    """Whether pandas' Copy-on-Write is on (always from pandas 3)."""
    import sys

    pd = sys.modules.get("pandas")
    if pd is None:
        return False
    if int(pd.__version__.split(".")[0]) >= 3:
        return True
    try:
        return bool(pd.get_option("mode.copy_on_write"))
    except Exception:  # noqa: BLE001 - option missing in old pandas
        return False


def _unit_params(params: dict[str, Any]) -> dict[str, Any]:
    """Fit/score parameters for one unit: arrays copied (an estimator may rescale them in place)."""
    return {k: (v.copy() if isinstance(v, np.ndarray) else _fresh(v, False)) for k, v in params.items()}


def fit_and_score(problem: Problem, cache: FoldCache, cand: int, split: int) -> dict[str, Any]:
    """Run one unit and return scikit-learn's per-unit result dict.

    The fold's NumPy/sparse arrays are shared read-only between the units of a
    fold; an estimator that needs to write into its input (``KMeans(copy_x=False)``,
    an in-place ``FunctionTransformer``, ``SVC`` sorting a CSR matrix's indices)
    fails on them and the unit is run again on private writable copies, so
    every estimator sees what scikit-learn would give it.

    Returns
    -------
    dict
        ``test_scores`` (float or dict per metric), ``train_scores`` when asked,
        ``n_test_samples``, ``fit_time``, ``score_time``, ``fit_error`` (the
        traceback text or ``None``).

    Raises
    ------
    FitRaised
        When the fit raised and ``error_score == "raise"``.
    """
    lines = [_start_message(problem, cand, split)] if problem.verbose > 9 else []
    if problem.callbacks is not None:
        # a unit's callback hooks must run once: no read-only first attempt
        result = _run_unit(problem, cache, cand, split, writable=True)
    else:
        try:
            result = _run_unit(problem, cache, cand, split, writable=False)
        except _NeedsWritable:
            result = _run_unit(problem, cache, cand, split, writable=True)
    if problem.verbose > 1:
        lines.append(_end_message(problem, cand, split, result))
    if lines:
        result[LINES_KEY] = lines
    return result


#: Key of a unit result holding the warnings it showed (:func:`captured_warnings`, :func:`show_warnings`).
WARNINGS_KEY = "_hpcml_warnings"


def captured_warnings(work: Any, *args: Any) -> tuple[Any, list[tuple[Any, ...]]]:
    """``work(*args)`` and the warnings it showed, captured instead of printed.

    The filters in force still act (an ``"error"`` filter still raises inside
    the fit, ``"ignore"`` still drops), so what is captured is what this rank
    would have shown.
    """
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        result = work(*args)
    return result, [(w.message, w.category, w.filename, w.lineno) for w in caught]


def show_warnings(shown: list[tuple[Any, ...]], registry: dict[Any, Any]) -> None:
    """Show warnings captured by :func:`captured_warnings` (on any rank) through this rank's filters.

    ``registry`` is shared by one collective call, so a warning repeated by
    many units is shown once per location and call, as scikit-learn's serial
    loop shows it once per location.
    """
    import warnings

    for message, category, filename, lineno in shown:
        warnings.warn_explicit(message, category, filename, lineno, registry=registry)


#: Key of a unit result holding its verbose lines; rank 0 prints them (:func:`print_lines`).
LINES_KEY = "_hpcml_lines"


def print_lines(result: dict[str, Any], rank: int = 0, drop: bool = False) -> None:
    """:func:`echo` the verbose lines a unit result carries (``drop``: and remove them from it)."""
    lines = result.pop(LINES_KEY, None) if drop else result.get(LINES_KEY)
    if lines:
        echo("\n".join(lines), rank)


def echo(text: str, rank: int) -> None:
    """Print a verbose message of a collective call as scikit-learn would, once per launch.

    Rank 0 prints to ``sys.stdout``.  The other ranks print only into a
    redirected ``sys.stdout`` (``contextlib.redirect_stdout``, pytest's capture),
    never into the process's own standard output: a terminal or batch log shows
    each line once, and code that captures the output sees scikit-learn's lines
    on every rank.
    """
    import sys

    if rank == 0 or sys.stdout is not sys.__stdout__:
        print(text, flush=True)


def _progress_and_params(problem: Problem, cand: int, split: int) -> tuple[str, str]:
    """The ``[CV{progress}]`` part and the parameters text of scikit-learn's ``_fit_and_score`` lines."""
    verbose = problem.verbose
    progress = ""
    show_progress = problem.show_params if problem.show_progress is None else problem.show_progress
    if verbose > 2 and show_progress:  # cross_validate gives no split/candidate progress
        progress = f" {split + 1}/{problem.n_splits}"
        if verbose > 9:
            progress += f"; {cand + 1}/{problem.n_candidates}"
    params = problem.candidates[cand][1] if problem.show_params else None
    params_msg = "" if params is None else ", ".join(f"{k}={params[k]}" for k in sorted(params))
    return progress, params_msg


def _start_message(problem: Problem, cand: int, split: int) -> str:
    """scikit-learn's ``[CV] START ...`` line of ``_fit_and_score`` (verbose > 9)."""
    progress, params_msg = _progress_and_params(problem, cand, split)
    start_msg = f"[CV{progress}] START {params_msg}"
    return start_msg + "." * (80 - len(start_msg))


def _end_message(problem: Problem, cand: int, split: int, result: dict[str, Any]) -> str:
    """scikit-learn's ``[CV] END ...`` line of ``_fit_and_score`` (verbose > 1)."""
    from joblib import logger

    verbose = problem.verbose
    progress, params_msg = _progress_and_params(problem, cand, split)
    end_msg = f"[CV{progress}] END "
    result_msg = params_msg + (";" if params_msg else "")
    test, train = result["test_scores"], result.get("train_scores")
    if verbose > 2:
        if isinstance(test, dict):
            for name in sorted(test):
                result_msg += f" {name}: ("
                if train is not None:
                    result_msg += f"train={train[name]:.3f}, "
                result_msg += f"test={test[name]:.3f})"
        else:
            result_msg += ", score="
            result_msg += f"(train={train:.3f}, test={test:.3f})" if train is not None else f"{test:.3f}"
    result_msg += f" total time={logger.short_format_time(result['fit_time'] + result['score_time'])}"
    return end_msg + "." * (80 - len(end_msg) - len(result_msg)) + result_msg


def _run_unit(problem: Problem, cache: FoldCache, cand: int, split: int, writable: bool) -> dict[str, Any]:
    template, params = problem.candidates[cand]
    estimator = clone(problem.estimators[template])
    # Parameters are cloned too: a grid may hold estimators (pipeline steps).
    # As in scikit-learn, an invalid parameter name raises whatever error_score is.
    estimator.set_params(**clone(params, safe=False))
    # What the candidate's parameters ask of every unit (one get_params per candidate and rank):
    # comm parameters a grid value brings in (an hpcml.sgd step) fit alone; copy=False works in place.
    plan = cache.candidate_plan.get(cand)
    if plan is None:
        deep = estimator.get_params(deep=True)
        plan = cache.candidate_plan[cand] = (_serial_params(deep), _overwrites_input(deep))
    serial, in_place = plan
    if serial:
        estimator.set_params(**serial)
    if in_place and not writable:
        raise _NeedsWritable
    cached = cache.get(split, estimator)
    prefixed = cache.prefix is not None and not writable and cache.prefix.plan.keys[cand]
    if prefixed and getattr(problem, "callbacks", None) is None:  # callbacks see whole fits
        from hpcml.cv.prefix import run_prefixed  # pipeline prefixes fitted once per fold

        outcome = run_prefixed(problem, cache.prefix, estimator, cand, split, cached)
        if outcome is not None:
            return outcome
        estimator = _fresh_candidate(problem, cand)
    X_train, y_train = unit_rows(cached, "X_train", writable), _fresh(cached["y_train"], writable)
    y_test = _fresh(cached["y_test"], writable)  # X_test: after the fit (_fit_score)
    fit_params = _unit_params(cached["fit_params"])
    fold = (X_train, y_train, y_test)
    if problem.callbacks is None:
        return _fit_score(problem, cached, estimator, fold, fit_params, writable, None)
    session = problem.callbacks.session(cand * problem.n_splits + split, X_train, y_train, fit_params)
    try:
        result = _fit_score(problem, cached, estimator, fold, fit_params, writable, session)
    finally:
        records = session.end()
    result[RECORDS_KEY] = (problem.callbacks.rank, records)
    return result


def _fit_score(
    problem: Problem,
    cached: dict[str, Any],
    estimator: Any,
    fold: tuple[Any, Any, Any],
    fit_params: dict[str, Any],
    writable: bool,
    session: Any,
) -> dict[str, Any]:
    """Fit ``estimator`` on the fold and score it (inside ``session``'s callback task when there is one).

    ``fold`` is ``(X_train, y_train, y_test)``: the unit's test rows are taken
    from ``cached`` only after the fit (:class:`hpcml.cv.cow.LazyRows`), so a
    fit's peak memory does not include them; the timings exclude building them,
    as scikit-learn's exclude its indexing.
    """
    X_train, y_train, y_test = fold
    error_score = problem.error_score
    scorer = problem.scorer
    result: dict[str, Any] = {}
    start = time.time()
    try:
        with session.fitting(estimator) if session is not None else contextlib.nullcontext():
            if y_train is None:
                estimator.fit(X_train, **fit_params)
            else:
                estimator.fit(X_train, y_train, **fit_params)
    except Exception as exc:
        if not writable and _read_only_error(exc):
            raise _NeedsWritable from exc
        fit_time = time.time() - start
        tb = traceback.format_exc()
        if error_score == "raise":
            raise FitRaised(exc, tb) from exc
        return _fit_failed(problem, cached, estimator, tb, fit_time)
    fit_time = time.time() - start
    X_test = unit_rows(cached, "X_test", writable)
    start = time.time() - fit_time  # score_time excludes building the test rows
    try:
        result["test_scores"] = _score_unit(
            estimator, X_test, y_test, scorer, _unit_params(cached["score_params_test"]), error_score, writable
        )
        score_time = time.time() - start - fit_time
        if problem.return_train_score:
            result["train_scores"] = _score_unit(
                estimator, X_train, y_train, scorer, _unit_params(cached["score_params_train"]), error_score, writable
            )
    except _NeedsWritable:
        raise
    except Exception as exc:  # scoring raised with error_score="raise"
        raise FitRaised(exc, traceback.format_exc()) from exc
    finally:
        del X_test
        if isinstance(cached.get("cow_X_test"), LazyRows):
            cached["cow_X_test"].settle(fit_time)
    result["fit_error"] = None
    result["fit_time"] = fit_time
    result["score_time"] = score_time
    result["n_test_samples"] = cached["n_test_samples"]
    if problem.return_estimator:
        result["estimator"] = estimator
    return result


def _fit_failed(problem: Problem, cached: dict[str, Any], estimator: Any, tb: str, fit_time: float) -> dict[str, Any]:
    """The result of a unit whose fit raised (a numeric ``error_score``), as scikit-learn's ``_fit_and_score``."""
    error_score, scorer = problem.error_score, problem.scorer
    if isinstance(scorer, _MultimetricScorer):
        test_scores: Any = {name: error_score for name in scorer._scorers}
    else:
        test_scores = error_score
    result: dict[str, Any] = {"test_scores": test_scores}
    if problem.return_train_score:
        result["train_scores"] = test_scores.copy() if isinstance(test_scores, dict) else test_scores
    result.update(fit_error=tb, fit_time=fit_time, score_time=0.0, n_test_samples=cached["n_test_samples"])
    if problem.return_estimator:
        result["estimator"] = estimator
    return result


def _fresh_candidate(problem: Problem, cand: int) -> Any:
    """The candidate's estimator, cloned and set up again (as at the start of a unit)."""
    template, params = problem.candidates[cand]
    estimator = clone(problem.estimators[template]).set_params(**clone(params, safe=False))
    return serial_estimator(estimator)


def _score_unit(
    estimator: Any, X: Any, y: Any, scorer: Any, score_params: dict[str, Any], error_score: Any, writable: bool
) -> Any:
    """scikit-learn's ``_score``; a failure caused by read-only input asks for writable copies instead."""
    if writable:
        return _score(estimator, X, y, scorer, score_params, error_score)
    probe = scorer
    if isinstance(scorer, _MultimetricScorer) and not getattr(scorer, "_raise_exc", True):
        # a multi-metric scorer made for a numeric error_score returns failures as
        # strings (and _score warns); the probe must raise them instead
        probe = copy.copy(scorer)
        probe._raise_exc = True
    try:
        return _score(estimator, X, y, probe, score_params, "raise")
    except Exception as exc:
        if _read_only_error(exc):
            raise _NeedsWritable from exc
        if error_score == "raise":
            raise
    # a genuine scoring failure: let scikit-learn turn it into error_score (and its warning)
    return _score(estimator, X, y, scorer, score_params, error_score)


def check_error_score(error_score: Any) -> None:
    """scikit-learn's validation of ``error_score``."""
    if not isinstance(error_score, numbers.Number) and error_score != "raise":
        raise ValueError(
            "error_score must be the string 'raise' or a numeric value. "
            "(Hint: if using 'raise', please make sure that it has been spelled correctly.)"
        )

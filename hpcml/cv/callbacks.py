"""scikit-learn's callbacks (``set_callbacks``, scikit-learn >= 1.9) in an SPMD search.

Every rank calls ``fit`` on its own search object with its own callbacks.  The
search-level tasks (the ``fit`` root, ``search``) run on every rank, as in a
serial scikit-learn fit.  A task that runs on one rank only (a
``candidate-split-evaluation`` unit, where the rank that fits the unit runs it;
the ``refit-with-best-params`` task, on rank 0) runs live there, with that rank's
callbacks, and is *recorded*: every hook call, the sub-estimator's ones
(auto-propagated callbacks) included, travels with the unit's result, and every
other rank replays it on its own callbacks, with its own search as ``estimator``
and contexts rebuilt with the same task names, ids and tree shape.  So each
rank's callbacks see every task of the fit exactly once, as scikit-learn's serial
fit gives them; only the live rank's return values steer a fit (a ``True`` from
``on_fit_task_end`` stops the sub-estimator's loop there).

Hook arguments: ``X``/``y``/``metadata`` that are the unit's own fold rows and
weights are rebuilt on the replaying rank from the split (they are not sent);
any other value (a sub-estimator's transformed ``X``, a ``fitted_estimator``)
travels pickled with the results.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

_HOOKS = ("setup", "teardown", "on_fit_task_begin", "on_fit_task_end")
#: attributes of a ``fitted_estimator`` copy that point into the live rank's task tree
_LIVE_ATTRS = ("_skl_callbacks", "_parent_callback_ctx", "_callback_fit_ctx", "_skl_callbacks_to_teardown")
RECORDS_KEY = "_hpcml_callbacks"


@dataclass(frozen=True)
class _Ref:
    """A hook argument that the replaying rank rebuilds itself (``X``, ``y`` or ``sample_weight`` of the task)."""

    name: str


def _descriptor(ctx: Any) -> tuple[Any, ...]:
    return (
        ctx.task_name,
        ctx.task_id,
        ctx.max_subtasks,
        ctx.sequential_subtasks,
        ctx.estimator_name,
        ctx.source_estimator_name,
        ctx.source_task_name,
        getattr(ctx, "_propagation_depth", 0),
        ctx.init_time,
    )


class _Recorder:
    """Stands for one callback during a recorded task: calls it, and records the call."""

    def __init__(self, callback: Any, index: int, session: TaskSession) -> None:
        self._callback = callback
        if hasattr(callback, "max_propagation_depth"):
            self.max_propagation_depth = callback.max_propagation_depth
        for hook in _HOOKS:
            setattr(self, hook, self._hook(hook, index, session))

    def _hook(self, hook: str, index: int, session: TaskSession) -> Any:
        target = getattr(self._callback, hook)

        def call(estimator: Any, context: Any, **kwargs: Any) -> Any:
            session.record(index, hook, estimator, context, kwargs)
            return target(estimator, context, **kwargs)

        # CallbackContext passes only the keyword arguments the hook declares: declare the callback's.
        call.__signature__ = inspect.signature(target)  # type: ignore[attr-defined]
        return call


class TaskSession:
    """One recorded task: ``ctx`` runs live on this rank and its hook calls are kept for the others.

    Parameters
    ----------
    ctx : sklearn.callback.CallbackContext
        The task's context on this rank (a leaf: a unit or the refit).
    caller : estimator
        This rank's search (the ``estimator`` argument of the task's hooks).
    X, y, sample_weight : array-like or None
        The task's training data, as the hooks receive it.
    """

    def __init__(self, ctx: Any, caller: Any, X: Any, y: Any, sample_weight: Any) -> None:
        self.ctx = ctx
        self.anchor = ctx.parent
        self.caller = caller
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self.metadata = None if sample_weight is None else {"sample_weight": sample_weight}
        self.records: list[tuple[Any, ...]] = []
        ctx._callbacks = [_Recorder(cb, i, self) for i, cb in enumerate(ctx._callbacks)]

    def _token(self, value: Any) -> Any:
        for name in ("X", "y", "sample_weight", "metadata"):
            if value is not None and value is getattr(self, name):
                return _Ref(name)
        if isinstance(value, dict):
            return {k: self._token(v) for k, v in value.items()}
        return value

    def _chain(self, ctx: Any) -> tuple[tuple[Any, ...], ...]:
        chain = []
        while ctx is not None and ctx is not self.anchor:
            chain.append(_descriptor(ctx))
            ctx = ctx.parent
        return tuple(reversed(chain))

    def record(self, index: int, hook: str, estimator: Any, ctx: Any, kwargs: dict[str, Any]) -> None:
        """Keep one hook call (arguments the replaying rank has are kept as references)."""
        kwargs = {k: self._token(v) for k, v in kwargs.items()}
        fitted = kwargs.get("fitted_estimator")
        if fitted is not None:
            fitted = copy.copy(fitted)
            for attr in _LIVE_ATTRS:
                fitted.__dict__.pop(attr, None)
            kwargs["fitted_estimator"] = fitted
        who = "caller" if estimator is self.caller else estimator
        self.records.append((index, hook, self._chain(ctx), who, kwargs))

    @contextlib.contextmanager
    def fitting(self, estimator: Any) -> Iterator[None]:
        """scikit-learn's ``propagate_callback_context`` + ``on_fit_task_begin`` around a fit."""
        with self.ctx.propagate_callback_context(estimator):
            self.ctx.call_on_fit_task_begin(estimator=self.caller, X=self.X, y=self.y, metadata=self.metadata)
            yield

    def end(self) -> list[tuple[Any, ...]]:
        """``on_fit_task_end`` of the task; returns the records to send."""
        self.ctx.call_on_fit_task_end(estimator=self.caller, X=self.X, y=self.y, metadata=self.metadata)
        return self.records


class UnitCallbacks:
    """The callback side of one ``evaluate_candidates`` call: this rank's search and its unit contexts.

    Parameters
    ----------
    caller : estimator
        This rank's search.
    contexts : list of sklearn.callback.CallbackContext
        One ``candidate-split-evaluation`` context per unit (unit order = task id).
    """

    def __init__(self, caller: Any, contexts: list[Any], rank: int) -> None:
        self.caller = caller
        self.contexts = contexts
        self.rank = rank

    def session(self, unit: int, X: Any, y: Any, fit_params: dict[str, Any]) -> TaskSession:
        """Start the recorded task of ``unit`` (its fold rows and fit parameters)."""
        return TaskSession(self.contexts[unit], self.caller, X, y, fit_params.get("sample_weight"))


def replay(records: list[tuple[Any, ...]], ctx: Any, caller: Any, refs: dict[str, Any] | Any) -> None:
    """Call this rank's ``callbacks`` as the live rank's were called for the task of ``ctx``.

    Parameters
    ----------
    records : list
        :meth:`TaskSession.end`'s records, from the rank that ran the task.
    ctx : sklearn.callback.CallbackContext
        This rank's context of the same task.
    caller : estimator
        This rank's search.
    refs : dict or callable
        ``X``, ``y``, ``sample_weight`` of the task on this rank (or a callable returning them).
    """
    anchor = ctx.parent
    callbacks = ctx._callbacks
    built: dict[tuple[Any, ...], Any] = {}
    resolved: dict[str, Any] | None = None

    def value(v: Any) -> Any:
        nonlocal resolved
        if isinstance(v, _Ref):
            if resolved is None:
                resolved = refs() if callable(refs) else refs
                sw = resolved.get("sample_weight")
                resolved["metadata"] = None if sw is None else {"sample_weight": sw}
            return resolved[v.name]
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        return v

    for index, hook, chain, who, kwargs in records:
        context = _context_for(chain, ctx, anchor, built)
        estimator = caller if isinstance(who, str) and who == "caller" else who
        getattr(callbacks[index], hook)(estimator, context, **{k: value(v) for k, v in kwargs.items()})


def _context_for(chain: tuple[tuple[Any, ...], ...], ctx: Any, anchor: Any, built: dict) -> Any:
    """The context on this rank for a recorded chain of task descriptors (built once per chain)."""
    from sklearn.callback import CallbackContext

    if chain in built:
        return built[chain]
    if len(chain) == 1 and chain[0][5] is None and chain[0][:2] == (ctx.task_name, ctx.task_id):
        built[chain] = ctx
        return ctx
    parent = anchor if len(chain) == 1 else _context_for(chain[:-1], ctx, anchor, built)
    name, task_id, max_subtasks, sequential, est_name, src_est, src_task, depth, init_time = chain[-1]
    new = CallbackContext.__new__(CallbackContext)
    new._callbacks = ctx._callbacks
    new.estimator_name, new.task_name, new.task_id = est_name, name, task_id
    new.max_subtasks, new.sequential_subtasks = max_subtasks, sequential
    new.root_uuid, new.init_time, new._children_map = ctx.root_uuid, init_time, {}
    new.source_estimator_name, new.source_task_name, new._propagation_depth = src_est, src_task, depth
    new.parent = parent
    parent._children_map[task_id] = new  # a merged sub-estimator root replaces the leaf, as in _merge_with
    built[chain] = new
    return new


def metadata(sample_weight: Any) -> dict[str, Any] | None:
    """The ``metadata`` argument scikit-learn's searches give their hooks."""
    return None if sample_weight is None else {"sample_weight": sample_weight}


def init_callbacks(search: Any, X: Any, y: Any, sample_weight: Any, comm: MPI.Intracomm) -> Any:
    """The search's root callback context (``fit`` task begun), or None before scikit-learn 1.9.  Collective.

    Raises
    ------
    ValueError
        On every rank, when the ranks' searches do not hold the same number of
        callbacks (records are replayed by position).
    """
    counts = comm.allgather(len(getattr(search, "_skl_callbacks", None) or []))
    if len(set(counts)) > 1:
        raise ValueError(
            f"every rank must give the search the same callbacks (set_callbacks); numbers per rank: {counts}"
        )
    if not hasattr(search, "_init_callback_context"):
        return None
    root = search._init_callback_context(max_subtasks=1 + (search.refit is not False))
    root.call_on_fit_task_begin(estimator=search, X=X, y=y, metadata=metadata(sample_weight))
    return root


def unit_callbacks(search: Any, callback_ctx: Any, n_units: int, rank: int) -> UnitCallbacks | None:
    """The units' contexts under ``callback_ctx`` (scikit-learn's), or None when the search has no callbacks."""
    if callback_ctx is None or not getattr(search, "_skl_callbacks", None):
        return None
    contexts = [
        callback_ctx.subcontext(task_name="candidate-split-evaluation", task_id=task_id) for task_id in range(n_units)
    ]
    return UnitCallbacks(search, contexts, rank)


def replay_agreed(comm: MPI.Intracomm, work: Callable[[], None] | None) -> None:
    """Run ``work`` (a replay; None: nothing to replay here); if it raises on any rank, every rank raises."""
    from hpcml.comm import raise_if_any

    error = None
    if work is not None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - agreed just below
            error = exc
    raise_if_any(comm, error)


def replay_units(search: Any, problem: Any, out: list[dict[str, Any] | None], comm: MPI.Intracomm) -> None:
    """Replay, on this rank, the recorded tasks of the units other ranks ran; drop the records from ``out``.

    Collective over ``comm``.
    """
    from hpcml._compat import _check_method_params, _safe_split

    rank = comm.Get_rank()
    pending = []
    for unit, result in enumerate(out):
        entry = result.pop(RECORDS_KEY, None) if isinstance(result, dict) else None
        if entry is not None and entry[0] != rank:
            pending.append((unit, entry[1]))
    callbacks = problem.callbacks
    if callbacks is None:
        return

    def work() -> None:
        for unit, records in pending:
            train = problem.splits[unit % problem.n_splits][0]

            def refs(train: Any = train) -> dict[str, Any]:
                X_train, y_train = _safe_split(search.estimator, problem.X, problem.y, train)
                weights = _check_method_params(problem.X, params=problem.fit_params, indices=train)
                return {"X": X_train, "y": y_train, "sample_weight": weights.get("sample_weight")}

            replay(records, callbacks.contexts[unit], search, refs)

    replay_agreed(comm, work)

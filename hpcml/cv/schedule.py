"""Dynamic work distribution: rank 0 hands out units, every rank (0 included) runs them.

Pure MPI plumbing; knows nothing about scikit-learn.  A *unit* is an integer;
the caller supplies ``work(unit) -> result`` (run on every rank) and, on rank 0,
the order of the units and optional callbacks.

Protocol (tags on a private duplicate of the caller's communicator):

* worker -> 0, ``REQUEST``: ``(results_of_previous_batch, error, holding)``;
* 0 -> worker, ``WORK``: ``(Reply.WORK | Reply.WAIT | Reply.DONE, batch, stop_sent)``;
* 0 -> worker, ``STOP``: stop after the unit in hand (error, signal, time limit).  After a
  failing unit it carries that unit's index: units in hand before it still run, as scikit-learn's
  serial loop would have run them first, so the error raised is the earliest among them.

Results travel with plain pickle; results that need it (an estimator holding a
lambda, ``return_estimator=True``) fall back to cloudpickle
(:class:`hpcml.comm.ByValue`), and results that cannot be sent at all become an
error of their rank.  Errors travel as :class:`hpcml.comm.PackedException`,
which always unpickles, and are raised on every rank with their original type.
Every request rank 0 receives is answered, even when its content cannot be
unpickled or recording it fails (that becomes the run's error); an exception
that still escapes the dispatcher (MPI itself failed) ends the job with
``MPI_Abort`` rather than leave the workers waiting.

A worker asks for its next batch before it runs the one in hand ("holding"),
so the round trip is hidden behind work; rank 0 grants such a prefetch only for
short batches (:data:`PREFETCH_MAX_SECONDS`) and answers ``WAIT`` otherwise.

On rank 0 a dispatcher thread answers requests while the main thread runs units
(threadpoolctl and signal handlers want the main thread).  Where MPI gives less
than ``MPI_THREAD_SERIALIZED`` the dispatcher is polled inline between units
instead.  Every wait is ``Iprobe``/``Test`` plus :class:`hpcml.comm.Backoff`, so
idle ranks sleep instead of spinning (MPICH busy-polls in blocking calls).

Batching: a batch holds as many units from the head of the queue as are
estimated to take ``target_batch_seconds`` (per-group mean cost, else the global
mean), never more than a guided-self-scheduling share ``remaining / (2 * size)``
and at least one; before any cost is known a batch is one unit.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from hpcml.comm import (
    HOST,
    Backoff,
    ByValue,
    PackedException,
    describe,
    idle_barrier,
    keep_traceback,
    mark_agreed,
    mark_origin,
    origin_of,
    unsendable,
)
from hpcml.errors import EXIT_FAILURE, SerializationError

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

#: Default batch duration.  Long enough that a round trip (<= 2 ms with the
#: backoff ceiling) costs < 2 %, short enough to balance the tail
#: (benchmarks/bench_dispatch.py).
TARGET_BATCH_SECONDS = 0.1


#: Longest estimated batch a busy worker may receive in advance (prefetch).
#: Hides the request round trip behind work for short units; longer units are
#: not queued behind a running one, so that the tail stays balanced
#: (benchmarks/bench_dispatch.py).
PREFETCH_MAX_SECONDS = 0.5


class Tag(IntEnum):
    """Message tags of the dispatch protocol."""

    REQUEST = 11
    WORK = 12
    STOP = 13


class Reply(IntEnum):
    """Kinds of answer to a request."""

    WORK = 1
    WAIT = 2
    DONE = 3


class UnitQueue:
    """The order in which rank 0 hands out units, with cost-aware batching.  No MPI.

    Parameters
    ----------
    first : iterable of int
        Units to run first, in order (e.g. one fold of every candidate, to learn costs).
    rest : iterable of int
        The other units, in their default order; re-sorted longest-first once
        ``first`` has been handed out and costs are known (an affinity batch by
        its whole cost), and again when the costs of more groups arrive.
    n_ranks : int
        Number of ranks that take units.
    group_of : callable, optional
        Cost group of a unit (e.g. its candidate); costs are averaged per group.
    prior_costs : dict, optional
        Known mean cost per group (e.g. from a journal being resumed).
    target_batch_seconds : float
        Intended duration of one batch.
    deadline : float, optional
        ``time.time()`` after which no unit is handed out that is estimated not
        to finish in time; the queue then empties itself (``expired`` is set).
    affinity_of : callable, optional
        Units with the same (not None) affinity go out in one batch, the batch
        of the first of them to reach the head of the queue (e.g. the units of
        a fold that share a fitted pipeline prefix, :mod:`hpcml.cv.prefix`).
    """

    def __init__(
        self,
        first: Iterable[int],
        rest: Iterable[int],
        n_ranks: int,
        group_of: Callable[[int], Hashable] | None = None,
        prior_costs: dict[Hashable, float] | None = None,
        target_batch_seconds: float = TARGET_BATCH_SECONDS,
        deadline: float | None = None,
        affinity_of: Callable[[int], Hashable | None] | None = None,
    ) -> None:
        self.first = deque(first)
        self.rest = list(rest)
        self.affinity_of = affinity_of
        #: affinity -> its units not handed out yet; units taken out of turn (skipped at the head)
        self._members: dict[Hashable, list[int]] = {}
        self._pulled: set[int] = set()
        self._given: set[int] = set()  # units handed out (with affinity only)
        self._key_of: dict[int, Hashable] = {}  # unit -> its affinity (units with one only)
        if affinity_of is not None:
            for unit in [*self.first, *self.rest]:
                key = affinity_of(unit)
                if key is not None:
                    self._members.setdefault(key, []).append(unit)
                    self._key_of[unit] = key
        self.n_ranks = max(1, n_ranks)
        self.group_of = group_of or (lambda unit: None)
        self.target = target_batch_seconds
        self.deadline = deadline
        self.expired = False
        self._sum: dict[Hashable, float] = {}
        self._count: dict[Hashable, int] = {}
        for group, cost in (prior_costs or {}).items():
            self._sum[group] = float(cost)
            self._count[group] = 1
        self._total = sum(self._sum.values())
        self._n = sum(self._count.values())
        self._queue: deque[int] | None = None
        #: groups whose cost was first learned since the last sort, and the groups known at that sort
        self._learned = 0
        self._known_at_sort = 0
        self._pos: dict[int, int] = {}  # unit -> its place in the default order of ``rest``
        if not self.first and self._count:
            self._sort_rest()

    def __len__(self) -> int:
        queued = len(self.first) + (len(self._queue) if self._queue is not None else len(self.rest))
        return queued - len(self._pulled)

    def clear(self) -> None:
        """Drop every unit not handed out yet."""
        self.first.clear()
        self.rest = []
        self._queue = deque()
        self._members.clear()
        self._pulled.clear()

    def record(self, unit: int, seconds: float) -> None:
        """Learn the cost of a finished unit."""
        group = self.group_of(unit)
        if group not in self._count:
            self._learned += 1
        self._sum[group] = self._sum.get(group, 0.0) + seconds
        self._count[group] = self._count.get(group, 0) + 1
        self._total += seconds
        self._n += 1

    def cost(self, unit: int) -> float | None:
        """Estimated seconds of ``unit`` (its group's mean, else the global mean)."""
        group = self.group_of(unit)
        if group in self._count:
            return self._sum[group] / self._count[group]
        if self._n:
            return self._total / self._n
        return None

    def _sort_rest(self) -> None:
        # Longest first (LPT), in cost buckets of a factor of two; inside a bucket
        # the default order is kept so that units of one fold stay together.  An
        # affinity batch goes out whole, so it is placed by its whole cost (the sum
        # of its members' estimates: the member that fits the shared prefix is
        # charged for it, so the sum covers the prefix fit), before the cheaper
        # batches of its bucket; a group of unknown cost counts as the costliest
        # known one.
        if self._queue is None:
            units, self._pos = self.rest, {unit: pos for pos, unit in enumerate(self.rest)}
        else:  # a re-sort: drop the units already taken out of turn
            units = [unit for unit in self._queue if unit not in self._pulled]
            self._pulled.difference_update(self._queue)
        known = {g: self._sum[g] / self._count[g] for g in self._count}
        worst = max(known.values()) if known else 0.0
        costs = [known.get(self.group_of(unit), worst) for unit in units]
        whole: dict[Hashable, float] = {}
        lead: dict[Hashable, int] = {}
        for unit, cost in zip(units, costs):
            key = self._key_of.get(unit)
            if key is not None:
                whole[key] = whole.get(key, 0.0) + cost
                lead[key] = min(lead.get(key, self._pos[unit]), self._pos[unit])

        def order(item: tuple[int, float]) -> tuple[int, float, int, int]:
            unit, cost = item
            key = self._key_of.get(unit)
            pos = self._pos[unit]
            if key is not None:
                cost = whole[key]
            bucket = math.floor(math.log2(cost)) if cost > 0 else -1075
            return (-bucket, 0.0 if key is None else -cost, pos if key is None else lead[key], pos)

        self._queue = deque(unit for unit, _ in sorted(zip(units, costs), key=order))
        self._known_at_sort, self._learned = len(self._count), 0

    def _head(self) -> deque[int]:
        while self.first and self.first[0] in self._pulled:
            self._pulled.discard(self.first.popleft())
        if self.first:
            return self.first
        if self._queue is None or self._learned > self._known_at_sort // 8:
            # first sort, or costs of more groups learned since (at most logarithmically many re-sorts)
            self._sort_rest()
        assert self._queue is not None
        while self._queue and self._queue[0] in self._pulled:
            self._pulled.discard(self._queue.popleft())
        return self._queue

    def _plain(self, unit: int) -> bool:
        """Whether ``unit`` may join a batch in turn (no affinity group, not taken already)."""
        return self.affinity_of is None or (unit not in self._pulled and self.affinity_of(unit) is None)

    def _affine(self, unit: int) -> list[int]:
        """The other units of ``unit``'s affinity group, taken out of turn."""
        if self.affinity_of is None:
            return []
        self._given.add(unit)
        members = self._members.pop(self.affinity_of(unit), [])
        others = [other for other in members if other not in self._given]
        self._given.update(others)
        self._pulled.update(others)
        return others

    def take(self) -> list[int]:
        """The next batch (empty when nothing is left)."""
        remaining = len(self)
        if remaining == 0:
            return []
        head = self._head()
        if self.deadline is not None and time.time() + (self.cost(head[0]) or 0.0) > self.deadline:
            self.expired = True
            self.clear()
            return []
        share = max(1, math.ceil(remaining / (2 * self.n_ranks)))
        batch = [head.popleft()]
        affine = self._affine(batch[0])
        if affine:
            return batch + affine
        spent = self.cost(batch[0])
        if spent is None:
            return batch
        while head and len(batch) < share and self._plain(head[0]):
            nxt = self.cost(head[0])
            if nxt is None or spent + nxt > self.target:
                break
            spent += nxt
            batch.append(head.popleft())
        if self.affinity_of is not None:
            self._given.update(batch)
        return batch


@dataclass
class ScheduleReport:
    """What happened during :func:`run_units`, on rank 0 (``results``) and everywhere (``busy``)."""

    results: dict[int, Any] = field(default_factory=dict)
    busy: list[float] = field(default_factory=list)
    units_done: list[int] = field(default_factory=list)
    messages: int = 0
    stopped: bool = False
    wall: float = 0.0
    inline_dispatch: bool = False
    #: ``"flat"`` or ``"hierarchical"`` (:mod:`hpcml.cv.hierarchy`), the same on every rank
    dispatch: str = "flat"


class _Dispatcher:
    """Rank 0's bookkeeping: the queue, the results and the answers to requests."""

    def __init__(
        self,
        comm: MPI.Intracomm,
        queue: UnitQueue,
        on_results: Callable[[int, list[tuple[int, Any, float]]], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.comm = comm
        self.queue = queue
        self.on_results = on_results
        self.should_stop = should_stop or (lambda: False)
        self.lock = threading.Lock()
        self.report = ScheduleReport(busy=[0.0] * comm.Get_size(), units_done=[0] * comm.Get_size())
        self.active = set(range(1, comm.Get_size()))
        self.stop_sent: set[int] = set()
        self.stopping = False
        self.error: tuple[int, BaseException] | None = None
        #: the earliest failing unit (units in hand before it still run); None once a stop is not a unit's error
        self.bound: int | None = None
        self.hard_stop = False
        self._status = None

    # -- shared by both threads -------------------------------------------------
    def take(self) -> list[int]:
        with self.lock:
            self._check_stop()
            if self.stopping:
                return []
            batch = self.queue.take()
            if not batch and self.queue.expired:
                self.report.stopped = True
            return batch

    def record(self, rank: int, items: list[tuple[int, Any, float]]) -> None:
        with self.lock:
            for unit, result, seconds in items:
                self.queue.record(unit, seconds)
                self.report.results[unit] = result
                self.report.busy[rank] += seconds
                self.report.units_done[rank] += 1
            if self.on_results is not None:
                self.on_results(rank, items)

    def fail(self, rank: int, error: BaseException) -> None:
        if rank == 0:
            mark_origin(error, 0, HOST)
        with self.lock:
            self._keep(rank, error)

    def _keep(self, rank: int, error: BaseException) -> bool:
        """The failure rule (flat and hierarchical dispatch), under the lock; whether ``error`` is now the run's.

        Several units may fail before the stop: the earliest unit's error is kept
        (scikit-learn's serial order, :func:`earlier_error`), and units in hand
        below the earliest failing unit still run (:meth:`stop_bound`); an error
        without a unit stops at once.
        """
        kept = earlier_error(self.error[1] if self.error is not None else None, error)
        if kept:
            self.error = (rank, error)
        self._stop_at(_unit_of(error))
        return kept

    def _stop_at(self, unit: int | None) -> None:
        """Stop; units in hand below ``unit`` still run (None: none does)."""
        if unit is None:
            self.hard_stop = True
        else:
            self.bound = unit if self.bound is None else min(self.bound, unit)
        self._stop()

    def _check_stop(self) -> None:
        if not self.stopping and self.should_stop():
            self.hard_stop = True
            self._stop()

    def stop_bound(self) -> int | None:
        """Units in hand below this index still run (the run stops for a failing unit); None: none does."""
        return None if self.hard_stop else self.bound

    def _stop(self) -> None:
        self.stopping = True
        self.report.stopped = True
        self.queue.clear()

    # -- MPI side (one thread only) ----------------------------------------------
    def poll(self) -> bool:
        """Answer one pending request; returns whether there was one."""
        from mpi4py import MPI

        with self.lock:
            self._check_stop()
            if self.stopping:
                for rank in self.active - self.stop_sent:
                    self.comm.send(self.stop_bound(), dest=rank, tag=Tag.STOP)
                    self.stop_sent.add(rank)
        if self._status is None:
            self._status = MPI.Status()
        if not self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=Tag.REQUEST, status=self._status):
            return False
        source = self._status.Get_source()
        # Every request received gets exactly one reply, whatever goes wrong
        # below: a worker left without one would wait forever.  WAIT is the safe
        # answer when the request's content is unknown or could not be handled:
        # a worker that holds a batch finishes it (or stops) and asks again, one
        # that does not asks again at once; the run is stopping by then, so the
        # next answer is DONE.
        try:
            items, packed, holding = self.comm.recv(source=source, tag=Tag.REQUEST)
        except MPI.Exception:
            raise
        except Exception as exc:  # noqa: BLE001 - the message is consumed but cannot be unpickled
            error = SerializationError(f"rank 0 cannot unpickle the results sent by rank {source}: {describe(exc)}")
            self.fail(0, error)
            self.comm.send((Reply.WAIT, [], source in self.stop_sent), dest=source, tag=Tag.WORK)
            return True
        self.report.messages += 1
        try:
            if items:
                self.record(source, items)
            if packed is not None:
                self.fail(source, packed.unpack())
            reply = self._answer(source, holding)
        except Exception as exc:  # noqa: BLE001 - e.g. on_results (journal, progress) raised
            _keep_traceback(exc)
            self.fail(0, exc)
            reply = (Reply.WAIT, [])
        self.comm.send((*reply, source in self.stop_sent), dest=source, tag=Tag.WORK)
        return True

    def _answer(self, source: int, holding: bool) -> tuple[Reply, list[int]]:
        if holding and not self.prefetch_ok():
            return (Reply.WAIT, [])
        batch = self.take()
        if batch:
            return (Reply.WORK, batch)
        if holding or self.pending():  # it still runs a batch, or work may appear: it will ask again
            return (Reply.WAIT, [])
        self.active.discard(source)
        return (Reply.DONE, [])

    def pending(self) -> bool:
        """Whether a queue that is empty now may still get units (a dynamic work source, e.g. ASHA)."""
        with self.lock:
            pending = getattr(self.queue, "pending", None)
            return not self.stopping and pending is not None and pending()

    def prefetch_ok(self) -> bool:
        """Whether a worker that is still busy may get its next batch now.

        Prefetching hides the request round trip (and rank 0's GIL) behind
        work, but a queued batch cannot move to a rank that falls idle, so only
        short batches are prefetched.
        """
        with self.lock:
            if self.stopping or len(self.queue) == 0:
                return True  # the answer (WAIT) is the same either way
            head = self.queue._head()[0]
            cost = self.queue.cost(head)
            return cost is not None and cost <= PREFETCH_MAX_SECONDS

    def serve_until_done(self) -> None:
        backoff = Backoff()
        while self.active:
            served = False
            try:
                served = self.poll()
            except Exception as exc:  # noqa: BLE001 - poll answers what it received: MPI itself failed
                self.abort(exc)
            if served:
                backoff.reset()
            else:
                backoff.sleep()

    def abort(self, exc: BaseException) -> None:
        """The dispatch protocol is broken (MPI failed): end every rank rather than let workers wait."""
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        print(
            f"hpcml: error: rank 0 on {HOST}: the dispatcher failed ({describe(exc)}); ending every rank",
            file=sys.stderr,
            flush=True,
        )
        self.comm.Abort(EXIT_FAILURE)


def _keep_traceback(exc: BaseException) -> None:
    """Record the traceback being handled as the traceback of ``exc`` (printed by the entry points)."""
    keep_traceback(exc, traceback.format_exc())


def earlier_error(kept: BaseException | None, error: BaseException) -> bool:
    """Whether ``error`` replaces ``kept`` as the run's error: the first one, or one of an earlier unit.

    Units are numbered in scikit-learn's serial order, whose loop raises the
    earliest failing unit's error; an error without a unit counts as the latest.
    """
    if kept is None:
        return True
    unit, kept_unit = _unit_of(error), _unit_of(kept)
    return unit is not None and (kept_unit is None or unit < kept_unit)


def _below(unit: int | None, bound: int | None) -> bool:
    return unit is not None and bound is not None and unit < bound


def _unit_of(error: BaseException | None) -> int | None:
    return getattr(error, "unit", None) if error is not None else None


def _run_local(
    work: Callable[[int], Any],
    batch: list[int],
    stop_requested: Callable[[], bool],
    stop_bound: Callable[[], int | None] = lambda: None,
) -> tuple[list[tuple[int, Any, float]], BaseException | None]:
    """Run a batch; returns its results and the error of its earliest failing unit, if any.

    After a stop, only units below ``stop_bound()`` (an earlier failing unit's
    index) still run; after a unit of this batch failed, only units below it
    do: scikit-learn's serial loop would have run them first, and one of them
    may fail too (its error is then the one raised).  An error without a unit
    (e.g. KeyboardInterrupt in a fit) ends the batch at once.
    """
    items: list[tuple[int, Any, float]] = []
    error: BaseException | None = None
    for unit in batch:
        if error is not None and not _below(unit, _unit_of(error)):
            continue
        if stop_requested() and not _below(unit, stop_bound()):
            continue
        start = time.perf_counter()
        try:
            result = work(unit)
        except BaseException as exc:  # noqa: BLE001 - shipped to rank 0, re-raised everywhere
            # (SystemExit or KeyboardInterrupt from a fit too: leaving the dispatch
            # protocol here would leave the other ranks waiting)
            _keep_traceback(exc)
            error = exc
            if _unit_of(exc) is None:
                break
            continue
        items.append((unit, result, time.perf_counter() - start))
    return items, error


def run_units(
    comm: MPI.Intracomm,
    work: Callable[[int], Any],
    *,
    queue: UnitQueue | None = None,
    on_results: Callable[[int, list[tuple[int, Any, float]]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_hook: Callable[[], None] | None = None,
    threaded: bool | None = None,
    dispatch: str | None = None,
) -> ScheduleReport:
    """Run units over all ranks of ``comm``.  Collective over ``comm``.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm
        Ranks that run units; duplicated for the call so that hpcml's messages
        never match the caller's.
    work : callable
        ``work(unit) -> result``, run on whichever rank the unit lands.  An
        exception stops the run: units in hand finish, then every rank raises it.
    queue : UnitQueue
        Rank 0 only: what to run, in which order.
    on_results : callable, optional
        Rank 0 only: ``on_results(rank, [(unit, result, seconds), ...])`` for each
        batch of finished units, called under a lock (journal, progress).
    should_stop : callable, optional
        Rank 0 only: when it returns true no further unit is handed out (signals,
        time limits); units in hand finish.
    poll_hook : callable, optional
        Called on every rank between units (e.g. to notice signals).
    threaded : bool, optional
        Force the dispatcher thread on or off (default: on when MPI allows).
    dispatch : {"auto", "flat", "hierarchical"}, optional
        Same on every rank; :mod:`hpcml.cv.hierarchy` (``HPCML_DISPATCH`` wins when set).

    Returns
    -------
    ScheduleReport
        On rank 0 with ``results`` (unit -> result); ``busy`` is per rank.

    Raises
    ------
    BaseException
        The first exception raised by ``work`` on any rank, on every rank.
    """
    from hpcml.cv.hierarchy import choose_layout

    comm, layout = comm.Dup(), None
    try:
        start = time.perf_counter()
        layout = choose_layout(comm, dispatch)
        report, error = _run_here(comm, layout, work, queue, on_results, should_stop, poll_hook, threaded)
        report.wall = time.perf_counter() - start
        idle_barrier(comm)
        rank = comm.Get_rank()
        payload = None
        if rank == 0 and error is not None:
            origin = origin_of(error)
            payload = PackedException(error, origin.rank or 0, origin.host or HOST)
        payload = comm.bcast(payload, root=0)
        report.busy = comm.bcast(report.busy if rank == 0 else None, root=0)
        report.stopped = comm.bcast(report.stopped, root=0)
        if payload is not None:
            # Every rank raises the same error (entry points need not Abort): the
            # rank it came from its own exception object, the others a copy of
            # the same type (hpcml.comm.PackedException).
            if error is not None and (rank == 0 or payload.rank == rank):
                raised = error
                mark_origin(raised, payload.rank, payload.host, payload.traceback)
            else:
                raised = payload.unpack()
            mark_agreed(raised)
            raise raised
        return report
    finally:
        if layout is not None:
            layout.free()
        comm.Free()


def _run_here(comm, layout, work, queue, on_results, should_stop, poll_hook, threaded):  # noqa: ANN001, ANN202
    """Run this rank's part of :func:`run_units`: hierarchical (``layout``), or flat dispatcher or worker."""
    from mpi4py import MPI

    from hpcml.cv.hierarchy import run_hierarchical

    if layout is not None:
        return run_hierarchical(comm, layout, work, queue, on_results, should_stop, poll_hook)
    if comm.Get_rank() == 0:
        return _run_root(comm, work, queue, on_results, should_stop, poll_hook, threaded, MPI)
    return _run_worker(comm, work, poll_hook)


def _run_root(comm, work, queue, on_results, should_stop, poll_hook, threaded, MPI):  # noqa: ANN001, ANN202
    assert queue is not None, "rank 0 needs the queue"
    dispatcher = _Dispatcher(comm, queue, on_results, should_stop)
    size = comm.Get_size()
    if threaded is None:
        threaded = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    threaded = threaded and size > 1
    dispatcher.report.inline_dispatch = size > 1 and not threaded
    thread = None
    switch_interval = sys.getswitchinterval()
    if threaded:
        # The dispatcher needs the GIL for a moment per request; with the
        # default 5 ms switch interval a worker waits ~15 ms per request while
        # rank 0 runs Python code (benchmarks/bench_dispatch.py).
        sys.setswitchinterval(min(switch_interval, 5e-4))
        thread = threading.Thread(target=dispatcher.serve_until_done, name="hpcml-dispatch", daemon=True)
        thread.start()

    poll = _Poll(poll_hook) if poll_hook is not None else None

    def poll_root() -> None:
        if poll is not None and poll.failure is None:
            poll()
            if poll.failure is not None:  # the hook raised outside a unit: the run's error
                dispatcher.fail(0, poll.failure)

    def stop_requested() -> bool:
        poll_root()
        if not threaded and size > 1:
            while dispatcher.poll():
                pass
        with dispatcher.lock:
            dispatcher._check_stop()
            return dispatcher.stopping

    def stop_bound() -> int | None:
        with dispatcher.lock:
            return dispatcher.stop_bound()

    try:
        idle = Backoff()
        while True:
            batch = dispatcher.take()
            if not batch:
                if dispatcher.pending() and not stop_requested():
                    idle.sleep()  # a dynamic queue: results still to come may bring units
                    continue
                break
            idle.reset()
            items, error = _run_local(work, batch, stop_requested, stop_bound)
            if items:
                dispatcher.record(0, items)
            if error is not None:
                dispatcher.fail(0, error)
                break
    except BaseException as exc:  # noqa: BLE001 - e.g. on_results raised: stop the run, every rank raises it
        _keep_traceback(exc)
        dispatcher.fail(0, exc)
    if thread is not None:
        while thread.is_alive():
            thread.join(timeout=0.05)
            poll_root()
        sys.setswitchinterval(switch_interval)
    elif size > 1:
        dispatcher.serve_until_done()
    error = dispatcher.error[1] if dispatcher.error else None
    return dispatcher.report, error


class _Poll:
    """A rank's poll hook, made safe for the dispatch protocol.

    An exception the hook raises outside a unit (while waiting for a reply,
    between units) must not leave the protocol: the other ranks would wait for
    this rank forever.  It is kept as :attr:`failure`, the hook is not called
    again, and the rank reports the failure to rank 0 like a unit's error, so
    that every rank raises it.
    """

    def __init__(self, hook: Callable[[], None]) -> None:
        self.hook = hook
        self.failure: BaseException | None = None

    def __call__(self) -> None:
        if self.failure is not None:
            return
        try:
            self.hook()
        except BaseException as exc:  # noqa: BLE001 - reported to rank 0, raised on every rank
            _keep_traceback(exc)
            self.failure = exc


class _Worker:
    """A worker rank's side of the flat dispatch protocol: request, reply, run the batch, report.

    Every request gets exactly one reply.  A request sent while a batch is
    still to be run ("holding") asks for the next one early (prefetch); it is
    answered WORK or WAIT, never DONE, so a worker is released only once it
    has reported everything, its own error included.
    """

    def __init__(self, comm: MPI.Intracomm, work: Callable[[int], Any], poll_hook: Any, rank: int | None) -> None:
        self.comm = comm
        self.work = work
        self.poll = _Poll(poll_hook) if poll_hook is not None else None
        self.rank = comm.Get_rank() if rank is None else rank  # the run's rank (errors name it) if comm is a node's
        self.report = ScheduleReport()
        self.backoff = Backoff()
        self.stopped = False
        self.bound: int | None = None  # from rank 0's STOP: units in hand below it still run
        self.own_error: BaseException | None = None  # the error this rank reported, re-raised as itself

    def failure(self) -> BaseException | None:
        """The poll hook's exception, if it raised (then no further unit runs here)."""
        return self.poll.failure if self.poll is not None else None

    def stop_requested(self) -> bool:
        """Between units: whether rank 0 sent STOP (or this rank's poll hook failed)."""
        if self.poll is not None:
            self.poll()
        if not self.stopped and self.comm.Iprobe(source=0, tag=Tag.STOP):
            self.bound = self.comm.recv(source=0, tag=Tag.STOP)
            self.stopped = True
        return self.stopped or self.failure() is not None

    def stop_bound(self) -> int | None:
        """Units in hand below this still run after the stop (None once this rank's poll hook failed)."""
        return None if self.failure() is not None else self.bound

    def still_runs(self, units: list[int], error: BaseException | None) -> list[int]:
        """Of a batch received while this rank's last batch ran: what still runs after a stop or an error."""
        if self.failure() is not None:
            return []
        stopped = self.stop_requested()
        return [
            u
            for u in units
            if (error is None or _below(u, _unit_of(error))) and (not stopped or _below(u, self.stop_bound()))
        ]

    def request(self, items: list[tuple[int, Any, float]], error: BaseException | None, holding: bool) -> None:
        """Send this rank's results (and its error, once) and ask for work."""
        from mpi4py import MPI

        if error is None and self.own_error is None:
            error = self.failure()
        if error is not None and (self.own_error is None or _below(_unit_of(error), _unit_of(self.own_error))):
            self.own_error = error  # a unit in hand before the first failing one failed too
        payload = PackedException(error, self.rank, HOST) if error is not None else None
        try:
            self.comm.send((items, payload, holding), dest=0, tag=Tag.REQUEST)  # the fast path: plain pickle
            return
        except MPI.Exception:
            raise
        except Exception as first:  # noqa: BLE001 - a result plain pickle cannot serialise; nothing was sent
            try:
                message: tuple[Any, ...] = (ByValue(items), payload, holding)
            except Exception as second:  # noqa: BLE001 - report it as this rank's error instead
                failure = unsendable(f"the results of rank {self.rank}", first, second)
                mark_origin(failure, self.rank, HOST)
                self.own_error = self.own_error or failure
                message = ([], payload or PackedException(failure, self.rank, HOST), holding)
        self.comm.send(message, dest=0, tag=Tag.REQUEST)

    def reply(self) -> tuple[Reply, list[int], bool]:
        """Wait for rank 0's answer to the request outstanding (polling the hook meanwhile)."""
        self.backoff.reset()
        while not self.comm.Iprobe(source=0, tag=Tag.WORK):
            if self.poll is not None:
                self.poll()
            self.backoff.sleep()
        return self.comm.recv(source=0, tag=Tag.WORK)

    def run(self) -> tuple[ScheduleReport, BaseException | None]:
        """The request/reply loop until rank 0 answers DONE; returns the report and this rank's error."""
        in_hand: list[int] | None = None
        idle = Backoff()
        self.request([], None, holding=False)
        while True:
            if in_hand is None:
                kind, batch, stop_sent = self.reply()
                if kind == Reply.DONE:
                    if stop_sent and not self.stopped:
                        self.comm.recv(source=0, tag=Tag.STOP)
                    break
                if kind != Reply.WORK:  # WAIT without a batch in hand: a dynamic queue has no unit yet
                    idle.sleep()
                    self.request([], None, holding=False)
                    continue
                in_hand = batch
                idle.reset()
                self.request([], None, holding=True)
            batch, in_hand = in_hand, None
            items, error = _run_local(self.work, batch, self.stop_requested, self.stop_bound)
            self.report.messages += 1
            kind, nxt, _ = self.reply()
            if kind == Reply.WORK:
                in_hand = self.still_runs(nxt, error) or None
            self.request(items, error, holding=in_hand is not None)
        return self.report, self.own_error


def _run_worker(comm, work, poll_hook, rank=None):  # noqa: ANN001, ANN202
    """A worker rank's part of :func:`run_units` (also a node's worker in hierarchical dispatch)."""
    return _Worker(comm, work, poll_hook, rank).run()

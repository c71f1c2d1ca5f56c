"""Hierarchical dispatch: rank 0 talks to node leaders, workers talk to their node leader.

The flat protocol of :mod:`hpcml.cv.schedule` costs rank 0 one request per
batch of every rank; at 16,384 ranks of 1 s units its dispatcher saturates
(docs/scaling.md).  Here the ranks of a node (``COMM_TYPE_SHARED``) form a
*node* communicator whose local rank 0 is the node *leader*; the leaders form a
*leader* communicator whose rank 0 is the global rank 0.

* Inside a node the flat protocol runs unchanged: the leader runs a
  :class:`~hpcml.cv.schedule._Dispatcher` (dispatcher thread, prefetch,
  ``STOP``) over a sub-queue (:class:`_Relay`); the other ranks of the node are
  plain :func:`~hpcml.cv.schedule._run_worker` workers.
* Once half its sub-queue is handed out the leader asks rank 0 for ``node
  size`` batches at once (``REQUEST`` with ``want``) without waiting for the
  answer (one request in flight; it waits only when the sub-queue is empty),
  carrying every result its node finished since its last request; rank 0
  answers ``WORK`` with ``(batches, more)`` (``more``: whether the queue may
  still give units).  A leader also sends its results when they are older
  than :data:`FLUSH_SECONDS`, so that the journal stays current.  Once its node is finished it sends a *final*
  request (``want = None``) with the rest of its results and its error, and is
  released with ``DONE``.
* Rank 0 is the leader of its own node: its sub-queue takes from the real
  :class:`~hpcml.cv.schedule.UnitQueue` in-process; one thread answers both
  its node's workers and the other leaders.
* ``STOP`` (signal, time limit, error) goes from rank 0 to the leaders and from
  each leader to its workers; units in hand finish and their results reach
  rank 0's ``on_results`` in the final requests.  An error on any rank stops
  its node and reaches rank 0 with the final request; rank 0 stops the others
  and every rank raises it (:func:`~hpcml.cv.schedule.run_units`).  Of several
  failing units the earliest one's error wins, as in flat dispatch
  (``_Dispatcher._keep``): ``STOP`` carries its index, and units a node holds
  below it (in hand, prefetched, or in the leader's sub-queue) still run.

Leaders make MPI calls from two threads, so the mode needs
``MPI_THREAD_MULTIPLE``; without it :func:`choose_layout` falls back to flat.
Selection: ``[run] dispatch`` or ``HPCML_DISPATCH`` (which wins when set):
``flat``, ``hierarchical`` or ``auto`` (hierarchical from
:data:`AUTO_MIN_NODES` nodes on).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpcml import env
from hpcml.comm import HOST, Backoff, ByValue, PackedException, describe, mark_origin, origin_of, unsendable
from hpcml.cv.schedule import (
    PREFETCH_MAX_SECONDS,
    Reply,
    ScheduleReport,
    Tag,
    _Dispatcher,
    _keep_traceback,
    _Poll,
    _run_local,
    _run_worker,
    earlier_error,
)
from hpcml.errors import EXIT_FAILURE

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

#: Accepted values of ``[run] dispatch`` / ``HPCML_DISPATCH``.
DISPATCH_MODES = ("auto", "flat", "hierarchical")

#: ``auto`` turns hierarchical from this many nodes on.  benchmarks/scale_model.py:
#: flat dispatch of 1 s units keeps >= 0.9 efficiency up to 2,048 ranks and
#: falls to 0.28 at 16,384 (rank 0 saturates at ~1 / 100 us = 10,000 requests
#: per second); with 32 to 128 ranks per node 64 nodes is 2,048 to 8,192 ranks,
#: where hierarchical is already at least as good, and below it the leader's
#: extra hop (and its batch held back from idle ranks of other nodes) buys nothing.
AUTO_MIN_NODES = 64

#: A leader sends the results its node finished to rank 0 at the latest this
#: long after the first of them (with its next exchange), so that the journal
#: and the progress lines stay current while the sub-queue lasts.
FLUSH_SECONDS = 1.0


def requested_mode(configured: str | None = None) -> str:
    """The dispatch mode asked for: ``HPCML_DISPATCH`` when set, else ``configured``, else ``auto``.

    Raises
    ------
    ValueError
        The value is not one of :data:`DISPATCH_MODES`.
    """
    mode = os.environ.get(env.DISPATCH, "").strip().lower() or (configured or "auto")
    if mode not in DISPATCH_MODES:
        raise ValueError(f"dispatch must be one of {', '.join(DISPATCH_MODES)}, got {mode!r}")
    return mode


class NodeResults:
    """An ``on_results`` callback that also takes a node leader's whole message at once.

    Parameters
    ----------
    many : callable
        ``many([(rank, [(unit, result, seconds), ...]), ...])``; calling the
        object as ``on_results(rank, items)`` is ``many([(rank, items)])``.
    """

    def __init__(self, many: Callable[[list[tuple[int, list[tuple[int, Any, float]]]]], None]) -> None:
        self.many = many

    def __call__(self, rank: int, items: list[tuple[int, Any, float]]) -> None:
        """``on_results(rank, items)``: one rank's batch."""
        self.many([(rank, items)])


@dataclass
class Layout:
    """The communicators of hierarchical dispatch, on one rank."""

    node: MPI.Intracomm
    lead: MPI.Intracomm | None  # leaders only
    ranks: list[int]  # global rank of each local rank of this node

    def free(self) -> None:
        """Free the communicators (collective over each)."""
        if self.lead is not None:
            self.lead.Free()
        self.node.Free()


def choose_layout(comm: MPI.Intracomm, configured: str | None = None) -> Layout | None:
    """The layout of hierarchical dispatch, or None for flat dispatch.  Collective over ``comm``.

    The answer is the same on every rank: it depends on the mode asked for
    (:func:`requested_mode`, the same environment everywhere), the thread level
    and the number of nodes.
    """
    from mpi4py import MPI

    from hpcml.comm.resolve import node_comm

    mode = requested_mode(configured)
    size = comm.Get_size()
    if mode == "flat" or size == 1 or (mode == "auto" and size < AUTO_MIN_NODES):
        return None
    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        return None
    node = node_comm(comm)
    leader = node.Get_rank() == 0
    n_nodes = comm.allreduce(int(leader))
    if mode == "auto" and n_nodes < AUTO_MIN_NODES:
        node.Free()
        return None
    lead = comm.Split(0 if leader else MPI.UNDEFINED, key=comm.Get_rank())
    lead = None if lead == MPI.COMM_NULL else lead
    ranks = node.allgather(comm.Get_rank())
    return Layout(node=node, lead=lead, ranks=ranks)


class _Relay:
    """A leader's sub-queue: batches granted by rank 0, handed to its node's ranks one at a time.

    Quacks like :class:`~hpcml.cv.schedule.UnitQueue` for the node's
    :class:`~hpcml.cv.schedule._Dispatcher`; every call is made under that
    dispatcher's lock.
    """

    def __init__(self, upstream: _Upstream, want: int) -> None:
        self.upstream = upstream
        self.want = max(1, want)
        self.buffer: deque[list[int]] = deque()
        self.more = True
        self.cleared = False
        self.bound: int | None = None  # once cleared: units below it are still held (see clear)
        self.expired = False
        upstream.relay = self
        self._sum = 0.0
        self._n = 0

    def __len__(self) -> int:
        return sum(len(batch) for batch in self.buffer)

    def take(self) -> list[int]:
        self.upstream.top_up()
        return self.buffer.popleft() if self.buffer else []

    def receive(self, batches: list[list[int]], more: bool) -> None:
        """Batches granted by rank 0 (once the node stops: only their units below the bound)."""
        if not self.cleared:
            self.buffer.extend(batches)
            self.more = more
        elif self.bound is not None:
            self.buffer.extend(kept for kept in ([u for u in b if u < self.bound] for b in batches) if kept)

    def held(self, bound: int | None) -> list[int]:
        """After the stop: the next batch of held units below ``bound`` (they still run), or []."""
        while self.buffer and bound is not None:
            batch = [u for u in self.buffer.popleft() if u < bound]
            if batch:
                return batch
        self.buffer.clear()
        return []

    def pending(self) -> bool:
        return self.more

    def record(self, unit: int, seconds: float) -> None:
        self._sum += seconds
        self._n += 1

    def mean_cost(self) -> float | None:
        return self._sum / self._n if self._n else None

    def clear(self, bound: int | None = None) -> None:
        """The node stops: drop the sub-queue, but for units below ``bound`` (a failing unit's index).

        Batches a node holds count as in hand: as in flat dispatch, where units
        in hand below the earliest failing unit still run, they may hold a unit
        that scikit-learn's serial loop would have run (and seen fail) first.
        """
        self.bound = bound if self.bound is None or bound is None else min(self.bound, bound)
        if bound is None:
            self.buffer.clear()
        else:
            self.buffer = deque(kept for kept in ([u for u in b if u < self.bound] for b in self.buffer) if kept)
        self.more = False
        self.cleared = True


class _Upstream:
    """How a leader reaches rank 0's queue (base: rank 0 itself, in-process)."""

    def __init__(self, root: _RootDispatcher | None) -> None:
        self.root = root
        self.relay: _Relay | None = None

    def top_up(self) -> None:
        """Refill the relay's sub-queue when it is empty (rank 0: straight from the queue)."""
        relay = self.relay
        assert self.root is not None and relay is not None
        if not relay.buffer and relay.more:
            relay.receive(*self.root.grant(relay.want))

    def add(self, rank: int, items: list[tuple[int, Any, float]]) -> None:
        assert self.root is not None
        _Dispatcher.record(self.root, rank, items)

    def should_stop(self) -> bool:
        assert self.root is not None
        with self.root.lock:
            self.root._check_stop()
            return self.root.stopping

    def stop_bound(self) -> int | None:
        """Rank 0's stop bound: units held below it still run."""
        assert self.root is not None
        with self.root.lock:
            return self.root.stop_bound()

    def fail(self, error: BaseException) -> None:
        assert self.root is not None
        self.root.fail(origin_of(error).rank or 0, error)

    def finish(self) -> BaseException | None:
        return None


class _Remote(_Upstream):
    """A leader other than rank 0: exchanges over the leader communicator."""

    def __init__(self, lead: MPI.Intracomm, rank: int) -> None:
        super().__init__(None)
        self.lead = lead
        self.rank = rank  # global
        self.results: list[tuple[int, list[tuple[int, Any, float]]]] = []
        self.error: BaseException | None = None
        self.own_error: BaseException | None = None
        self.stopped = False
        self.bound: int | None = None  # from rank 0's STOP
        self.oldest: float | None = None
        self.messages = 0
        self.outstanding = False  # a request whose reply has not been received yet

    def add(self, rank: int, items: list[tuple[int, Any, float]]) -> None:
        self.results.append((rank, items))
        if self.oldest is None:
            self.oldest = time.monotonic()
        self._absorb(block=False)
        if not self.outstanding and time.monotonic() - self.oldest > FLUSH_SECONDS:
            relay = self.relay
            low = relay is not None and relay.more and len(relay.buffer) <= relay.want // 2
            self._send(relay.want if low and relay is not None else 0)  # the reply is taken in passing

    def top_up(self) -> None:
        """Ask rank 0 for more once half the sub-queue is used up, without waiting; wait only when it is empty.

        At most one request is in flight, so every reply is matched to the one request it answers.
        """
        relay = self.relay
        assert relay is not None
        self._absorb(block=False)
        if relay.more and not self.outstanding and len(relay.buffer) <= relay.want // 2:
            self._send(relay.want)
        if not relay.buffer and self.outstanding:
            self._absorb(block=True)
            if not relay.buffer and relay.more and not self.outstanding:  # that was a flush: ask once more
                self._send(relay.want)
                self._absorb(block=True)

    def _absorb(self, block: bool) -> None:
        """Take the reply to the request in flight, if any (waiting for it when ``block``)."""
        if not self.outstanding or (not block and not self.lead.Iprobe(source=0, tag=Tag.WORK)):
            return
        kind, payload, _ = self._reply()
        self.outstanding = False
        if kind == Reply.WORK and self.relay is not None:
            self.relay.receive(*payload)
        # WAIT: rank 0 could not handle the request (the run is stopping); the next take asks again

    def should_stop(self) -> bool:
        if not self.stopped and self.lead.Iprobe(source=0, tag=Tag.STOP):
            self.bound = self.lead.recv(source=0, tag=Tag.STOP)
            self.stopped = True
        return self.stopped

    def stop_bound(self) -> int | None:
        """The bound rank 0's STOP carried: units held below it still run (None: none does)."""
        return self.bound

    def fail(self, error: BaseException) -> None:
        if earlier_error(self.error, error):  # an error already sent to rank 0 is None here again
            self.error = error

    def finish(self) -> BaseException | None:
        """Send the last results and the node's error; wait until rank 0 releases this leader."""
        self._absorb(block=True)
        while True:
            self._send(None)
            kind, _, stop_sent = self._reply()
            if kind == Reply.DONE:
                if stop_sent and not self.stopped:
                    self.lead.recv(source=0, tag=Tag.STOP)
                return self.own_error

    def _send(self, want: int | None) -> None:
        from mpi4py import MPI

        results, self.results, self.oldest = self.results, [], None
        error, self.error = self.error, None
        payload = None
        if error is not None:
            origin = origin_of(error)
            payload = PackedException(error, origin.rank if origin.rank is not None else self.rank, origin.host or HOST)
        self.messages += 1
        self.outstanding = want is not None
        try:
            self.lead.send((results, payload, want), dest=0, tag=Tag.REQUEST)
            return
        except MPI.Exception:
            raise
        except Exception as first:  # noqa: BLE001 - a result plain pickle cannot serialise; nothing was sent
            try:
                message: tuple[Any, ...] = (ByValue(results), payload, want)
            except Exception as second:  # noqa: BLE001 - report it as this leader's error instead
                failure = unsendable(f"the results of the node of rank {self.rank}", first, second)
                mark_origin(failure, self.rank, HOST)
                self.own_error = self.own_error or failure
                message = ([], payload or PackedException(failure, self.rank, HOST), want)
        self.lead.send(message, dest=0, tag=Tag.REQUEST)

    def _reply(self) -> tuple[Reply, Any, bool]:
        backoff = Backoff()
        while not self.lead.Iprobe(source=0, tag=Tag.WORK):
            backoff.sleep()
        return self.lead.recv(source=0, tag=Tag.WORK)


class _RootDispatcher(_Dispatcher):
    """Rank 0's dispatcher of the leader communicator: grants batches to whole nodes."""

    def __init__(self, lead, queue, on_results, should_stop, world_size) -> None:  # noqa: ANN001
        super().__init__(lead, queue, on_results, should_stop)
        self.report = ScheduleReport(busy=[0.0] * world_size, units_done=[0] * world_size)

    def record(self, source: int, items: Any) -> None:
        """Record a leader's results: ``[(global rank, [(unit, result, seconds), ...]), ...]``.

        An ``on_results`` with a ``many`` method (:class:`NodeResults`) gets the
        whole message in one call (one journal write per node message, not per
        rank's batch); any other callable gets one call per rank's batch.
        """
        many = getattr(self.on_results, "many", None)
        if many is None:
            for rank, part in items:
                _Dispatcher.record(self, rank, part)
            return
        with self.lock:
            for rank, part in items:
                for unit, result, seconds in part:
                    self.queue.record(unit, seconds)
                    self.report.results[unit] = result
                    self.report.busy[rank] += seconds
                    self.report.units_done[rank] += 1
            many(items)

    def grant(self, want: int) -> tuple[list[list[int]], bool]:
        """Up to ``want`` batches, and whether the queue may still give units afterwards.

        Near the end a node gets no more than its ranks' share of the units
        left (``left * want / ranks``, at least one batch): a batch held by a
        leader cannot go to an idle rank of another node.
        """
        with self.lock:
            share = math.ceil(len(self.queue) * want / len(self.report.busy))
        batches: list[list[int]] = []
        granted = 0
        while len(batches) < want and (not batches or granted < share):
            batch = self.take()
            if not batch:
                break
            batches.append(batch)
            granted += len(batch)
        with self.lock:
            left = not self.stopping and len(self.queue) > 0
        return batches, left or self.pending()

    def _answer(self, source: int, holding: Any) -> tuple[Reply, Any]:
        if holding is None:  # the leader's final request
            self.active.discard(source)
            return (Reply.DONE, [])
        return (Reply.WORK, self.grant(holding))


class _NodeDispatcher(_Dispatcher):
    """A leader's dispatcher of its node communicator, over a :class:`_Relay`."""

    def __init__(self, node, relay, ranks) -> None:  # noqa: ANN001
        super().__init__(node, relay, None, relay.upstream.should_stop)
        self.upstream: _Upstream = relay.upstream
        self.ranks = ranks

    def record(self, rank: int, items: list[tuple[int, Any, float]]) -> None:
        with self.lock:
            for unit, _, seconds in items:
                self.queue.record(unit, seconds)
                self.report.busy[rank] += seconds
                self.report.units_done[rank] += 1
            self.upstream.add(self.ranks[rank], items)

    def fail(self, rank: int, error: BaseException) -> None:
        """Flat dispatch's rule (:meth:`~hpcml.cv.schedule._Dispatcher._keep`); the node's earliest error goes up."""
        if rank == 0:
            mark_origin(error, self.ranks[0], HOST)
        with self.lock:
            kept = self._keep(rank, error)
        if kept:
            self.upstream.fail(error)

    def take(self) -> list[int]:
        """As the flat dispatcher's, but after the stop the held units below the bound are still handed out."""
        with self.lock:
            self._check_stop()
            if self.stopping:
                return self.queue.held(self.stop_bound())
            return self.queue.take()

    def _check_stop(self) -> None:
        if not self.stopping and self.should_stop():  # rank 0 stopped the run: its bound holds here too
            self._stop_at(self.upstream.stop_bound())

    def _stop(self) -> None:
        self.stopping = True
        self.report.stopped = True
        self.queue.clear(self.stop_bound())

    def prefetch_ok(self) -> bool:
        """As in flat dispatch: only batches of short units go to a rank that is still busy."""
        with self.lock:
            if self.stopping:
                return True
            cost = self.queue.mean_cost()
            return cost is not None and cost <= PREFETCH_MAX_SECONDS


def run_hierarchical(comm, layout, work, queue, on_results, should_stop, poll_hook):  # noqa: ANN001, ANN201
    """Run one rank's part of :func:`~hpcml.cv.schedule.run_units` in hierarchical mode.

    Returns
    -------
    (ScheduleReport, BaseException or None)
        As ``_run_root`` / ``_run_worker``: on rank 0 the report of the whole
        run and the run's error; elsewhere the error this rank raised itself.
    """
    rank = comm.Get_rank()
    if layout.node.Get_rank() != 0:
        report, error = _run_worker(layout.node, work, poll_hook, rank=rank)
        report.dispatch = "hierarchical"
        return report, error
    root = None
    if rank == 0:
        assert queue is not None, "rank 0 needs the queue"
        root = _RootDispatcher(layout.lead, queue, on_results, should_stop, comm.Get_size())
        upstream: _Upstream = _Upstream(root)
    else:
        upstream = _Remote(layout.lead, rank)
    node = _NodeDispatcher(layout.node, _Relay(upstream, layout.node.Get_size()), layout.ranks)
    _run_leader(comm, node, root, work, poll_hook)
    if root is None:
        try:
            own = upstream.finish()
        except Exception as exc:  # noqa: BLE001 - MPI failed: end every rank rather than let rank 0 wait
            _abort(comm, exc)
        error = node.error[1] if node.error else None
        if error is not None and origin_of(error).rank != rank:
            error = None
        node.report.messages += upstream.messages
        node.report.dispatch = "hierarchical"
        return node.report, error or own
    root.report.messages += node.report.messages
    root.report.inline_dispatch = False
    root.report.dispatch = "hierarchical"
    return root.report, (root.error[1] if root.error else None)


def _run_leader(comm, node, root, work, poll_hook) -> None:  # noqa: ANN001
    """Run units on a leader while a thread answers its node's workers (and, on rank 0, the leaders)."""
    thread = threading.Thread(target=_serve, args=(comm, node, root), name="hpcml-dispatch", daemon=True)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, 5e-4))  # as schedule._run_root
    thread.start()

    poll = _Poll(poll_hook) if poll_hook is not None else None

    def poll_node() -> None:
        if poll is not None and poll.failure is None:
            poll()
            if poll.failure is not None:  # the hook raised outside a unit: the run's error (as schedule._run_root)
                node.fail(0, poll.failure)

    def stop_requested() -> bool:
        poll_node()
        with node.lock:
            node._check_stop()
            return node.stopping

    def stop_bound() -> int | None:
        with node.lock:
            return node.stop_bound()

    try:
        idle = Backoff()
        while True:
            batch = node.take()
            if not batch:
                if node.pending() and not stop_requested():
                    idle.sleep()
                    continue
                break
            idle.reset()
            items, error = _run_local(work, batch, stop_requested, stop_bound)
            if items:
                node.record(0, items)
            if error is not None:
                node.fail(0, error)
                break
    except BaseException as exc:  # noqa: BLE001 - stop the run, every rank raises it
        _keep_traceback(exc)
        node.fail(0, exc)
    while thread.is_alive():
        thread.join(timeout=0.05)
        poll_node()
    sys.setswitchinterval(switch_interval)


def _serve(comm, node, root) -> None:  # noqa: ANN001
    """Answer the node's workers and (rank 0) the other leaders until all of them are released."""
    backoff = Backoff()
    while node.active or (root is not None and root.active):
        served = False
        try:
            if node.active:
                served = node.poll()
            if root is not None and root.active:
                served = root.poll() or served
        except Exception as exc:  # noqa: BLE001 - poll answers what it received: MPI itself failed
            _abort(comm, exc)
        if served:
            backoff.reset()
        else:
            backoff.sleep()


def _abort(comm, exc: BaseException) -> None:  # noqa: ANN001
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(
        f"hpcml: error: rank {comm.Get_rank()} on {HOST}: hierarchical dispatch failed ({describe(exc)}); "
        "ending every rank",
        file=sys.stderr,
        flush=True,
    )
    comm.Abort(EXIT_FAILURE)


__all__ = [
    "AUTO_MIN_NODES",
    "DISPATCH_MODES",
    "FLUSH_SECONDS",
    "Layout",
    "NodeResults",
    "choose_layout",
    "requested_mode",
]

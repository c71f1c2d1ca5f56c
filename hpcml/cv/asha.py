"""Asynchronous successive halving (ASHA): the promotion rule and its dynamic work source.

Pure bookkeeping, no MPI: :class:`AshaRule` is the rule of Li et al., "A System
for Massively Parallel Hyperparameter Tuning" (MLSys 2020, Algorithm 2), fed
with the cross-validated scores of finished (candidate, rung) jobs;
:class:`AshaQueue` turns its decisions into units for
:func:`hpcml.cv.schedule.run_units` (a queue that grows while the run goes on).

The rule, for a worker that asks for a job: look at the rungs from the
second-highest down to the bottom; in rung ``k``, rank the candidates whose
every fold at that rung has finished (best mean test score first, failed and
NaN scores last, ties by candidate number); the first ``floor(n_k / factor)``
of them are the rung's top; promote the best of those not promoted yet to rung
``k + 1``.  If no rung can promote, start the next candidate at rung 0; if every
candidate has started, there is nothing to do until a result arrives.  A
candidate whose fit failed on any fold of a rung (``fit_error``), or whose mean
score is NaN, is never promoted.

Every decision is logged (:attr:`AshaRule.log`) with a summary of what it
saw (jobs finished at the source rung, the top's size, the promoted job's
position and score, the top's cutoff score), and every finished job is an
event (the log is ordered, so the finish events before a decision are exactly
the scores it saw), so a run can be replayed: feed the same events
in the same order and the rule makes the same decisions (:meth:`AshaRule.replay`).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Job:
    """One (candidate, rung) to evaluate on every split."""

    candidate: int
    rung: int


@dataclass
class AshaRule:
    """The ASHA promotion rule over a finite list of candidates.

    Parameters
    ----------
    n_candidates : int
        Candidates, started in order 0, 1, ... at rung 0.
    n_rungs : int
        Rungs 0 .. n_rungs - 1; the top rung promotes no further.
    factor : float
        Keep the top ``1 / factor`` of each rung (``floor(n_k / factor)`` of
        the ``n_k`` finished there).
    """

    n_candidates: int
    n_rungs: int
    factor: float
    #: rung -> {candidate: (mean score, failed)} of finished jobs
    finished: list[dict[int, tuple[float, bool]]] = field(default_factory=list)
    #: rung -> candidates promoted from it
    promoted: list[set[int]] = field(default_factory=list)
    #: jobs decided and not finished yet
    running: set[Job] = field(default_factory=set)
    next_new: int = 0
    #: decisions and finished jobs, in order (see the module docstring)
    log: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.finished = [{} for _ in range(self.n_rungs)]
        self.promoted = [set() for _ in range(self.n_rungs)]
        # Per rung, sorted rank keys (see _rank_key) of every finished job, and of
        # the finished, not failed, not yet promoted ones: a decision costs
        # O(rungs log n) instead of sorting a rung (rank 0 decides under the
        # dispatcher's lock, for thousands of candidates).
        self._ranked: list[list[tuple[int, float, int]]] = [[] for _ in range(self.n_rungs)]
        self._open: list[list[tuple[int, float, int]]] = [[] for _ in range(self.n_rungs)]

    def top(self, rung: int) -> list[int]:
        """The candidates of ``rung``'s top ``floor(n / factor)`` (not failed), best first."""
        ranked = self._ranked[rung][: self._n_top(rung)]
        return [key[2] for key in ranked if not key[0]]

    def _n_top(self, rung: int) -> int:
        return math.floor(len(self._ranked[rung]) / self.factor + 1e-9)

    def _promotable(self, rung: int) -> int | None:
        """The best finished, not failed, not promoted candidate of ``rung`` if it is in the top, else None.

        Every job ranked above it is promoted, so it is the rule's choice exactly
        when its position is below ``floor(n / factor)``.
        """
        open_ = self._open[rung]
        if open_ and bisect.bisect_left(self._ranked[rung], open_[0]) < self._n_top(rung):
            return open_[0][2]
        return None

    def next_job(self) -> Job | None:
        """Decide the next job (and log it), or ``None`` if none can start now."""
        for rung in range(self.n_rungs - 2, -1, -1):
            cand = self._promotable(rung)
            if cand is not None:
                self._open[rung].pop(0)
                self.promoted[rung].add(cand)
                job = Job(cand, rung + 1)
                self._decide(job, "promote", rung)
                return job
        if self.next_new < self.n_candidates:
            job = Job(self.next_new, 0)
            self.next_new += 1
            self._decide(job, "start", None)
            return job
        return None

    def _decide(self, job: Job, decision: str, source: int | None) -> None:
        self.running.add(job)
        event: dict[str, Any] = {"event": "decide", "decision": decision, "candidate": job.candidate, "rung": job.rung}
        if source is not None:
            # The evidence, in constant size: which jobs had finished at the source rung
            # is given by the finish events before this one (the log is ordered).
            ranked = self._ranked[source]
            n_top = self._n_top(source)
            position = bisect.bisect_left(ranked, _rank_key(job.candidate, *self.finished[source][job.candidate]))
            event["seen"] = {
                "finished": len(ranked),
                "top": n_top,
                "position": position,
                "score": _json_score(*self.finished[source][job.candidate]),
                "cutoff": _json_score(-ranked[n_top - 1][1], bool(ranked[n_top - 1][0])),
            }
        self.log.append(event)

    def finish(self, job: Job, score: float, failed: bool, seconds: float | None = None) -> None:
        """Record the mean score of a finished job (``failed``: a fold's fit raised).

        ``seconds`` (since the run started, rank 0's clock) is logged for reports
        only; replaying a log ignores it.
        """
        self.running.discard(job)
        self.finished[job.rung][job.candidate] = (float(score), bool(failed))
        key = _rank_key(job.candidate, float(score), bool(failed))
        bisect.insort(self._ranked[job.rung], key)
        if not key[0] and job.rung < self.n_rungs - 1 and job.candidate not in self.promoted[job.rung]:
            bisect.insort(self._open[job.rung], key)
        event = {"event": "finish", "candidate": job.candidate, "rung": job.rung, "score": _json_score(score, failed)}
        if seconds is not None:
            event["t"] = round(seconds, 6)
        self.log.append(event)

    @property
    def done(self) -> bool:
        """Whether nothing runs and nothing can be decided any more."""
        if self.running or self.next_new < self.n_candidates:
            return False
        return all(self._promotable(r) is None for r in range(self.n_rungs - 1))

    def occupancy(self) -> list[tuple[int, int]]:
        """Per rung: (finished jobs, running jobs)."""
        running = [0] * self.n_rungs
        for job in self.running:
            running[job.rung] += 1
        return [(len(self.finished[r]), running[r]) for r in range(self.n_rungs)]

    @classmethod
    def replay(cls, n_candidates: int, n_rungs: int, factor: float, log: list[dict[str, Any]]) -> AshaRule:
        """Re-derive a run from its log: every logged decision must be the rule's.

        Raises
        ------
        ValueError
            At the first decision the rule would not have made given the finished
            jobs logged before it.
        """
        rule = cls(n_candidates, n_rungs, factor)
        for i, event in enumerate(log):
            if event["event"] == "finish":
                score, failed = _parse_score(event["score"])
                rule.finish(Job(event["candidate"], event["rung"]), score, failed, event.get("t"))
                continue
            job = rule.next_job()
            want = Job(event["candidate"], event["rung"])
            if job != want or rule.log[-1]["decision"] != event["decision"]:
                raise ValueError(f"decision {i} of the log ({event['decision']} {want}) is not the rule's ({job})")
        return rule


def _rank_key(cand: int, score: float, failed: bool) -> tuple[int, float, int]:
    bad = failed or math.isnan(score)
    return (1 if bad else 0, 0.0 if bad else -score, cand)


def _json_score(score: float, failed: bool) -> Any:
    """A score as JSON can hold it: a number, ``"nan"``/``"inf"`` text, or ``"failed"``."""
    if failed:
        return "failed"
    score = float(score)
    return score if math.isfinite(score) else str(score)


def _parse_score(value: Any) -> tuple[float, bool]:
    if value == "failed":
        return float("nan"), True
    return float(value), False


def job_score(results: list[dict[str, Any]]) -> tuple[float, bool]:
    """Mean test score of a job's per-split results (as ``cv_results_`` computes it) and whether a fit failed."""
    scores = np.asarray([r["test_scores"] for r in results], dtype=float)
    failed = any(r.get("fit_error") is not None for r in results)
    return float(np.average(scores)), failed


@dataclass(frozen=True)
class AshaLayout:
    """Unit numbering of an ASHA run: ``unit = (candidate * n_rungs + rung) * n_splits + split``."""

    n_candidates: int
    n_rungs: int
    n_splits: int

    def unit(self, cand: int, rung: int, split: int) -> int:
        """The unit number of (candidate, rung, split)."""
        return (cand * self.n_rungs + rung) * self.n_splits + split

    def triple(self, unit: int) -> tuple[int, int, int]:
        """(candidate, rung, split) of a unit."""
        job, split = divmod(unit, self.n_splits)
        cand, rung = divmod(job, self.n_rungs)
        return cand, rung, split

    def rung_of(self, unit: int) -> Hashable:
        """Cost group of a unit: its rung (the resource sets the cost)."""
        return self.triple(unit)[1]


class AshaQueue:
    """A growing work source for :func:`hpcml.cv.schedule.run_units` driven by an :class:`AshaRule`.

    When a worker asks for work and no unit is queued, the rule decides the next
    job and its splits are queued.  Results come back through :meth:`add_results`
    (rank 0's ``on_results``); a job is finished, and fed to the rule, once all
    its splits are.  While jobs run and nothing can be decided, :meth:`pending`
    is true and the dispatcher answers ``WAIT`` instead of releasing a worker.

    Parameters
    ----------
    rule : AshaRule
        The rule (possibly restored from a journal).
    layout : AshaLayout
        Unit numbering.
    n_ranks : int
        Ranks taking units (batch shares).
    target_batch_seconds : float
        Intended duration of a batch.
    deadline : float, optional
        ``time.time()`` after which no unit starts that would not finish in time.
    first : list of int, optional
        Units to run before anything is decided (jobs decided before a resume).
    """

    def __init__(
        self,
        rule: AshaRule,
        layout: AshaLayout,
        n_ranks: int,
        target_batch_seconds: float = 0.1,
        deadline: float | None = None,
        first: list[int] | None = None,
    ) -> None:
        from hpcml.cv.schedule import UnitQueue

        self.rule = rule
        self.layout = layout
        self.partial: dict[Job, dict[int, dict[str, Any]]] = {}
        self.started = time.perf_counter()
        self._units = UnitQueue(
            list(first or []),
            [],
            n_ranks,
            group_of=layout.rung_of,
            target_batch_seconds=target_batch_seconds,
            deadline=deadline,
        )
        self.closed = False

    # -- the UnitQueue interface used by the dispatcher -------------------------
    @property
    def expired(self) -> bool:
        """Whether the deadline stopped the queue."""
        return self._units.expired

    def __len__(self) -> int:
        return len(self._units)

    def _head(self) -> deque[int]:
        return self._units._head()

    def cost(self, unit: int) -> float | None:
        """Estimated seconds of ``unit`` (mean of its rung, else of all)."""
        return self._units.cost(unit)

    def record(self, unit: int, seconds: float) -> None:
        """Learn a unit's cost."""
        self._units.record(unit, seconds)

    def clear(self) -> None:
        """Stop: drop queued units and decide nothing more."""
        self.closed = True
        self._units.clear()

    def pending(self) -> bool:
        """Whether work may still appear (jobs run whose results can trigger decisions)."""
        return not self.closed and not self.rule.done

    def take(self) -> list[int]:
        """The next batch; empty when nothing can run now (see :meth:`pending`)."""
        if self.closed:
            return []
        if len(self._units) == 0:
            job = self.rule.next_job()
            if job is None:
                return []
            self._units.first.extend(self.layout.unit(job.candidate, job.rung, s) for s in range(self.layout.n_splits))
        batch = self._units.take()
        if self._units.expired:
            self.closed = True
        return batch

    # -- results -----------------------------------------------------------------
    def add_results(self, items: list[tuple[int, Any, float]]) -> list[Job]:
        """Collect unit results; returns the jobs they finished (already fed to the rule)."""
        finished = []
        for unit, result, _ in items:
            cand, rung, split = self.layout.triple(unit)
            job = Job(cand, rung)
            parts = self.partial.setdefault(job, {})
            parts[split] = result
            if len(parts) == self.layout.n_splits:
                del self.partial[job]
                score, failed = job_score([parts[s] for s in range(self.layout.n_splits)])
                self.rule.finish(job, score, failed, time.perf_counter() - self.started)
                finished.append(job)
        return finished

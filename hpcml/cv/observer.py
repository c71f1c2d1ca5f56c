"""Rank 0's observer of a CLI search: journal, progress, stop snapshot and the grace period.

One object instead of closures in the runner.  :meth:`RunObserver.on_parts`
is handed to :func:`hpcml.cv.engine.evaluate` as ``on_results`` (wrapped in
:class:`hpcml.cv.hierarchy.NodeResults`, so that a node leader's message is one
call; called from rank 0's dispatcher thread or main thread, serialised by a lock).  On the first stop signal the
observer writes ``cv_results.partial.json`` at once from a helper thread (a
launcher's forced abort, such as a second Ctrl-C under MPICH's ``mpiexec``,
then still finds the finished work) and starts the grace timer.

When the grace period ends while the main thread is still inside a fit (C code
that Python cannot interrupt), the only way to end the job in time is
``MPI_Abort`` from the timer thread; it is called only then, after the
journal is synced and the partial results are written.  A signal during the
refit ends the job the same way but says what is true: every unit finished,
``cv_results.json`` is written, only ``best_model.joblib`` is missing
(``--resume`` refits).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from hpcml.cv.accrue import ResultColumns
from hpcml.cv.journal import Journal
from hpcml.cv.progress import Progress, best_so_far_score
from hpcml.errors import EXIT_INCOMPLETE
from hpcml.signals import StopFlag

#: Phases of a run, as the observer reports them.
UNITS, WRITING, REFIT, DONE = "units", "writing", "refit", "done"


#: Seconds between the last message and ``MPI_Abort`` at the end of the grace period.
ABORT_FLUSH_SECONDS = 0.5


class RunObserver:
    """Everything rank 0 does with finished units while a search runs.

    Parameters
    ----------
    journal : Journal
        The run's open journal.
    progress : Progress
        The progress report.
    describe : callable
        ``describe(unit) -> (cand, split, model name, params)``.
    finished : dict
        Unit -> result of units already done (resumed); updated in place.
    write_partial : callable
        ``write_partial(finished)`` writes ``cv_results.partial.json``.
    host_of : list of str
        Host name of each rank.
    metric : str
        The refit metric (for the progress line's best score).
    columns : ResultColumns, optional
        cv_results folded as results arrive (:mod:`hpcml.cv.accrue`); the
        units in ``finished`` (resumed) are folded first, the same way.
    """

    def __init__(
        self,
        journal: Journal,
        progress: Progress,
        describe: Callable[[int], tuple[int, int, str, dict[str, Any]]],
        finished: dict[int, Any],
        write_partial: Callable[[dict[int, Any]], None],
        host_of: list[str],
        metric: str,
        columns: ResultColumns | None = None,
    ) -> None:
        self.journal = journal
        self.progress = progress
        self.describe = describe
        self.finished = finished
        self.write_partial = write_partial
        self.host_of = host_of
        self.metric = metric
        self.phase = UNITS
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.columns = columns
        if columns is not None:
            for unit, result in finished.items():
                columns.add(unit, result)

    def on_results(self, source: int, items: list[tuple[int, Any, float]]) -> None:
        """Journal finished units and update the progress line (the engine's ``on_results``)."""
        self.on_parts([(source, items)])

    def on_parts(self, parts: list[tuple[int, list[tuple[int, Any, float]]]]) -> None:
        """:meth:`on_results` of several ranks' batches at once (a node's message): one journal write for all."""
        records, seen = [], []
        with self._lock:
            for source, (unit, result, seconds) in ((rank, item) for rank, items in parts for item in items):
                cand, split, model, params = self.describe(unit)
                self.finished[unit] = result
                if self.columns is not None:
                    self.columns.add(unit, result)
                records.append(
                    {
                        "unit": unit,
                        "cand": cand,
                        "split": split,
                        "model": model,
                        "params": params,
                        **result,
                        "rank": source,
                        "host": self.host_of[source],
                        "seconds": seconds,
                        "time": time.time(),
                    }
                )
                seen.append((cand, best_so_far_score(result, self.metric), model))
            self.journal.append(records)
            self.progress.update(seen)

    def watch(self, stop: StopFlag, grace: float, total: int, comm: MPI.Intracomm) -> None:
        """On the first signal: snapshot the partial results now, then give running units ``grace`` s."""

        def first_signal() -> None:
            threading.Thread(target=self._snapshot_then_time, args=(stop, grace, total, comm), daemon=True).start()

        stop.on_first(first_signal)

    def _snapshot_then_time(self, stop: StopFlag, grace: float, total: int, comm: MPI.Intracomm) -> None:
        with self._lock:
            if self.phase == UNITS:
                self.journal.sync()
                self.write_partial(dict(self.finished))
            if self.phase == DONE:
                return
            self._timer = threading.Timer(max(grace, 0.0), self._abandon, args=(stop, grace, total, comm))
            self._timer.daemon = True
            self._timer.start()

    def units_over(self) -> None:
        """The units are over (finished or stopped): results are being written (short, never abandoned)."""
        with self._lock:
            if self.phase != DONE:
                self.phase = WRITING
            self.journal.sync()

    def refit_starts(self) -> None:
        """cv_results.json is written and the refit starts: a grace period ending now abandons only the refit."""
        with self._lock:
            if self.phase != DONE:
                self.phase = REFIT

    def close(self) -> None:
        """The run is over: no grace timer may fire any more."""
        with self._lock:
            self.phase = DONE
            if self._timer is not None:
                self._timer.cancel()

    def _abandon(self, stop: StopFlag, grace: float, total: int, comm: MPI.Intracomm) -> None:
        with self._lock:
            if self.phase in (WRITING, DONE):
                return
            if self.phase == UNITS:
                self.journal.sync()
                self.write_partial(dict(self.finished))
                message = (
                    f"{len(self.finished)}/{total} units finished; units still running after the "
                    f"{grace:g} s grace period are lost; continue with --resume"
                )
            else:
                message = (
                    f"all {total} units finished (cv_results.json written); the refit of the best "
                    f"candidate did not end within the {grace:g} s grace period and best_model.joblib "
                    "was not written; --resume refits it"
                )
            print(f"hpcml: stopped by signal {stop.signum}: {message}", file=sys.stderr, flush=True)
            # MPI_Abort tears the job down at once; a moment first lets the launcher forward
            # the line just written (under load it was sometimes lost).
            time.sleep(ABORT_FLUSH_SECONDS)
            comm.Abort(EXIT_INCOMPLETE)

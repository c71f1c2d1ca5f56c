"""Rank 0's progress report: units done/total, elapsed, ETA and best score so far.

On a terminal a live line is redrawn at most twice a second; in a batch log
(not a terminal) a plain line is printed every ``interval`` seconds or every 10 %
of the units, whichever comes first, and always at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class Progress:
    """Progress of a search, fed with finished units.

    Parameters
    ----------
    total : int
        Units in the whole search.
    done : int
        Units already finished (resumed from a journal).
    n_splits : int
        Splits per candidate (a candidate's mean is known once all are in).
    metric : str
        Name of the refit metric shown as "best".
    enabled : bool
        False for ``--quiet``.
    stream : file, optional
        Where to write (default ``sys.stderr``).
    interval : float
        Seconds between plain lines in batch logs.
    """

    def __init__(
        self,
        total: int,
        done: int,
        n_splits: int,
        metric: str,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 30.0,
    ) -> None:
        self.total = total
        self.done = done
        self.start_done = done
        self.n_splits = n_splits
        self.metric = metric
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.5 if self.tty else interval
        self.start = time.monotonic()
        self._last = 0.0
        self._last_fraction = done / total if total else 1.0
        self._partial: dict[int, list[float]] = {}
        self.best: tuple[float, str] | None = None

    def seed(self, cand: int, score: float, label: str) -> None:
        """Account for a unit finished before this run (resume)."""
        self._add(cand, score, label)

    def _add(self, cand: int, score: float, label: str) -> None:
        scores = self._partial.setdefault(cand, [])
        scores.append(score)
        if len(scores) == self.n_splits:
            mean = sum(scores) / len(scores)
            if mean == mean and (self.best is None or mean > self.best[0]):
                self.best = (mean, label)

    def update(self, finished: list[tuple[int, float, str]]) -> None:
        """Record finished units ``(candidate, refit-metric score, label)`` and maybe print."""
        for cand, score, label in finished:
            self.done += 1
            self._add(cand, score, label)
        if not self.enabled:
            return
        now = time.monotonic()
        fraction = self.done / self.total if self.total else 1.0
        if now - self._last >= self.interval or (not self.tty and fraction - self._last_fraction >= 0.1 - 1e-9):
            self._emit(now)

    def line(self, now: float | None = None) -> str:
        """The current progress line."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.start
        ran = self.done - self.start_done
        left = self.total - self.done
        eta = "?" if ran == 0 else _clock(elapsed / ran * left)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        best = "" if self.best is None else f" | best {self.metric} {self.best[0]:.4f} ({self.best[1]})"
        return f"hpcml: {self.done}/{self.total} units ({pct:.0f}%) | elapsed {_clock(elapsed)} | ETA {eta}{best}"

    def _emit(self, now: float) -> None:
        self._last = now
        self._last_fraction = self.done / self.total if self.total else 1.0
        if self.tty:
            filled = int(20 * self.done / self.total) if self.total else 20
            bar = "[" + "#" * filled + "." * (20 - filled) + "] "
            self.stream.write("\r\033[K" + bar + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Print the final line."""
        if not self.enabled:
            return
        self._emit(time.monotonic())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def best_so_far_score(result: dict[str, Any], metric: str) -> float:
    """The refit-metric score of a unit result (NaN when missing)."""
    scores = result.get("test_scores")
    if isinstance(scores, dict):
        return float(scores.get(metric, float("nan")))
    return float(scores) if scores is not None else float("nan")

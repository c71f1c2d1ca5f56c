"""Waiting without spinning: exponential backoff for polling loops and a sleeping barrier."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI


class Backoff:
    """Exponential sleep for polling loops, so that idle ranks leave the cores free.

    MPICH busy-polls inside blocking calls; hpcml waits with ``Iprobe``/``Test``
    and this sleep instead.  The sleep starts at ``start`` seconds and doubles up
    to ``maximum`` (1 ms, the ceiling ``mpi4py.futures`` uses); after ``patience``
    seconds of waiting it grows further up to ``idle_maximum`` so that ranks that
    wait for a long time (for example 64 ranks on 2 cores) cost next to nothing.
    """

    def __init__(
        self,
        start: float = 1e-5,
        maximum: float = 1e-3,
        idle_maximum: float = 2e-2,
        patience: float = 1.0,
    ) -> None:
        self.start = start
        self.maximum = maximum
        self.idle_maximum = idle_maximum
        self.patience = patience
        self.reset()

    def reset(self) -> None:
        """Start a new wait."""
        self._delay = 0.0
        self._since = time.monotonic()

    def sleep(self) -> None:
        """Sleep for the next delay of the sequence."""
        if self._delay == 0.0:
            self._delay = self.start
        else:
            ceiling = self.maximum
            if time.monotonic() - self._since > self.patience:
                ceiling = self.idle_maximum
            self._delay = min(self._delay * 2.0, ceiling)
        time.sleep(self._delay)


def idle_barrier(comm: MPI.Intracomm) -> None:
    """A barrier that sleeps instead of spinning (``Ibarrier`` + ``Test`` + backoff).

    Collective over ``comm``.
    """
    if comm.Get_size() == 1:
        return
    request = comm.Ibarrier()
    backoff = Backoff()
    while not request.Test():
        backoff.sleep()

"""Graceful-stop signals for long MPI runs (numpy-free: installed before anything heavy loads).

SIGTERM, SIGINT and SIGUSR1 (what Slurm sends before the time limit with
``--signal``, forwarded to every rank by ``mpiexec``) become a stop request
instead of killing the process.  Entry points create a :class:`StopFlag` and
install it first thing, so that a signal arriving during imports or data
loading is not lost.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from hpcml.env import READY_FILE


class StopFlag:
    """Signals (SIGTERM, SIGINT, SIGUSR1) turn into a graceful stop request.

    Python runs signal handlers in the main thread only, and only between
    bytecodes: while rank 0's main thread is inside a long fit the handler
    waits.  The C-level handler also writes the signal number to a wake-up
    pipe (``signal.set_wakeup_fd``), which the dispatcher thread reads, so the
    stop takes effect at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._lock = threading.Lock()
        self._on_first: list[Any] = []
        self._read_fd: int | None = None

    def install(self) -> None:
        """Install the handlers and the wake-up pipe (main thread only)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._read_fd = read_fd
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)
        _announce_ready()

    def on_first(self, callback: Any) -> None:
        """Run ``callback()`` once, when the first signal is noticed (now, if one already was)."""
        self._on_first.append(callback)
        if self.signum is not None:
            callback()

    def _set(self, signum: int) -> None:
        with self._lock:
            if self.signum is not None:
                return
            self.signum = signum
        for callback in self._on_first:
            callback()

    def _handle(self, signum: int, frame: Any) -> None:
        self._set(signum)

    def _poll(self) -> None:
        if self._read_fd is None or self.signum is not None:
            return
        try:
            data = os.read(self._read_fd, 64)
        except (BlockingIOError, OSError):
            return
        for byte in data:
            if byte in {int(s) for s in self.SIGNALS}:
                self._set(byte)
                return

    def __bool__(self) -> bool:
        self._poll()
        return self.signum is not None


def _announce_ready() -> None:
    """Opt-in readiness signal for tests: create ``$HPCML_READY_FILE.<pid>`` (nothing when it is unset).

    A test that must send a signal after the handlers are in place waits for
    one such file per rank instead of sleeping for a guessed time.
    """
    prefix = os.environ.get(READY_FILE)
    if prefix:
        with open(f"{prefix}.{os.getpid()}", "w"):
            pass

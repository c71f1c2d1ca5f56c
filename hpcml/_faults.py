"""Fault injection for hpcml's own fault tests (tests/launch/test_faults.py); opt-in.

``HPCML_INJECT_FAULT=POINT:RANK`` (or ``POINT:RANK:COUNT`` for "after COUNT
calls") makes the hook of that point raise :class:`InjectedFault` on that rank
of ``COMM_WORLD``; with ``:kill`` appended the rank kills itself with SIGKILL
there instead (a rank dying at an exact moment, for the no-hang tests).
Points: ``load`` (while reading data), ``shared-read`` (a reader of
:mod:`hpcml.data.shared` inside the collective shared load), ``unit`` (inside a
work unit, outside the fit), ``worker`` (in a worker's dispatch loop, outside
any unit), ``test-rows`` (holding the ``flock`` of the node-shared fold file
while a split's test rows are built, :class:`hpcml.cv.cow.ShmFolds`).

The variable is read once, at start-up (:func:`check_env`, called by the CLI
entry points before anything runs; a malformed value is a usage error).  When it
is unset :func:`hook` returns ``None`` and callers install nothing: no hook on
the per-unit path, no extra collective.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

from hpcml.errors import UsageError

#: The environment variable naming the fault to inject.
ENV = "HPCML_INJECT_FAULT"

#: Points where a fault can be injected.
POINTS = ("load", "shared-read", "unit", "worker", "test-rows")


class InjectedFault(RuntimeError):
    """The error raised by an injected fault."""


@dataclass(frozen=True)
class FaultSpec:
    """Where and when to raise (or, with ``kill``, die of SIGKILL): at ``point`` on ``rank``, after ``after`` calls."""

    point: str
    rank: int
    after: int = 0
    kill: bool = False


def parse(spec: str) -> FaultSpec:
    """Parse ``POINT:RANK[:COUNT][:kill]``; anything else is a :class:`UsageError`."""
    parts = spec.split(":")
    kill = len(parts) > 2 and parts[-1] == "kill"
    numbers = parts[1:-1] if kill else parts[1:]
    ok = 1 <= len(numbers) <= 2 and parts[0] in POINTS and all(p.isdigit() for p in numbers)
    if not ok:
        raise UsageError(f"{ENV}={spec!r}: expected POINT:RANK[:COUNT][:kill] with POINT one of {', '.join(POINTS)}")
    return FaultSpec(parts[0], int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else 0, kill)


@functools.cache
def configured() -> FaultSpec | None:
    """The fault named by the environment, read once per process (``None`` when unset)."""
    spec = os.environ.get(ENV)
    return parse(spec) if spec else None


def check_env() -> None:
    """Start-up check of the CLI entry points: raise :class:`UsageError` for a malformed value."""
    configured()


@functools.cache
def hook(point: str, rank: int) -> Callable[[], None] | None:
    """The hook to call at ``point`` on ``rank``, or ``None`` when no fault is configured there."""
    spec = configured()
    if spec is None or spec.point != point or spec.rank != rank:
        return None
    calls = [0]

    def fire() -> None:
        calls[0] += 1
        if calls[0] > spec.after and spec.kill:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if calls[0] > spec.after:
            raise InjectedFault(f"injected fault at '{point}' on rank {rank}")

    return fire


def active() -> bool:
    """Whether a fault is configured (the same on every rank: one environment for the job)."""
    return configured() is not None

"""Fault injection for hpcml's own fault tests (tests/launch/test_faults.py).

``HPCML_INJECT_FAULT=POINT:RANK`` (or ``POINT:RANK:COUNT`` for "after COUNT
calls") makes :func:`inject` raise :class:`InjectedFault` at that point on that
rank of ``COMM_WORLD``.  Unset (always, outside tests) it costs one dict lookup.
Points: ``load`` (before reading data), ``shared-read`` (a reader of
:mod:`hpcml.data.shared` inside the collective shared load), ``unit`` (inside a work unit, outside
the fit), ``worker`` (in a worker's dispatch loop, outside any unit).
"""

from __future__ import annotations

import os

_calls: dict[str, int] = {}


class InjectedFault(RuntimeError):
    """The error raised by :func:`inject`."""


def inject(point: str, rank: int) -> None:
    """Raise :class:`InjectedFault` if ``HPCML_INJECT_FAULT`` names this point and rank."""
    spec = os.environ.get("HPCML_INJECT_FAULT")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != point or int(parts[1]) != rank:
        return
    after = int(parts[2]) if len(parts) > 2 else 0
    _calls[point] = _calls.get(point, 0) + 1
    if _calls[point] > after:
        raise InjectedFault(f"injected fault at '{point}' on rank {rank}")

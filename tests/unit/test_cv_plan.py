"""Pure pieces of the engine: unit numbering, order, batching (no MPI)."""

from __future__ import annotations

import time

import pytest

from hpcml.cv.plan import UnitIndex, unit_order
from hpcml.cv.schedule import UnitQueue


def test_unit_index_round_trip():
    index = UnitIndex(7, 5)
    assert len(index) == 35
    for unit in range(35):
        cand, split = index.pair(unit)
        assert index.unit(cand, split) == unit
        assert index.candidate(unit) == cand


def test_unit_order_first_pass_then_split_major():
    index = UnitIndex(3, 4)
    first, rest = unit_order(index)
    assert first == [0, 4, 8]  # split 0 of each candidate
    assert sorted(first + rest) == list(range(12))
    assert [index.pair(u)[1] for u in rest] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_unit_order_skips_done_and_known():
    index = UnitIndex(3, 2)
    first, rest = unit_order(index, done={0, 1, 2}, known_cost={0, 1})
    assert first == [4]  # candidate 2 is the only one of unknown cost
    assert sorted(first + rest) == [3, 4, 5]


def test_queue_hands_out_everything_once():
    q = UnitQueue([0, 1], range(2, 100), n_ranks=3)
    seen = []
    while batch := q.take():
        seen.extend(batch)
        for u in batch:
            q.record(u, 0.001)
    assert sorted(seen) == list(range(100))


def test_queue_batches_grow_with_known_costs_and_respect_share():
    q = UnitQueue([], range(1000), n_ranks=2, target_batch_seconds=0.1)
    assert len(q.take()) == 1  # nothing known yet
    q.record(0, 0.001)
    batch = q.take()
    assert 50 <= len(batch) <= 100  # ~0.1 s of 1 ms units
    q2 = UnitQueue([], range(1000), n_ranks=2, target_batch_seconds=0.1)
    q2.record(0, 1e-6)
    assert len(q2.take()) == 250  # guided share: remaining / (2 * ranks)


def test_queue_sorts_rest_longest_first_after_first_pass():
    group = {u: u % 4 for u in range(40)}
    q = UnitQueue([0, 1, 2, 3], range(4, 40), n_ranks=2, group_of=group.get)
    costs = {0: 0.01, 1: 10.0, 2: 0.5, 3: 0.01}
    probed = []
    while len(probed) < 4:
        for u in q.take():
            probed.append(u)
            q.record(u, costs[group[u]])
    assert probed == [0, 1, 2, 3]
    order = []
    while batch := q.take():
        order.extend(batch)
    assert [group[u] for u in order[:9]] == [1] * 9  # the expensive candidate first
    assert {group[u] for u in order[9:18]} == {2}


def test_queue_deadline_stops_handing_out():
    q = UnitQueue([], range(10), n_ranks=1, deadline=time.time() + 1000)
    q.record(0, 1.0)
    assert q.take()
    q.deadline = time.time() + 0.5  # next unit (1 s) would not finish
    assert q.take() == [] and q.expired and len(q) == 0


@pytest.mark.parametrize("n", [1, 2, 5])
def test_prior_costs_skip_probe_pass(n):
    q = UnitQueue([], range(10), n_ranks=n, group_of=lambda u: u, prior_costs={u: 4.0**u for u in range(10)})
    first = q.take()
    assert first[0] == 9

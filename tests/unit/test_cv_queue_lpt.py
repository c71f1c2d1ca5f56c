"""UnitQueue: affinity batches go out longest first by their whole cost (LPT), re-sorted as costs arrive.  No MPI."""

from __future__ import annotations

from hpcml.cv.plan import UnitIndex, unit_order
from hpcml.cv.schedule import UnitQueue


def drain(queue: UnitQueue) -> list[list[int]]:
    """Every batch left, in order (nothing recorded)."""
    batches = []
    while batch := queue.take():
        batches.append(batch)
    return batches


def test_a_big_batch_of_cheap_members_goes_before_a_cheaper_batch_of_dearer_members():
    # units 0-4: one affinity batch of 5 x 1 s = 5 s; units 5, 6: one batch of 2 x 2 s = 4 s; unit 7: 3 s alone
    costs = {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 2.0, 6: 2.0, 7: 3.0}
    key = {0: "A", 1: "A", 2: "A", 3: "A", 4: "A", 5: "B", 6: "B", 7: None}
    queue = UnitQueue([], range(8), n_ranks=2, group_of=lambda u: u, prior_costs=costs, affinity_of=key.get)
    assert drain(queue) == [[0, 1, 2, 3, 4], [5, 6], [7]]
    assert len(queue) == 0


def test_batches_of_one_cost_bucket_go_out_by_exact_whole_cost():
    # both batches cost between 4 and 8 s (one factor-of-two bucket); the dearer one, later by default, goes first
    costs = {0: 2.5, 1: 2.5, 2: 3.5, 3: 3.5}
    key = {0: "cheap", 1: "cheap", 2: "dear", 3: "dear"}
    queue = UnitQueue([], range(4), n_ranks=2, group_of=lambda u: u, prior_costs=costs, affinity_of=key.get)
    assert drain(queue) == [[2, 3], [0, 1]]


def test_units_without_affinity_keep_the_bucketed_default_order():
    # 1.5 s and 1.9 s share a bucket: default order inside it (units of one fold together), as before
    costs = {0: 1.5, 1: 1.9, 2: 0.2, 3: 1.2}
    queue = UnitQueue([], range(4), n_ranks=1, group_of=lambda u: u, prior_costs=costs, target_batch_seconds=0.0)
    assert drain(queue) == [[0], [1], [3], [2]]


def text_grid_queue() -> tuple[UnitIndex, UnitQueue]:
    """4 candidates x 3 splits; candidates of one parity share a prefix on a fold (like ngram_range)."""
    index = UnitIndex(4, 3)
    first, rest = unit_order(index)
    assert first == [0, 3, 6, 9] and rest == [1, 4, 7, 10, 2, 5, 8, 11]

    def affinity(unit: int) -> tuple[int, int]:
        cand, split = index.pair(unit)
        return (split, cand % 2)

    return index, UnitQueue(first, rest, n_ranks=2, group_of=index.candidate, affinity_of=affinity)


def test_the_queue_is_sorted_again_when_costs_arrive_after_the_first_pass():
    index, queue = text_grid_queue()
    cost = {0: 1.0, 2: 1.0, 1: 3.0, 3: 3.0}  # odd candidates (their prefix) cost 3x
    cheap, dear = queue.take(), queue.take()  # the first pass: split 0, one batch per prefix
    assert (cheap, dear) == ([0, 6], [3, 9])
    for unit in cheap:  # the cheap batch finishes first; the dear one still runs on the other rank
        queue.record(unit, cost[index.candidate(unit)])
    # unknown candidates count as the costliest known (1 s): all batches tie, default order
    assert queue.take() == [1, 7]
    for unit in dear:
        queue.record(unit, cost[index.candidate(unit)])
    # now the dear batches (6 s) go before the cheap one left (2 s), whatever the default order
    assert drain(queue) == [[4, 10], [5, 11], [2, 8]]
    assert len(queue) == 0


def test_re_sorting_hands_out_every_unit_once():
    index, queue = text_grid_queue()
    seen: list[int] = []
    step = 0
    while batch := queue.take():
        seen += batch
        step += 1
        for unit in batch:  # costs arrive one candidate at a time, each forcing a re-sort
            queue.record(unit, 1.0 + index.candidate(unit) + step)
    assert sorted(seen) == list(range(12)) and len(queue) == 0

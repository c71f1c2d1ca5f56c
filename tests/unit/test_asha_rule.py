"""The ASHA rule (hpcml.cv.asha) against an independent pure-Python reference of Li et al.'s Algorithm 2."""

from __future__ import annotations

import math
import random

import pytest

from hpcml.cv.asha import AshaLayout, AshaQueue, AshaRule, Job


def reference_next(finished, promoted, n_started, n_candidates, n_rungs, eta):
    """Li et al. 2020, Algorithm 2 ``get_job``, written out independently of hpcml.

    ``finished[k]``: {candidate: score or None (failed)}.  Returns (candidate, rung) or None.
    """
    for k in reversed(range(n_rungs - 1)):
        done = finished[k]
        good = sorted((c for c in done if done[c] is not None and done[c] == done[c]), key=lambda c: (-done[c], c))
        bad = [c for c in done if c not in good]
        n_top = int(len(done) // eta) if float(eta).is_integer() else math.floor(len(done) / eta)
        top = (good + bad)[:n_top]
        for c in top:
            if c in good and c not in promoted[k]:
                return c, k + 1
    if n_started < n_candidates:
        return n_started, 0
    return None


def simulate_reference(n_candidates, n_rungs, eta, score, n_workers, seed):
    """A random interleaving of workers: decisions and finishes as a reference log."""
    rng = random.Random(seed)
    finished = [{} for _ in range(n_rungs)]
    promoted = [set() for _ in range(n_rungs)]
    started = 0
    running = []
    events = []
    while True:
        while len(running) < n_workers:
            job = reference_next(finished, promoted, started, n_candidates, n_rungs, eta)
            if job is None:
                break
            c, k = job
            if k == 0:
                started += 1
            else:
                promoted[k - 1].add(c)
            running.append(job)
            events.append(("decide", c, k))
        if not running:
            return events
        c, k = running.pop(rng.randrange(len(running)))
        finished[k][c] = score(c, k)
        events.append(("finish", c, k))


def run_rule(n_candidates, n_rungs, eta, score, events):
    """Drive AshaRule with the finish order of ``events``; return its log as tuples."""
    rule = AshaRule(n_candidates, n_rungs, eta)
    out = []
    for kind, c, k in events:
        if kind == "decide":
            job = rule.next_job()
            out.append(("decide", job.candidate, job.rung) if job else None)
        else:
            s = score(c, k)
            rule.finish(Job(c, k), float("nan") if s is None else s, s is None)
            out.append(("finish", c, k))
    return rule, out


def scores_with_failures(seed, fail_every=0):
    rng = random.Random(seed)
    table = {}

    def score(c, k):
        if fail_every and c % fail_every == 1:
            return None
        if (c, k) not in table:
            table[(c, k)] = round(rng.random(), 2)  # ties happen
        return table[(c, k)]

    return score


@pytest.mark.parametrize("n_workers", [1, 3, 8])
@pytest.mark.parametrize("eta", [2, 3, 4])
@pytest.mark.parametrize("fail_every", [0, 5])
def test_rule_equals_reference(n_workers, eta, fail_every):
    for seed in range(5):
        score = scores_with_failures(seed, fail_every)
        events = simulate_reference(40, 4, eta, score, n_workers, seed)
        rule, log = run_rule(40, 4, eta, score, events)
        assert log == events
        assert rule.done
        assert AshaRule.replay(40, 4, eta, rule.log).log == rule.log


def test_failed_candidates_never_promoted():
    score = scores_with_failures(0, fail_every=3)
    events = simulate_reference(30, 3, 3, score, 4, 0)
    rule, _ = run_rule(30, 3, 3, score, events)
    failed = {c for c in range(30) if c % 3 == 1}
    promoted = {e["candidate"] for e in rule.log if e["event"] == "decide" and e["decision"] == "promote"}
    assert promoted and not promoted & failed
    assert all(rule.finished[0][c][1] for c in failed)


def test_sequential_final_state_is_synchronous_halving_counts():
    # one worker, all results known at every decision: rung k ends with floor(n_{k-1}/eta) candidates
    score = scores_with_failures(1)
    events = simulate_reference(27, 4, 3, score, 1, 0)
    rule, _ = run_rule(27, 4, 3, score, events)
    assert [len(f) for f in rule.finished] == [27, 9, 3, 1]


def test_replay_refuses_a_decision_the_rule_would_not_make():
    score = scores_with_failures(2)
    rule, _ = run_rule(9, 2, 3, score, simulate_reference(9, 2, 3, score, 2, 2))
    log = [dict(e) for e in rule.log]
    first_promotion = next(i for i, e in enumerate(log) if e.get("decision") == "promote")
    log[first_promotion]["candidate"] = (log[first_promotion]["candidate"] + 1) % 9
    with pytest.raises(ValueError, match=f"decision {first_promotion} of the log"):
        AshaRule.replay(9, 2, 3, log)


def test_top_is_floor_of_finished_over_factor():
    rule = AshaRule(10, 2, 3)
    for c, s in enumerate([0.5, 0.9, 0.1, 0.7, 0.8]):
        rule.finish(Job(c, 0), s, False)
    assert rule.top(0) == [1]  # floor(5 / 3) = 1
    rule.finish(Job(5, 0), 0.95, False)
    assert rule.top(0) == [5, 1]


def test_queue_waits_while_jobs_run_and_finishes():
    layout = AshaLayout(n_candidates=3, n_rungs=2, n_splits=2)
    queue = AshaQueue(AshaRule(3, 2, 3), layout, n_ranks=1)
    handed = []
    while True:
        batch = queue.take()
        if not batch:
            break
        handed.extend(batch)
    assert sorted(handed) == [layout.unit(c, 0, s) for c in range(3) for s in range(2)]
    assert queue.pending()  # three jobs run: a promotion may follow
    result = {"test_scores": 0.5, "fit_error": None, "fit_time": 0.0, "score_time": 0.0}
    items = [(u, dict(result, test_scores=0.1 * (1 + layout.triple(u)[0])), 0.0) for u in handed]
    assert queue.add_results(items) == [Job(0, 0), Job(1, 0), Job(2, 0)]
    assert queue.take() == [layout.unit(2, 1, 0)]  # the best of rung 0 is promoted
    queue.clear()
    assert not queue.pending() and queue.take() == []

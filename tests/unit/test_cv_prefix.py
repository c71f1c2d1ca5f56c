"""Pure pieces of prefix reuse: candidate keys, the plan, affinity batches, the byte budget (no MPI)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from hpcml.cv.plan import UnitIndex, unit_order
from hpcml.cv.prefix import Level, PrefixCache, PrefixPlan, budget_bytes, candidate_keys, plan_prefixes
from hpcml.cv.schedule import UnitQueue


def text() -> Pipeline:
    return Pipeline([("vect", CountVectorizer()), ("tfidf", TfidfTransformer()), ("clf", LogisticRegression())])


def test_keys_depend_only_on_the_leading_steps_parameters():
    a = candidate_keys(0, text(), {"vect__ngram_range": (1, 1), "tfidf__norm": "l1", "clf__C": 1.0})
    b = candidate_keys(0, text(), {"vect__ngram_range": (1, 1), "tfidf__norm": "l2", "clf__C": 2.0})
    c = candidate_keys(0, text(), {"vect__ngram_range": (1, 2), "tfidf__norm": "l1", "clf__C": 1.0})
    assert len(a) == 2  # two cacheable levels: vect, vect+tfidf
    assert a[0] == b[0] and a[1] != b[1]
    assert a[0] != c[0]
    assert candidate_keys(1, text(), {"clf__C": 1.0})[0] != candidate_keys(0, text(), {"clf__C": 1.0})[0]


def test_no_reuse_where_sklearn_would_behave_differently():
    assert candidate_keys(0, LogisticRegression(), {"C": 1.0}) == ()
    assert candidate_keys(0, Pipeline([("a", StandardScaler()), ("b", PCA())], memory="/tmp/x"), {}) == ()
    assert candidate_keys(0, Pipeline([("a", StandardScaler()), ("b", PCA())], verbose=True), {}) == ()
    assert candidate_keys(0, text(), {"steps": [("clf", LogisticRegression())]}) == ()
    assert candidate_keys(0, text(), {"no_such__param": 1}) == ()
    # an unseeded random step stops the caching there; a seeded one is cached
    unseeded = Pipeline([("sc", StandardScaler()), ("svd", TruncatedSVD()), ("lr", LogisticRegression())])
    assert len(candidate_keys(0, unseeded, {})) == 1
    assert len(candidate_keys(0, unseeded, {"svd__random_state": 0})) == 2


def test_non_deterministic_tag_opts_a_step_out():
    class Noisy(StandardScaler):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.non_deterministic = True
            return tags

    pipe = Pipeline([("n", Noisy()), ("sc", StandardScaler()), ("lr", LogisticRegression())])
    assert candidate_keys(0, pipe, {}) == ()


def test_plan_affinity_level_keeps_enough_groups_per_rank():
    grid = [
        (0, {"vect__ngram_range": r, "tfidf__norm": n, "clf__C": c})
        for r in [(1, 1), (1, 2)]
        for n in ("l1", "l2")
        for c in (1.0, 10.0)
    ]
    assert plan_prefixes([text()], grid, n_splits=5, n_ranks=2).affinity_level == 0  # 10 groups >= 4
    assert plan_prefixes([text()], grid, n_splits=1, n_ranks=2).affinity_level == 1  # 2 < 4: vect+tfidf


def test_levels_no_other_candidate_shares_are_not_cached():
    one = plan_prefixes([text()], [(0, {"clf__C": 1.0})], n_splits=3, n_ranks=2)  # cross_validate
    assert not one.any()
    grid = [(0, {"vect__ngram_range": r, "tfidf__norm": "l1"}) for r in [(1, 1), (1, 2)]]
    assert not plan_prefixes([text()], grid, n_splits=3, n_ranks=2).any()
    grid = [(0, {"vect__ngram_range": (1, 1), "tfidf__norm": n}) for n in ("l1", "l2")]
    assert [len(k) for k in plan_prefixes([text()], grid, n_splits=3, n_ranks=2).keys] == [1, 1]


def test_affinity_batches_hand_out_a_group_at_once_and_nothing_twice():
    index = UnitIndex(6, 3)
    first, rest = unit_order(index)
    plan = PrefixPlan(keys=[(("k", cand % 2),) for cand in range(6)])
    queue = UnitQueue(first, rest, n_ranks=2, affinity_of=lambda u: plan.affinity(*index.pair(u)))
    seen: list[int] = []
    while len(queue):
        batch = queue.take()
        groups = {plan.affinity(*index.pair(u)) for u in batch}
        assert len(groups) == 1 and len(batch) == 3  # all 3 candidates of one (split, key)
        seen += batch
        for unit in batch:
            queue.record(unit, 0.5)
    assert sorted(seen) == list(range(18))
    assert queue.take() == []


def test_units_without_affinity_batch_as_before():
    queue = UnitQueue([], range(20), n_ranks=2, prior_costs={None: 0.01}, affinity_of=lambda u: None)
    assert len(queue.take()) == 5  # the guided-self-scheduling share, as without affinity


def test_cache_stays_within_its_budget_least_recently_used_first():
    cache = PrefixCache(budget=3000, plan=PrefixPlan(keys=[]))
    for key in "abc":
        cache.put(key, Level([], np.zeros(125)))  # 1000 bytes each
    assert cache.get("a") is not None
    cache.put("d", Level([], np.zeros(125)))
    assert list(cache.entries) == ["c", "a", "d"] and cache.evictions == 1
    cache.put("huge", Level([], np.zeros(1000)))  # larger than the budget: not kept
    assert "huge" not in cache.entries and cache.bytes == 3000 == cache.peak_bytes
    assert not cache.entries["a"].fit.flags.writeable  # cached rows are read-only


def test_budget_from_argument_environment_or_default(monkeypatch):
    monkeypatch.delenv("HPCML_PREFIX_CACHE_BYTES", raising=False)
    assert budget_bytes() == 1 << 30
    assert budget_bytes(0) == 0
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", "2e6")
    assert budget_bytes() == 2_000_000
    monkeypatch.setenv("HPCML_PREFIX_CACHE_BYTES", "lots")
    with pytest.raises(ValueError, match="HPCML_PREFIX_CACHE_BYTES"):
        budget_bytes()


def test_a_candidate_leaving_the_cache_mid_run_keeps_every_unit_handed_out_once():
    index = UnitIndex(4, 2)
    first, rest = unit_order(index)
    plan = PrefixPlan(keys=[(("k", 0),)] * 4)
    queue = UnitQueue(first, rest, n_ranks=2, affinity_of=lambda u: plan.affinity(*index.pair(u)))
    seen = queue.take()
    plan.keys[1] = ()  # what run_prefixed does when a step aliases its input
    while len(queue):
        seen += queue.take()
    assert sorted(seen) == list(range(8))

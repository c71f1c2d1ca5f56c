"""hpcml.AsyncHalvingSearchCV (ASHA) under MPI, at whatever size mpiexec gave (the tier runs 1, 2, 4).

The decision log depends on timing at more than one rank, so it is not compared
across rank counts; instead every run is checked against the rule (each
promotion given the results seen at that time), every (candidate, rung) score
against scikit-learn, and a one-rank run against a pure-Python reference.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from mpi4py import MPI
from scipy.stats import loguniform
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import KFold, ParameterSampler, StratifiedKFold
from sklearn.model_selection._search_successive_halving import _SubsampleMetaSplitter
from sklearn.svm import SVC

import hpcml
from hpcml.cv.asha import AshaRule

COMM = MPI.COMM_WORLD


def data(n=600, seed=0):
    return make_classification(n, 8, n_informative=5, random_state=seed)


SPACE = {"C": loguniform(1e-2, 1e2), "gamma": loguniform(1e-3, 1)}


class Fragile(ClassifierMixin, BaseEstimator):
    """SVC that raises for C above ``limit``."""

    def __init__(self, C=1.0, limit=10.0):
        self.C = C
        self.limit = limit

    def fit(self, X, y):
        if self.C > self.limit:
            raise ValueError("C too large for Fragile")
        self.svc_ = SVC(C=self.C).fit(X, y)
        self.classes_ = self.svc_.classes_
        return self

    def predict(self, X):
        return self.svc_.predict(X)


def check_log(log, n_candidates, n_rungs, factor):
    """Every promotion is in the top floor(n/factor) of the jobs finished before it at its source rung
    (recomputed here from the finish events), never a failed one, and its logged evidence says so."""
    finished = [{} for _ in range(n_rungs)]
    promoted = [set() for _ in range(n_rungs)]
    for event in log:
        if event["event"] == "finish":
            finished[event["rung"]][event["candidate"]] = event["score"]
        elif event["decision"] == "promote":
            source, cand = event["rung"] - 1, event["candidate"]
            seen = finished[source]
            good = sorted((c for c, s in seen.items() if isinstance(s, float)), key=lambda c: (-seen[c], c))
            n_top = math.floor(len(seen) / factor + 1e-9)
            ranked = good + [c for c in seen if c not in good]
            assert cand in ranked[:n_top] and cand in good and cand not in promoted[source]
            # the better ones were all promoted already: the rule takes the best open one
            assert all(c in promoted[source] for c in ranked[: ranked.index(cand)])
            promoted[source].add(cand)
            assert event["seen"]["finished"] == len(seen) and event["seen"]["top"] == n_top
            assert event["seen"]["position"] == ranked.index(cand) and event["seen"]["score"] == seen[cand]
    AshaRule.replay(n_candidates, n_rungs, factor, log)


def sklearn_rung_score(estimator, params, X, y, cv, fraction, random_state, scoring=None):
    """Mean CV score of one (candidate, rung) computed by scikit-learn alone."""
    splitter = _SubsampleMetaSplitter(base_cv=cv, fraction=fraction, subsample_test=True, random_state=random_state)
    scorer = check_scoring(estimator, scoring=scoring)
    scores = []
    for train, test in splitter.split(X, y):
        est = clone(estimator).set_params(**params).fit(X[train], y[train])
        scores.append(scorer(est, X[test], y[test]))
    return float(np.mean(scores))


@pytest.mark.mpi
def test_asha_rows_equal_sklearn_scores_and_obey_the_rule():
    X, y = data()
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = hpcml.AsyncHalvingSearchCV(SVC(), SPACE, n_candidates=18, cv=cv, random_state=0).fit(X, y)
    res = search.cv_results_
    assert search.n_resources_ == [12, 36, 108][: search.n_iterations_]  # smallest: 3 splits * 2 * 2 classes
    assert search.n_candidates_[0] == 18
    check_log(search.decisions_, 18, 3, 3)
    cands = list(ParameterSampler(SPACE, 18, random_state=0))
    for i in range(len(res["params"])):
        c, rung = res["candidate"][i], res["iter"][i]
        assert res["params"][i] == cands[c]
        expected = sklearn_rung_score(SVC(), cands[c], X, y, cv, res["n_resources"][i] / len(X), 0)
        assert abs(res["mean_test_score"][i] - expected) <= 1e-12
        assert res["promoted"][i] == any((r == rung + 1 and cc == c) for r, cc in zip(res["iter"], res["candidate"]))
    # the best: best mean score at the highest rung reached (scikit-learn's halving rule)
    top = np.flatnonzero(res["iter"] == res["iter"].max())
    assert search.best_index_ == top[np.argmax(res["mean_test_score"][top])]
    assert search.best_params_ == res["params"][search.best_index_]
    assert search.best_score_ == res["mean_test_score"][search.best_index_]
    np.testing.assert_array_equal(
        search.predict(X[:50]), clone(SVC()).set_params(**search.best_params_).fit(X, y).predict(X[:50])
    )
    # every rank holds the same results
    gathered = COMM.allgather((res["candidate"].tolist(), res["mean_test_score"].tolist()))
    assert all(g == gathered[0] for g in gathered)


def reference_sequential(X, y, cands, cv, resources, factor, random_state):
    """A one-worker ASHA in plain Python and scikit-learn: the decisions and each job's score."""
    n, n_rungs = len(cands), len(resources)
    finished = [{} for _ in range(n_rungs)]
    promoted = [set() for _ in range(n_rungs)]
    started, decisions = 0, []
    while True:
        job = None
        for k in reversed(range(n_rungs - 1)):
            top = sorted(finished[k], key=lambda c: (-finished[k][c], c))[: len(finished[k]) // factor]
            fresh = [c for c in top if c not in promoted[k]]
            if fresh:
                job = (fresh[0], k + 1)
                promoted[k].add(fresh[0])
                break
        if job is None and started < n:
            job, started = (started, 0), started + 1
        if job is None:
            return decisions, finished
        decisions.append(job)
        c, k = job
        finished[k][c] = sklearn_rung_score(SVC(), cands[c], X, y, cv, resources[k] / len(X), random_state)


@pytest.mark.mpi
def test_one_rank_run_equals_pure_python_reference():
    X, y = data(450, seed=1)
    cv = KFold(3, shuffle=True, random_state=1)
    search = hpcml.AsyncHalvingSearchCV(
        SVC(), SPACE, n_candidates=12, cv=cv, random_state=3, min_resources=40, comm="self"
    ).fit(X, y)
    cands = list(ParameterSampler(SPACE, 12, random_state=3))
    decisions, finished = reference_sequential(X, y, cands, cv, [40, 120, 360], 3, 3)
    ours = [(e["candidate"], e["rung"]) for e in search.decisions_ if e["event"] == "decide"]
    assert ours == decisions
    res = search.cv_results_
    for c, k, s in zip(res["candidate"], res["iter"], res["mean_test_score"]):
        assert abs(s - finished[k][c]) <= 1e-12


@pytest.mark.mpi
def test_integer_resource_is_a_parameter():
    X, y = data(300)
    search = hpcml.AsyncHalvingSearchCV(
        RandomForestClassifier(random_state=0),
        {"max_depth": [2, 3, 4, 5, None], "min_samples_leaf": [1, 2, 4]},
        n_candidates=9,
        resource="n_estimators",
        min_resources=3,
        max_resources=27,
        cv=3,
        random_state=0,
    ).fit(X, y)
    res = search.cv_results_
    assert search.n_resources_[0] == 3
    for params, rung, n_res in zip(res["params"], res["iter"], res["n_resources"]):
        assert params["n_estimators"] == n_res == 3 * 3**rung
    check_log(search.decisions_, 9, 3, 3)
    assert set(res["param_n_estimators"].compressed().tolist()) <= {3, 9, 27}


@pytest.mark.mpi
def test_failing_candidates_are_never_promoted_and_warn():
    X, y = data(400)
    grid = {"C": [0.1, 0.5, 1.0, 2.0, 5.0, 20.0, 50.0, 100.0, 200.0]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = hpcml.AsyncHalvingSearchCV(Fragile(), grid, n_candidates=9, cv=3, random_state=0, min_resources=40)
        search.fit(X, y)
    assert any(issubclass(w.category, FitFailedWarning) for w in caught)
    res = search.cv_results_
    failed = [i for i, p in enumerate(res["params"]) if p["C"] > 10]
    assert failed and all(np.isnan(res["mean_test_score"][i]) and res["iter"][i] == 0 for i in failed)
    assert not any(res["promoted"][i] for i in failed)
    assert res["params"][search.best_index_]["C"] <= 10
    check_log(search.decisions_, 9, len(search._rung_resources), 3)


@pytest.mark.mpi
def test_error_score_raise_raises_on_every_rank():
    X, y = data(300)
    search = hpcml.AsyncHalvingSearchCV(
        Fragile(),
        {"C": [100.0, 200.0, 300.0]},
        n_candidates=3,
        cv=3,
        random_state=0,
        error_score="raise",
        min_resources=60,
    )
    with pytest.raises(ValueError, match="C too large for Fragile"):
        search.fit(X, y)


@pytest.mark.mpi
def test_subsample_too_small_is_refused_before_any_fit():
    X, y = data(300)
    y = np.where(np.arange(300) < 290, 0, 1)  # ten rows of class 1
    search = hpcml.AsyncHalvingSearchCV(
        Fragile(limit=-1.0),
        {"C": [1.0, 2.0, 3.0]},
        n_candidates=3,
        cv=KFold(3),
        min_resources=6,
        random_state=0,
        error_score="raise",
    )
    # Fragile(limit=-1) would raise in any fit: the check comes first
    with pytest.raises(ValueError, match=r"min_resources_=6 is too small: split \d of the first rung"):
        search.fit(X, y)


@pytest.mark.mpi
def test_resource_in_searched_parameters_is_refused():
    X, y = data(200)
    search = hpcml.AsyncHalvingSearchCV(
        RandomForestClassifier(),
        {"n_estimators": [3, 5]},
        n_candidates=2,
        resource="n_estimators",
        max_resources=10,
        cv=3,
    )
    with pytest.raises(ValueError, match="Cannot use parameter n_estimators as the resource"):
        search.fit(X, y)


def _prepared(X, y, **kw):
    search = hpcml.AsyncHalvingSearchCV(SVC(), SPACE, n_candidates=15, cv=3, random_state=0, min_resources=30, **kw)
    search._validate_params()
    problem, layout, split_of = search._prepare(X, y, {}, COMM)
    return search, problem, layout, split_of


def _results_table(search, results, layout, problem):
    search._store_results(results, layout, problem)
    return {k: v for k, v in search.cv_results_.items() if "time" not in k}


@pytest.mark.mpi
def test_resume_from_a_log_prefix_replays_it_and_rederives_the_same_results():
    from hpcml.cv.async_search import run_asha

    X, y = data(400, seed=2)
    search, problem, layout, split_of = _prepared(X, y)
    first = run_asha(problem, layout, AshaRule(15, layout.n_rungs, 3), COMM, split_of=split_of, threads=1)
    assert first.complete
    check_log(first.log, 15, layout.n_rungs, 3)
    # a finished run re-derived from its log and results: nothing runs again, same cv_results_
    again = run_asha(
        problem,
        layout,
        AshaRule.replay(15, layout.n_rungs, 3, first.log),
        COMM,
        split_of=split_of,
        done=first.results,
        threads=1,
    )
    assert again.report.results == {} and again.log == first.log
    table = _results_table(search, first.results, layout, problem)
    rederived = _results_table(search, again.results, layout, problem)
    assert table.keys() == rederived.keys()
    for key in table:
        np.testing.assert_array_equal(np.asarray(table[key], dtype=object), np.asarray(rederived[key], dtype=object))
    # stopped half-way: the journal holds the first half of the events and the units finished by then,
    # plus one split of a job still running; the resumed run keeps every earlier decision
    cut = len(first.log) // 2
    prefix = first.log[:cut]
    finished_jobs = {(e["candidate"], e["rung"]) for e in prefix if e["event"] == "finish"}
    done = {u: r for u, r in first.results.items() if layout.triple(u)[:2] in finished_jobs}
    rule = AshaRule.replay(15, layout.n_rungs, 3, prefix)
    running = sorted(rule.running, key=lambda j: (j.rung, j.candidate))
    if running:
        u = layout.unit(running[0].candidate, running[0].rung, 0)
        done[u] = first.results[u]
    resumed = run_asha(problem, layout, rule, COMM, split_of=split_of, done=done, threads=1)
    assert resumed.complete and resumed.log[:cut] == prefix
    assert not set(resumed.report.results) & set(done)  # nothing finished before the stop ran again
    check_log(resumed.log, 15, layout.n_rungs, 3)
    for unit, result in resumed.results.items():  # a (candidate, rung, split) has one score, whoever ran it
        if unit in first.results:
            assert result["test_scores"] == first.results[unit]["test_scores"]

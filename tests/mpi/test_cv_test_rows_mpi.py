"""A unit's test rows exist only after its fit (hpcml.cv.cow.LazyRows, ShmFolds), per-rank and node-shared folds.

pytest-mpi tier (1, 2 and 4 ranks through tests/test_mpi_tier.py).  Every rank
computes its checks, the collective steps run unconditionally, and the outcome
is agreed before asserting, so a failing check cannot leave a rank waiting.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.model_selection import KFold

import hpcml
from hpcml.cv import cow

COMM = MPI.COMM_WORLD

pytestmark = pytest.mark.skipif(not cow.available(), reason="copy-on-write folds need memfd_create (Linux)")


def _mapped_fold_files() -> set[str]:
    """The inodes of the per-rank fold memory files (memfds) this process maps now."""
    inodes = set()
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/memfd:hpcml-fold"):
                inodes.add(parts[4])
    return inodes


#: fold files this rank mapped before the test's search (earlier tests of the same process may
#: still hold some until they are collected): only files mapped since count
_BEFORE: set[str] = set()


def _fold_memfds() -> int:
    """How many fold memory files made by the current test's search this process maps now."""
    return len(_mapped_fold_files() - _BEFORE)


class Probe(ClassifierMixin, BaseEstimator):
    """Records the fold memory files mapped while fitting and scoring, and writes into its test rows."""

    def __init__(self, k=0):
        self.k = k

    def fit(self, X, y):
        self.fit_memfds_ = float(_fold_memfds())
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        if not hasattr(self, "seen_last_"):  # the first scorer's call: what the unit was given
            self.seen_last_ = float(X[-1, -1])
            self.score_memfds_ = float(_fold_memfds())
            X[-1, -1] = 1e9 + self.k  # a private write: no later unit may see it
        return np.full(len(X), self.classes_[0])


def _seen_last(est, X, y):
    est.predict(X)
    return est.seen_last_


def _fit_memfds(est, X, y):
    return est.fit_memfds_


def _score_memfds(est, X, y):
    est.predict(X)
    return est.score_memfds_


def _agreed(ok: bool) -> bool:
    return bool(COMM.allreduce(int(ok), op=MPI.MIN))


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("mode", ["rank", "node"])
def test_test_rows_come_after_the_fit_and_writes_stay_private(mode, monkeypatch):
    monkeypatch.setenv("HPCML_FOLD_COPIES", mode)
    monkeypatch.delenv("HPCML_COW_FOLDS", raising=False)
    X, y = make_classification(240, 6, n_informative=3, random_state=4)
    cv = KFold(3)
    scoring = {"seen_last": _seen_last, "fit_memfds": _fit_memfds, "score_memfds": _score_memfds}
    search = hpcml.GridSearchCV(Probe(), {"k": list(range(5))}, cv=cv, scoring=scoring, refit=False, comm=COMM)
    gc.collect()
    _BEFORE.clear()
    _BEFORE.update(_mapped_fold_files())
    results = search.fit(X, y).cv_results_
    folds = hpcml.run_info(search).folds
    assert folds["copy_on_write"] is True
    for i, (_, test) in enumerate(cv.split(X)):
        # every unit saw its test rows as X has them, whatever the units before it wrote
        np.testing.assert_array_equal(results[f"split{i}_test_seen_last"], np.full(5, X[test[-1], -1]))
        fit_files = results[f"split{i}_test_fit_memfds"]
        score_files = results[f"split{i}_test_score_memfds"]
        if folds["copies"] == "rank":
            # fits see this fold's train file, plus its test file only when a cheap fit kept it;
            # the first unit of the fold on a rank fits before any test row exists; never an older fold
            assert set(fit_files) <= {1.0, 2.0} and fit_files.min() == 1.0, fit_files
            np.testing.assert_array_equal(score_files, np.full(5, 2.0))
        else:  # node folds live in one /dev/shm file per node, no memfd
            np.testing.assert_array_equal(fit_files, np.zeros(5))
            np.testing.assert_array_equal(score_files, np.zeros(5))
    expected = "rank" if mode == "rank" or COMM.Get_size() == 1 else "node"
    assert folds["copies"] == expected
    assert np.all(X[:, -1] < 1e8)  # the user's X is untouched


@pytest.mark.mpi(min_size=1)
def test_node_test_rows_are_built_once_and_freed_at_the_next_split():
    X = np.random.default_rng(5).standard_normal((101, 7)) + 10.0  # no zero anywhere
    splits = list(KFold(3).split(X))
    folds, reason = cow.ShmFolds.open(X, splits, COMM)
    assert _agreed(folds is not None), reason
    node = folds.node
    checks: list[tuple[int, str, bool]] = []
    try:
        for split, (train, test) in enumerate(splits):
            train_src, lazy = folds.load(X, train, test, split)
            region = folds._rows(folds.test_offset, len(test), X.shape[1])
            checks.append((split, "train rows", bool(np.array_equal(train_src.array, X[train]))))
            # after load: no test row built, the previous split's freed (the file reads zeros there)
            checks.append((split, "nothing built yet", not lazy.built and not np.any(region)))
            node.Barrier()
            if node.Get_rank() == 0:
                checks.append((split, "built rows", bool(np.array_equal(lazy.array, X[test]))))
            node.Barrier()
            # rank 0's build is what every rank of the node reads, without building again
            checks.append((split, "shared rows", bool(np.array_equal(region, X[test]))))
            view = lazy.view()
            view[:] = -1.0
            checks.append((split, "view is private", bool(np.array_equal(lazy.array, X[test]))))
            del view, region, train_src, lazy
            node.Barrier()
    finally:
        folds.close()
    failed = [c for c in checks if not c[2]]
    everyone = COMM.allgather(failed)
    assert not any(everyone), everyone

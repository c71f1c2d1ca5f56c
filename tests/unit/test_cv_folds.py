"""The fold-copy decision (hpcml.cv.folds.choose) and the shared fold buffer at one rank."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from hpcml.cv import folds
from hpcml.cv.folds import NodeFolds, choose, fold_rows, shareable

X = np.arange(40.0).reshape(10, 4)
SPLITS = [(np.arange(0, 7), np.arange(7, 10)), (np.arange(3, 10), np.arange(0, 3))]


def test_shareable_only_plain_c_ordered_2d_numeric():
    assert shareable(X)
    assert not shareable(np.asfortranarray(X))
    assert not shareable(X[:, ::2])
    assert not shareable(X.ravel())
    with pytest.warns(PendingDeprecationWarning):
        matrix = np.asmatrix(X)
    assert not shareable(matrix)
    assert not shareable(X.astype(object))
    assert fold_rows(SPLITS) == 10
    mask = np.zeros(10, dtype=bool)
    mask[[1, 4]] = True
    assert fold_rows([(mask, ~mask)]) == 10 and fold_rows([(mask, [0])]) == 3


def test_choose_modes_at_one_rank(monkeypatch):
    monkeypatch.delenv(folds.ENV_FOLD_COPIES, raising=False)
    comm = MPI.COMM_SELF
    plan = choose("rank", X, SPLITS, comm, n_candidates=4)
    assert plan.mode == "rank" and "requested" in plan.reason and plan.fold_bytes == 10 * 4 * 8
    # one rank per node: nothing to share, whatever was asked
    assert choose("node", X, SPLITS, comm, n_candidates=4).mode == "rank"
    assert choose("auto", X, SPLITS, comm, n_candidates=4).reason.endswith("one rank per node")
    with pytest.raises(ValueError, match="fold_copies"):
        choose("shared", X, SPLITS, comm, n_candidates=4)


def test_env_replaces_auto_only(monkeypatch):
    monkeypatch.setenv(folds.ENV_FOLD_COPIES, "rank")
    assert "requested" in choose("auto", X, SPLITS, MPI.COMM_SELF, n_candidates=1).reason
    monkeypatch.setenv(folds.ENV_FOLD_COPIES, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        choose("auto", X, SPLITS, MPI.COMM_SELF, n_candidates=1)
    assert choose("rank", X, SPLITS, MPI.COMM_SELF, n_candidates=1).mode == "rank"


def test_kept_estimators_and_sparse_stay_per_rank():
    import scipy.sparse as sp

    comm = MPI.COMM_SELF
    assert "estimators" in choose("node", X, SPLITS, comm, n_candidates=2, keeps_estimators=True).reason
    assert "not a dense" in choose("node", sp.csr_matrix(X), SPLITS, comm, n_candidates=2).reason


def test_node_folds_buffer_equals_fancy_indexing():
    fold_buffer, failure = NodeFolds.open(X, SPLITS, MPI.COMM_SELF)
    assert failure is None and fold_buffer is not None
    try:
        for split, (train, test) in enumerate(SPLITS):
            X_train, X_test = fold_buffer.load(X, train, test, split)
            np.testing.assert_array_equal(X_train, X[train])
            np.testing.assert_array_equal(X_test, X[test])
            assert not X_train.flags.writeable and not X_test.flags.writeable
            assert X_train.flags.c_contiguous and X_train.dtype == X.dtype
    finally:
        fold_buffer.close()
    assert fold_buffer.win is None


def test_take_rows_without_temporary_checks_bounds():
    from hpcml.cv.folds import _take_rows

    out = np.empty((3, 4))
    _take_rows(X, np.array([9, -1, 0]), out)
    np.testing.assert_array_equal(out, X[[9, -1, 0]])
    with pytest.raises(IndexError, match="out of range"):
        _take_rows(X, np.array([1, 10, 2]), out)
    with pytest.raises(IndexError, match="out of range"):
        _take_rows(X, np.array([1, -11, 2]), out)

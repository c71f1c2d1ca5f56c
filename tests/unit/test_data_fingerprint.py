"""Data fingerprints for --resume: any change a user can make changes the fingerprint, text X included."""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from hpcml.data.fingerprint import fingerprints, what_changed


def _print(**arrays):
    return fingerprints(arrays, MPI.COMM_SELF)


def test_one_changed_value_changes_the_fingerprint_and_is_named():
    X = np.arange(200.0).reshape(40, 5)
    changed = X.copy()
    changed[37, 4] += 1e-12
    before, after = _print(X=X, y=np.arange(40)), _print(X=changed, y=np.arange(40))
    assert before["y"] == after["y"]
    assert before["X"]["sha256"] != after["X"]["sha256"]
    assert what_changed(before, after) == "X values (same shape and dtype)"


def test_text_documents_are_fingerprinted_with_their_boundaries():
    same = _print(X=np.array(["ab", "c"], dtype=object))
    assert same == _print(X=np.array(["ab", "c"], dtype=object))
    # The same characters split differently are different data.
    assert same["X"]["sha256"] != _print(X=np.array(["a", "bc"], dtype=object))["X"]["sha256"]
    assert same["X"]["sha256"] != _print(X=np.array(["ab", "d"], dtype=object))["X"]["sha256"]

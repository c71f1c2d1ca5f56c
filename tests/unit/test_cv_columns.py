"""The bulk cv_results writer (hpcml.cv.columns) writes the same bytes as the per-value one it replaced."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from hpcml.cv import output
from hpcml.cv.columns import dumps_columns, to_json_value

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import _old_output as old  # noqa: E402


def _files(folder):
    with open(os.path.join(folder, output.CV_RESULTS_JSON), encoding="utf-8") as fh:
        text = fh.read()
    with open(os.path.join(folder, output.CV_RESULTS_CSV), encoding="utf-8", newline="") as fh:
        return text, fh.read()


def _sklearn_results():
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    grid = [
        {"C": [0.1, 1.0, 25.0], "kernel": ["linear", "rbf"], "class_weight": [None, "balanced", {0: 2, 1: 1}]},
        {"C": [1, 2], "gamma": ["scale", 0.5], "kernel": ["rbf"]},
    ]
    search = GridSearchCV(SVC(), grid, cv=3, return_train_score=True, error_score=np.nan).fit(X, y)
    return search.cv_results_


@pytest.mark.filterwarnings("ignore")
def test_sklearn_cv_results_bytes_equal_the_old_writer(tmp_path):
    results = {"model": ["svc"] * len(_sklearn_results()["params"]), **_sklearn_results()}
    output.write_cv_results(str(tmp_path), results)
    assert _files(str(tmp_path)) == old.cv_results_texts(results)


@pytest.mark.filterwarnings("ignore")
def test_failed_fits_nan_and_estimator_params_bytes_equal(tmp_path):
    X, y = make_classification(n_samples=40, n_features=4, random_state=1)
    grid = {"max_depth": [1, -5, 3], "criterion": ["gini", "nope"]}  # invalid values: NaN scores
    search = GridSearchCV(DecisionTreeClassifier(random_state=0), grid, cv=2, error_score=np.nan).fit(X, y)
    results = dict(search.cv_results_)
    assert np.isnan(results["mean_test_score"]).sum() == 4
    output.write_cv_results(str(tmp_path), results)
    assert _files(str(tmp_path)) == old.cv_results_texts(results)
    est = GridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=2).fit(X, y).cv_results_
    est = {**est, "param_C": np.ma.MaskedArray([LogisticRegression()], mask=[False], dtype=object)}
    est["params"] = [{"C": LogisticRegression(), "n": (1, 2.5, math.inf)}]
    assert dumps_columns(output.cv_results_columns(est)) == json.dumps(
        {k: old.to_json_value(v) for k, v in est.items()}, indent=1, allow_nan=False
    )


def test_odd_values_encode_like_json_dumps():
    columns = {
        "s": ['é\n"x"', "", "\u2603"],
        "n": [True, False, None],
        "i": [0, -(2**70), 3],
        "f": [0.1, 1e-300, -0.0],
        "nested": [{"a": [1, {"b": {}}]}, {}, []],
        "flat": [{"x": 1.5, "y": "z"}, {"é": None}, {"k": True}],
        "empty": [],
        "scalar": 5,
        "dict": {"a": 1},
    }
    assert dumps_columns(columns) == json.dumps(columns, indent=1, allow_nan=False)
    assert dumps_columns({}) == json.dumps({}, indent=1)
    with pytest.raises(ValueError):
        dumps_columns({"f": [{"x": math.nan}]})


def test_to_json_value_matches_the_recursion():
    values = [
        np.array([1.0, math.nan, -math.inf, 2.5]),
        np.array([1, 2], dtype=np.int32),
        np.array([True, False]),
        np.array([[1.0, math.nan], [3.0, 4.0]]),
        np.ma.MaskedArray([1, "a", None, 2.0, math.nan], mask=[0, 0, 1, 0, 0], dtype=object),
        np.array(["a", "b"]),
        [np.float32(0.5), (1, math.nan), {3: np.int64(4)}, object],
        np.float64(math.nan),
    ]
    for value in values:
        assert json.dumps(to_json_value(value)) == json.dumps(old.to_json_value(value))

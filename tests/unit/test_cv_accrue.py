"""cv_results folded as results arrive (hpcml.cv.accrue) equal the full path: scikit-learn's numbers, same bytes."""

from __future__ import annotations

import csv
import io
import math
import os
import random
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hpcml.cv import output
from hpcml.cv.accrue import ResultColumns, csv_field
from hpcml.cv.reduce import build_cv_results

GRID = (
    [{"C": c, "kernel": k, "class_weight": w} for c in (0.1, 1, 25.0) for k in ("linear", "rbf")
     for w in (None, "balanced", {0: 2, 1: 1})]
    + [{"C": c, "gamma": g, "kernel": "rbf"} for c in (1, 2) for g in ("scale", 0.5)]
    + [{"alpha": math.nan, "est": LogisticRegression(), "t": (1, 2.5)}, {"flag": True, "n": 2**70, "s": 'a,"b"\n'}]
)  # fmt: skip


def _files(folder):
    with open(os.path.join(folder, output.CV_RESULTS_JSON), encoding="utf-8") as fh:
        text = fh.read()
    with open(os.path.join(folder, output.CV_RESULTS_CSV), encoding="utf-8", newline="") as fh:
        return text, fh.read()


def _unit(rng, names, train, fail):
    def score():
        kind = rng.randrange(6)
        return [rng.random(), 0.5, np.float32(rng.random()), 1, np.float64(0.25), rng.random()][kind]

    def scores():
        if fail:
            return {n: math.nan for n in names} if names else math.nan
        return {n: score() for n in names} if names else score()

    out = {"test_scores": scores(), "fit_time": rng.random(), "score_time": rng.random() * 1e-3,
           "n_test_samples": 10, "fit_error": "Traceback" if fail else None}  # fmt: skip
    if train:
        out["train_scores"] = scores()
    return out


def _compare(tmp_path, params, n_splits, out, train, names, models, order_seed=0):
    """The fast path against the full one: numeric columns equal scikit-learn's, files byte-identical."""
    columns = ResultColumns(params, n_splits, models, names, train)
    order = list(range(len(out)))
    random.Random(order_seed).shuffle(order)  # arrival order is not unit order
    for unit in order:
        columns.add(unit, out[unit])
    assert columns.usable(), columns.failed
    with warnings.catch_warnings(record=True) as fast_warnings:
        warnings.simplefilter("always")
        results, json_text, csv_text = columns.finish()
    with warnings.catch_warnings(record=True) as full_warnings:
        warnings.simplefilter("always")
        full = build_cv_results(params, n_splits, out, train, models, names)
    assert [str(w.message) for w in fast_warnings] == [str(w.message) for w in full_warnings]
    numeric = [k for k in full if k not in ("model", "params") and not k.startswith("param_")]
    assert list(results) == ["model", *numeric[:4], "params", *numeric[4:]]
    for key in numeric:
        assert results[key].dtype == full[key].dtype, key
        np.testing.assert_array_equal(results[key], full[key], err_msg=key)
    output.write_cv_results(str(tmp_path), full)
    assert (json_text, csv_text) == _files(str(tmp_path))
    return full


@pytest.mark.parametrize("names", [None, ["accuracy", "f1_macro"]], ids=["single", "multimetric"])
@pytest.mark.parametrize("train", [False, True], ids=["test", "train"])
def test_folded_results_equal_sklearn_and_the_writer(tmp_path, names, train):
    rng = random.Random(0)
    n_splits = 3
    out = [_unit(rng, names, train, fail=(u % 7 == 3)) for u in range(len(GRID) * n_splits)]
    models = ["svc", 'm,"x"', "é"] * (len(GRID) // 3) + ["lr"] * (len(GRID) % 3)
    full = _compare(tmp_path, GRID, n_splits, out, train, names, models)
    key = "rank_test_" + (names[0] if names else "score")
    assert len(set(full[key].tolist())) > 5  # real ranks, ties included below


def test_failed_candidates_rank_last_and_all_failed_rank_one(tmp_path):
    params = [{"C": float(c)} for c in range(4)]
    out = [{"test_scores": s, "fit_time": 0.1, "score_time": 0.01, "n_test_samples": 5, "fit_error": None}
           for s in (0.5, 0.5, math.nan, math.nan, 0.5, 0.5, 0.9, math.inf)]  # fmt: skip
    full = _compare(tmp_path, params, 2, out, False, None, ["m"] * 4)
    assert full["rank_test_score"].tolist() == [2, 4, 2, 1]  # inf mean first, ties share a rank, NaN last
    nan = [{**item, "test_scores": math.nan} for item in out]
    assert _compare(tmp_path, params, 2, nan, False, None, ["m"] * 4)["rank_test_score"].tolist() == [1] * 4


def test_unknown_values_turn_the_fast_path_off():
    params = [{"C": 1.0}, {"C": 2.0}]
    good = {"test_scores": 0.5, "fit_time": 0.1, "score_time": 0.01, "n_test_samples": 5, "fit_error": None}
    cases = {
        "missing unit": [(0, good)],
        "unit twice": [(0, good), (0, good)],
        "score not a number": [(0, good), (1, {**good, "test_scores": "x"})],
        "dict for one scorer": [(0, good), (1, {**good, "test_scores": {"a": 1.0}})],
    }
    for why, items in cases.items():
        columns = ResultColumns(params, 1, ["m", "m"], None, False)
        for unit, result in items:
            columns.add(unit, result)
        assert not columns.usable(), why
        assert columns.finish() is None, why
    multi = ResultColumns(params, 1, ["m", "m"], ["a", "b"], False)
    multi.add(0, {**good, "test_scores": {"b": 1.0, "a": 1.0}})  # scikit-learn would order columns b, a
    multi.add(1, {**good, "test_scores": {"a": 1.0, "b": 1.0}})
    assert not multi.usable()
    odd = ResultColumns([{"z": 1 + 2j}], 1, ["m"], None, False)  # a complex parameter: the full path
    odd.add(0, good)
    assert odd.usable() and odd.finish() is None


def test_csv_field_quotes_as_the_csv_module():
    values = ["", "plain", "a,b", 'q"q', "line\nbreak", "cr\r", " lead", "é☃", 1.5, 3, True, None, -0.0, 1e300]
    buf = io.StringIO()
    csv.writer(buf).writerow(values)
    assert ",".join(csv_field(v) for v in values) + "\r\n" == buf.getvalue()

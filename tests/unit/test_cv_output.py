"""Journal, outputs and reduce (no MPI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpcml.cv import output
from hpcml.cv.journal import Journal, check_header, read_journal
from hpcml.cv.reduce import best_candidate, build_cv_results
from hpcml.errors import ConfigError


def _unit(score, fit_error=None):
    return {"test_scores": score, "fit_time": 0.1, "score_time": 0.01, "n_test_samples": 5, "fit_error": fit_error}


def test_journal_round_trip_and_torn_line(tmp_path):
    header = {"config_hash": "a", "data_fingerprint": "b", "plan_hash": "c"}
    j = Journal(str(tmp_path), header)
    j.append([{"unit": 0, **_unit(0.5)}, {"unit": 1, **_unit(math.nan, "Traceback...")}])
    j.close()
    with open(tmp_path / "journal.jsonl", "a") as fh:
        fh.write('{"type":"unit","unit":2,"te')
    got_header, units, count = read_journal(str(tmp_path))
    assert got_header["config_hash"] == "a" and count == 2
    assert units[0]["test_scores"] == 0.5 and math.isnan(units[1]["test_scores"])
    Journal(str(tmp_path), header).close()  # resume after the torn line starts on a fresh line
    _, units, _ = read_journal(str(tmp_path))
    assert set(units) == {0, 1}
    check_header(got_header, header, "j")
    with pytest.raises(ConfigError, match="config file changed"):
        check_header(got_header, {**header, "config_hash": "z"}, "j")


def test_floats_round_trip_exactly_through_the_journal(tmp_path):
    values = list(np.random.default_rng(0).random(50))
    j = Journal(str(tmp_path), {})
    j.append([{"unit": i, **_unit(v)} for i, v in enumerate(values)])
    j.close()
    _, units, _ = read_journal(str(tmp_path))
    assert [units[i]["test_scores"] for i in range(50)] == values


def test_cv_results_json_nan_and_masked(tmp_path):
    params = [{"C": 1}, {"C": 2}, {"max_depth": 3}]
    out = [_unit(0.9), _unit(0.8), _unit(math.nan, "boom"), _unit(0.7), _unit(0.6), _unit(0.5)]
    res = build_cv_results(params, 2, out, False, models=["svc", "svc", "tree"])
    output.write_cv_results(str(tmp_path), res)
    data = json.loads((tmp_path / "cv_results.json").read_text())
    assert data["model"] == ["svc", "svc", "tree"]
    assert data["param_C"] == [1, 2, None] and data["param_max_depth"] == [None, None, 3]
    assert data["split0_test_score"][1] is None  # NaN -> null
    assert data["rank_test_score"] == [1, 3, 2]
    best = best_candidate(res, "score")
    assert best["best_index"] == 0 and best["model"] == "svc"
    rows = (tmp_path / "cv_results.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("model,")


def test_partial_results_fill_missing_units(tmp_path):
    res = build_cv_results(
        [{"C": 1}, {"C": 2}], 2, [_unit(0.9), None, None, None], False, ["m", "m"], scoring_names=None
    )
    assert math.isnan(res["mean_test_score"][0]) and res["split0_test_score"][0] == 0.9
    output.write_cv_results(str(tmp_path), res, partial=True)
    assert (tmp_path / "cv_results.partial.json").exists() and not (tmp_path / "cv_results.json").exists()


def test_atomic_write_leaves_no_temporary(tmp_path):
    output.atomic_write(str(tmp_path / "f.json"), "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]

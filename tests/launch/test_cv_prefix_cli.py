"""Prefix reuse at 3 ranks (the pytest-mpi tier runs 1, 2 and 4) and through the CLI's run.json."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import PYTHON, ROOT, run, run_mpi
from sklearn import model_selection as skms
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from tier_launch import run_tier_file


def test_prefix_tier_at_three_ranks(tmp_path):
    # every rank's outcome file, not the ranks' summary lines (the launcher may interleave them)
    outcomes = run_tier_file(3, ROOT / "tests" / "mpi" / "test_cv_prefix_mpi.py", tmp_path, timeout=600)
    assert len(outcomes) >= 9


TEXT_CONFIG = """
[data]
path = "text.h5"
[[model]]
name = "text"
steps = [
  { name = "vect", estimator = "sklearn.feature_extraction.text.CountVectorizer" },
  { name = "tfidf", estimator = "sklearn.feature_extraction.text.TfidfTransformer" },
  { name = "clf", estimator = "sklearn.linear_model.SGDClassifier", params = { random_state = 0 } },
]
grid = { vect__ngram_range = [[1, 1], [1, 2]], tfidf__norm = ["l1", "l2"], clf__alpha = [1e-4, 1e-3] }
[cv]
splitter = "KFold"
n_splits = 3
[scoring]
metrics = ["accuracy", "f1"]
[run]
return_train_score = true
prefix_cache_bytes = 100000000
"""


@pytest.mark.parametrize("n", [2, 3])
def test_cli_text_grid_from_csv_equals_sklearn(tmp_path, n):
    rng = np.random.RandomState(0)
    words = np.array("alpha beta gamma delta epsilon zeta eta theta iota kappa".split())
    y = rng.randint(0, 2, 240)
    docs = [", ".join(rng.choice(words[:7] if c else words[3:], 8)) for c in y]
    with open(tmp_path / "docs.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["body", "label"], *zip(docs, y.tolist())])
    proc = run([PYTHON, "-m", "hpcml.data", "convert", "docs.csv", "text.h5", "--text", "body"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "c.toml").write_text(TEXT_CONFIG)
    proc = run_mpi(n, ["-m", "hpcml.cv", "c.toml", "--out", "out", "--quiet"], timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pipe = Pipeline(
        [("vect", CountVectorizer()), ("tfidf", TfidfTransformer()), ("clf", SGDClassifier(random_state=0))]
    )
    grid = {"vect__ngram_range": [(1, 1), (1, 2)], "tfidf__norm": ["l1", "l2"], "clf__alpha": [1e-4, 1e-3]}
    ref = skms.GridSearchCV(
        pipe, grid, cv=skms.KFold(3), scoring=["accuracy", "f1"], refit="accuracy", return_train_score=True
    ).fit(docs, y)
    ours = json.loads((tmp_path / "out" / "cv_results.json").read_text())
    for key, value in ref.cv_results_.items():
        if key.startswith(("split", "mean_test", "mean_train", "std_test", "rank")):
            np.testing.assert_allclose(np.array(ours[key], dtype=float), value, atol=1e-12, rtol=0, err_msg=key)
    prefix = json.loads((tmp_path / "out" / "run.json").read_text())["folds"]["prefix"]
    assert prefix["fits"] == 2 * 3 + 4 * 3  # distinct (prefix, fold) pairs
    assert prefix["avoided"] == 2 * 8 * 3 - prefix["fits"]
    assert prefix["budget_bytes"] == 100000000

"""Config parsing and validation (no MPI, no data)."""

from __future__ import annotations

import math

import pytest

from hpcml.cv.config import load_config
from hpcml.errors import ConfigError

BASE = """
[data]
path = "d.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [1, 10] }
"""


def parse(text: str):
    return load_config(text.encode(), "/tmp/x/search.toml")


def test_defaults():
    cfg = parse(BASE)
    assert cfg.data.path == "/tmp/x/d.h5" and cfg.data.y == "y"
    assert cfg.cv == 5 and cfg.scoring is None and cfg.refit_metric == "score"
    assert math.isnan(cfg.error_score) and cfg.refit and not cfg.return_train_score
    assert [c for c in cfg.models[0].candidates()] == [{"C": 1}, {"C": 10}]
    assert cfg.fold_copies == "auto"
    assert parse(BASE + '[run]\nfold_copies = "node"\n').fold_copies == "node"


def test_grid_list_none_and_pipeline():
    cfg = parse(
        BASE
        + """
[[model]]
name = "tree"
estimator = "sklearn.tree.DecisionTreeClassifier"
grid = [ { max_depth = [2, "None"] }, { criterion = ["entropy"] } ]

[[model]]
name = "pipe"
steps = [ { name = "s", estimator = "sklearn.preprocessing.StandardScaler" },
          { name = "c", estimator = "sklearn.linear_model.LogisticRegression", params = { max_iter = 50 } } ]
grid = { c__C = [0.1] }
params = { s__with_mean = false }

[cv]
splitter = "RepeatedStratifiedKFold"
n_splits = 3
n_repeats = 2
random_state = 1

[scoring]
metrics = { acc = "accuracy", bal = "balanced_accuracy" }
refit = "bal"
"""
    )
    tree = cfg.models[1].candidates()
    assert {"max_depth": None} in tree and {"criterion": "entropy"} in tree
    assert cfg.models[2].estimator.get_params()["s__with_mean"] is False
    assert cfg.cv.get_n_splits() == 6
    assert (
        cfg.multimetric and cfg.refit_metric == "bal" and cfg.scoring == {"acc": "accuracy", "bal": "balanced_accuracy"}
    )


def test_distributions():
    cfg = parse(
        BASE.replace(
            "grid = { C = [1, 10] }",
            'distributions = { C = { dist = "loguniform", low = 1e-3, high = 1e3 }, '
            'kernel = ["rbf", "linear"] }\nn_iter = 7',
        )
        + "[run]\nrandom_state = 3\n"
    )
    cands = cfg.models[0].candidates()
    assert len(cands) == 7 and all(1e-3 <= c["C"] <= 1e3 for c in cands)
    assert cands == cfg.models[0].candidates()  # seeded


@pytest.mark.parametrize(
    "text,needle",
    [
        (BASE + "[cv]\nn_splitz = 3\n", "n_splitz"),
        (BASE + '[run]\nerror_score = "maybe"\n', "error_score"),
        (BASE + "[run]\nrefit = 1\n", "refit"),
        (BASE + '[run]\nfold_copies = "shared"\n', "fold_copies"),
        (BASE.replace("SVC", "SVQ"), "unknown estimator"),
        (BASE.replace("sklearn.svm.SVC", "os.system"), "estimator"),
        (BASE.replace("C = [1, 10]", "Cc = [1]"), "invalid parameter 'Cc'"),
        (BASE.replace("C = [1, 10]", "C = []"), "empty"),
        (BASE.replace("C = [1, 10]", "C = 1"), "expected an array"),
        (BASE + '[cv]\nsplitter = "Nope"\n', "unknown splitter"),
        (BASE + '[cv]\nsplitter = "KFold"\nshuffle = false\nrandom_state = 1\n', "[cv]"),
        (BASE + '[scoring]\nmetrics = ["acc"]\n', "unknown scorer 'acc'"),
        (BASE + '[scoring]\nmetrics = ["accuracy", "f1_macro"]\nrefit = "r2"\n', "refit"),
        (BASE + "[extra]\n", "unknown key 'extra'"),
        (BASE.replace("[data]\npath", "[data]\npaht"), "path"),
        ("[data\n", "line 1"),
        (BASE + '[[model]]\nname = "svc"\nestimator = "sklearn.svm.SVC"\n', "duplicate model name"),
        ('[data]\npath = "d.h5"\n', "no [[model]]"),
    ],
)
def test_errors_name_the_key(text, needle):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert needle in str(info.value)
    assert str(info.value).startswith("/tmp/x/search.toml")


MODEL = '[data]\npath = "d.h5"\n[[model]]\n'
LOGUNIFORM = 'distributions = { C = { dist = "loguniform", a = 0.1, b = 10 } }\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\nsteps = [ { name = "c", estimator = "sklearn.svm.SVC" } ]\n'
            "grid = { C = [1] }\n",
            "[[model]] #1: give either estimator or steps, not both",
        ),
        (MODEL + "steps = []\ngrid = { C = [1] }\n", "[[model]] #1 steps: a pipeline needs at least one step"),
        (MODEL + 'name = "x"\ngrid = { C = [1] }\n', "[[model]] x estimator: required key is missing"),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\ngrid = { C = [1] }\n' + LOGUNIFORM,
            "[[model]] #1: give either grid or distributions, not both",
        ),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\ndistributions = { C = { dist = "nosuch", a = 0.1 } }\n',
            "[[model]] #1 distributions.C: unknown distribution 'nosuch' (any scipy.stats distribution)",
        ),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\ndistributions = { C = { dist = "loguniform", a = -1, b = 10 } }\n',
            "[[model]] #1 distributions.C: invalid loguniform distribution: ",
        ),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\ndistributions = { C = { a = 1 } }\n',
            "[[model]] #1 distributions.C: expected a list of choices or a table like",
        ),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\n' + LOGUNIFORM.replace("{ C =", "{ Cx ="),
            "[[model]] #1 distributions: invalid parameter 'Cx' for estimator sklearn.svm.SVC",
        ),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\n' + LOGUNIFORM + "n_iter = 0\n",
            "[[model]] #1 n_iter: must be at least 1",
        ),
        (
            MODEL + 'estimator = "sklearn.svm.SVC"\ngrid = { C = [1] }\nn_iter = 5\n',
            "[[model]] #1 n_iter: only applies with distributions (a grid runs every candidate)",
        ),
    ],
    ids=[
        "estimator+steps",
        "empty steps",
        "neither estimator nor steps",
        "grid+distributions",
        "unknown distribution",
        "bad distribution arguments",
        "distribution without dist",
        "distribution of an unknown parameter",
        "n_iter < 1",
        "n_iter with a grid",
    ],
)
def test_model_combinations_are_refused_with_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert str(info.value).startswith(f"/tmp/x/search.toml: {message}"), str(info.value)


def test_distributions_of_choices_sample_n_iter_candidates_like_sklearn():
    from sklearn.model_selection import ParameterSampler

    cfg = parse(
        MODEL + 'estimator = "sklearn.svm.SVC"\ndistributions = { C = [0.1, 1, 10] }\nn_iter = 2\nrandom_state = 3\n'
    )
    (model,) = cfg.models
    assert model.grid is None and model.n_iter == 2
    assert model.candidates() == list(ParameterSampler({"C": [0.1, 1, 10]}, 2, random_state=3))

"""The ``[search]`` table: strategies and halving parameters (no MPI, no data)."""

from __future__ import annotations

import pytest

from hpcml.cv.config import load_config
from hpcml.cv.strategy import SearchStrategy
from hpcml.errors import ConfigError

GRID = """
[data]
path = "d.h5"

[[model]]
name = "rf"
estimator = "sklearn.ensemble.RandomForestClassifier"
grid = { max_depth = [2, 4] }

[run]
random_state = 0
"""

RANDOM = """
[data]
path = "d.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
distributions = { C = { dist = "loguniform", low = 1e-2, high = 1e2 } }

[run]
random_state = 0
"""

SECOND_MODEL = """
[[model]]
name = "tree"
estimator = "sklearn.tree.DecisionTreeClassifier"
grid = { max_depth = [2, 4] }
"""


def parse(text: str):
    return load_config(text.encode(), "/tmp/x/search.toml")


def test_no_table_keeps_todays_behaviour():
    assert parse(GRID).search == SearchStrategy()
    assert parse(GRID).search.strategy is None and not parse(GRID).search.halving


def test_grid_and_random():
    assert parse(GRID + '[search]\nstrategy = "grid"\n').search.strategy == "grid"
    assert parse(RANDOM + '[search]\nstrategy = "random"\n').search.strategy == "random"


def test_halving_defaults_follow_sklearn_classes():
    grid = parse(GRID + '[search]\nstrategy = "halving"\n').search
    assert (grid.factor, grid.resource, grid.min_resources, grid.max_resources) == (3, "n_samples", "exhaust", "auto")
    assert grid.aggressive_elimination is False and grid.random_state == 0 and grid.halving
    rnd = parse(RANDOM + '[search]\nstrategy = "halving"\nn_candidates = 12\n').search
    assert (rnd.min_resources, rnd.n_candidates) == ("smallest", 12)


def test_halving_all_keys_and_integer_resource():
    s = parse(
        GRID
        + """[search]
strategy = "halving"
factor = 2
resource = "n_estimators"
min_resources = 4
max_resources = 64
aggressive_elimination = true
"""
    ).search
    assert s.sklearn_params() == {
        "factor": 2.0,
        "resource": "n_estimators",
        "min_resources": 4,
        "max_resources": 64,
        "aggressive_elimination": True,
    }


def test_async_halving_keys_parse_with_several_models():
    s = parse(GRID + SECOND_MODEL + '[search]\nstrategy = "async_halving"\nfactor = 4\nmin_resources = 30\n').search
    assert s.strategy == "async_halving" and s.factor == 4 and s.min_resources == 30


BAD = {
    "unknown-strategy": ('strategy = "hyperband"', "strategy", "expected one of"),
    "missing-strategy": ("factor = 2", "strategy", "required"),
    "unknown-key": ('strategy = "halving"\nfactr = 2', "factr", "unknown key"),
    "grid-with-halving-key": ('strategy = "grid"\nfactor = 2', "factor", "unknown key"),
    "factor-one": ('strategy = "halving"\nfactor = 1', "factor", "greater than 1"),
    "factor-string": ('strategy = "halving"\nfactor = "two"', "factor", "expected"),
    "resource-unknown": ('strategy = "halving"\nresource = "n_trees"\nmax_resources = 9', "n_trees", "not a parameter"),
    "resource-searched": (
        'strategy = "halving"\nresource = "max_depth"\nmax_resources = 9',
        "max_depth",
        "search space",
    ),
    "resource-auto": ('strategy = "halving"\nresource = "n_estimators"', "max_resources", "'auto' only"),
    "min-word": ('strategy = "halving"\nmin_resources = "all"', "min_resources", "'exhaust'"),
    "min-zero": ('strategy = "halving"\nmin_resources = 0', "min_resources", "positive"),
    "min-over-max": ('strategy = "halving"\nmin_resources = 50\nmax_resources = 40', "min_resources", "greater"),
    "aggressive-type": ('strategy = "halving"\naggressive_elimination = "yes"', "aggressive_elimination", "boolean"),
    "n-candidates-grid": ('strategy = "halving"\nn_candidates = 5', "n_candidates", "distributions"),
    "random-needs-dists": ('strategy = "random"', "strategy", "distributions"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_search_table(case):
    body, key, needle = BAD[case]
    with pytest.raises(ConfigError) as err:
        parse(GRID + "[search]\n" + body + "\n")
    assert "[search]" in str(err.value) and key in str(err.value) and needle in str(err.value), str(err.value)


def test_halving_refusals():
    with pytest.raises(ConfigError, match=r"'halving' searches one \[\[model\]\].*has 2"):
        parse(GRID + SECOND_MODEL + '[search]\nstrategy = "halving"\n')
    with pytest.raises(ConfigError, match="set \\[run\\] random_state"):
        parse(GRID.replace("random_state = 0", "") + '[search]\nstrategy = "halving"\n')
    with pytest.raises(ConfigError, match="cannot both be 'exhaust'"):
        parse(RANDOM + '[search]\nstrategy = "halving"\nmin_resources = "exhaust"\n')
    with pytest.raises(ConfigError, match="one metric"):
        parse(GRID + '[scoring]\nmetrics = ["accuracy", "f1_macro"]\n[search]\nstrategy = "halving"\n')
    with pytest.raises(ConfigError, match="'grid' needs a grid"):
        parse(RANDOM + '[search]\nstrategy = "grid"\n')

"""Strict TOML config of ``python -m hpcml.sgd`` (no launch)."""

from __future__ import annotations

import sys

import pytest

from hpcml.errors import ConfigError
from hpcml.sgd.config import load_config


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_full_config_round_trip(tmp_path):
    path = write(
        tmp_path,
        """
[data]
path = "train.h5"
test_path = "test.h5"
X = "features"
[model]
type = "regressor"
loss = "huber"
epsilon = 0.5
penalty = "elasticnet"
l1_ratio = 0.3
[train]
max_iter = 7
batch_size = 512
sampling = "local"
tol = "none"
momentum = 0.9
nesterov = true
early_stopping = true
[schedule]
name = "cosine"
eta0 = 0.4
warmup_steps = 10
[output]
dir = "out"
plot = false
[run]
threads_per_rank = 2
""",
    )
    cfg = load_config(path)
    assert cfg.data_path == str(tmp_path / "train.h5") and cfg.test_path == str(tmp_path / "test.h5")
    assert cfg.X == "features" and cfg.model_type == "regressor" and cfg.threads_per_rank == 2
    p = cfg.estimator_params
    assert p["loss"] == "huber" and p["epsilon"] == 0.5 and p["tol"] is None and p["sampling"] == "local"
    assert p["learning_rate"] == "cosine" and p["eta0"] == 0.4 and p["nesterov"] is True
    assert cfg.out_dir == str(tmp_path / "out") and cfg.plot is False  # relative to the config file
    from hpcml.sgd import SGDRegressor

    SGDRegressor(**p)  # every key is an estimator parameter


@pytest.mark.parametrize(
    "text,fragment",
    [
        ('[data]\npath = "a.h5"\nbogus = 1\n', "[data]: unknown key 'bogus'"),
        ('[data]\npath = "a.h5"\n[trian]\n', "unknown key 'trian'"),
        ("[model]\n", "required table [data] is missing"),
        ('[data]\npath = "a.h5"\n[model]\nloss = "squared_error"\n', "[model] loss: expected one of"),
        ('[data]\npath = "a.h5"\n[train]\nbatch_size = "big"\n', '[train] batch_size: must be "auto" or a positive'),
        ('[data]\npath = "a.h5"\n[train]\nbatch_size = 0\n', "[train] batch_size: must be >= 1"),
        ('[data]\npath = "a.h5"\n[train]\nnesterov = true\n', "nesterov: needs momentum > 0"),
        ('[data]\npath = "a.h5"\n[model]\nepsilon = 0.2\n', "epsilon: only applies"),
        ('[data]\npath = "a.h5"\n[schedule]\neta0 = 0\n', "[schedule] eta0: must be > 0"),
        ('[data]\npath = "a.h5"\n[train]\nvalidation_fraction = 1.0\n', "validation_fraction: must be < 1"),
        ("[data\n", "TOML syntax error"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert fragment in str(info.value)
    assert "c.toml" in str(info.value)


def test_demo_needs_no_config_and_reading_does_not_load_numpy(tmp_path):
    cfg = load_config(None, demo=True)
    assert cfg.data_path is None and cfg.estimator_params["loss"] == "log_loss"
    with pytest.raises(ConfigError, match="config file is required"):
        load_config(None)
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.toml"))
    import subprocess

    code = "import sys, hpcml.sgd, hpcml.sgd.config; assert 'numpy' not in sys.modules, 'numpy loaded'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

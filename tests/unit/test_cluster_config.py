"""Strict TOML config of ``python -m hpcml.cluster`` (no launch)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcml.cluster.config import load_config
from hpcml.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def test_full_config_round_trip(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            """
[data]
path = "d.h5"
X = "features"
sample_weight = "w"
[model]
n_clusters = 12
init = "k-means||"
n_init = 3
max_iter = 50
tol = 0
random_state = "none"
oversampling_factor = 0.5
init_max_iter = 4
[output]
dir = "out"
labels = false
[run]
threads_per_rank = 2
verbose = true
""",
        )
    )
    assert cfg.data_path == str(tmp_path / "d.h5") and cfg.X == "features" and cfg.sample_weight == "w"
    assert cfg.params == {
        "n_clusters": 12,
        "init": "k-means||",
        "n_init": 3,
        "max_iter": 50,
        "tol": 0.0,
        "random_state": None,
        "oversampling_factor": 0.5,
        "init_max_iter": 4,
    }
    assert (cfg.out_dir, cfg.labels, cfg.threads_per_rank, cfg.verbose) == (str(tmp_path / "out"), False, 2, True)


def test_defaults_are_sklearns(tmp_path):
    cfg = load_config(write(tmp_path, '[data]\npath = "d.h5"\n'))
    assert cfg.params == {
        "n_clusters": 8,
        "init": "k-means++",
        "n_init": "auto",
        "max_iter": 300,
        "tol": 1e-4,
        "random_state": 0,
        "oversampling_factor": 2.0,
        "init_max_iter": None,
    }
    assert cfg.init_centers is None and cfg.labels is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nn_clusters = 3\n", "required table [data] is missing"),
        ('[data]\npath = "d.h5"\n[model]\nn_clusters = 0\n', "[model] n_clusters: must be >= 1, got 0"),
        ('[data]\npath = "d.h5"\n[model]\ninit = "kmeans"\n', "[model] init: expected one of"),
        ('[data]\npath = "d.h5"\n[model]\ninit = "random"\ninit_centers = "c.npy"\n', "not both"),
        ('[data]\npath = "d.h5"\n[model]\nn_init = "many"\n', '[model] n_init: must be "auto" or a positive'),
        ('[data]\npath = "d.h5"\n[model]\ntol = -1\n', "[model] tol: must be a finite number >= 0"),
        ('[data]\npath = "d.h5"\n[model]\nrandom_state = "x"\n', '[model] random_state: expected an integer or "none"'),
        ('[data]\npath = "d.h5"\n[model]\noversampling_factor = 0\n', "oversampling_factor: must be a finite number"),
        ('[data]\npath = "d.h5"\n[model]\nalgorithm = "elkan"\n', "[model]: unknown key 'algorithm'"),
        ('[data]\npath = "d.h5"\n[train]\nmax_iter = 3\n', "unknown key 'train'"),
    ],
)
def test_bad_keys_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "c.toml"))


def test_reading_the_config_does_not_load_numpy():
    code = "import sys, hpcml.cluster, hpcml.cluster.config; assert 'numpy' not in sys.modules, 'numpy loaded'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_kmeans_is_exported_lazily_and_is_sklearns():
    code = (
        "import sys, hpcml; assert 'numpy' not in sys.modules\n"
        "from sklearn.cluster import KMeans as SK\n"
        "import hpcml.cluster\n"
        "assert hpcml.KMeans is hpcml.cluster.KMeans and issubclass(hpcml.KMeans, SK)\n"
        "assert 'KMeans' in dir(hpcml)\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""Output folders and config values from the sweep of issue #13 (docs/reliability.md, "Sweep of kills ...").

Each launch is a user's mistake that must end every rank with exactly one
``hpcml: error:`` line from rank 0 (exit 2), before any work, at 3 ranks so
that a line printed per rank would show.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from cvfixtures import BASIC, write_config, write_digits
from helpers import run_mpi
from test_adversarial_turn import HALVING, KMEANS, _one_error_line

#: A folder that exists and that the OS refuses files in, even to root (whose ``access()`` says writable).
SYSFS_FOLDER = "/sys/kernel"


def _blobs(folder):
    rng = np.random.RandomState(0)
    with h5py.File(folder / "blobs.h5", "w") as fh:
        fh["X"] = np.vstack([rng.randn(40, 4) + c for c in (0.0, 6.0, 12.0)])


def _sgd_config(folder, extra: str = ""):
    write_digits(folder / "digits.h5", n=120)
    text = '[data]\npath = "digits.h5"\n\n[model]\ntype = "classifier"\n\n[train]\nmax_iter = 2\n' + extra
    return write_config(folder / "sgd.toml", text)


@pytest.mark.parametrize("tool", ["cluster", "cv", "sgd"])
def test_out_in_a_folder_that_refuses_files_is_one_line_before_any_work(tmp_path, tool):
    # was (cluster, cv; root): os.access() said writable, the fit ran, then the first write raised
    # PermissionError: a traceback and exit 1 (cluster after the whole fit)
    assert os.path.isdir(SYSFS_FOLDER)
    if tool == "cluster":
        _blobs(tmp_path)
        cfg = write_config(tmp_path / "k.toml", KMEANS)
    elif tool == "cv":
        write_digits(tmp_path / "digits.h5", n=60)
        cfg = write_config(tmp_path / "s.toml", BASIC)
    else:
        cfg = _sgd_config(tmp_path)
    proc = run_mpi(3, ["-m", f"hpcml.{tool}", str(cfg), "--out", SYSFS_FOLDER], timeout=240, cwd=tmp_path)
    _one_error_line(proc, rf"^hpcml: error: {SYSFS_FOLDER}: output folder is not writable \(Permission denied\)$")
    assert not any(name.startswith(".hpcml-probe-") for name in os.listdir(SYSFS_FOLDER))


@pytest.mark.parametrize(
    ("tool", "line", "expected"),
    [
        ("cluster", 'init_centers = ""', r'k\.toml \[model\] init_centers: must name a \.npy file, got ""$'),
        ("cluster", '[output]\ndir = ""', r'k\.toml \[output\] dir: must name a folder, got ""$'),
        ("cv", '[run]\nout = ""', r's\.toml: \[run\] out: must name a folder, got ""$'),
        ("sgd", '[output]\ndir = ""', r'sgd\.toml \[output\] dir: must name a folder, got ""$'),
    ],
)
def test_empty_path_in_a_config_is_one_line(tmp_path, tool, line, expected):
    # was: init_centers = "" silently meant k-means++; an empty output folder silently meant the config's folder
    if tool == "cluster":
        _blobs(tmp_path)
        text = KMEANS.replace("n_clusters = 3", "n_clusters = 3\n" + line) if "init" in line else KMEANS + line
        cfg = write_config(tmp_path / "k.toml", text + "\n")
    elif tool == "cv":
        write_digits(tmp_path / "digits.h5", n=60)
        cfg = write_config(tmp_path / "s.toml", BASIC + "\n" + line + "\n")
    else:
        cfg = _sgd_config(tmp_path, "\n" + line + "\n")
    before = sorted(os.listdir(tmp_path))
    proc = run_mpi(3, ["-m", f"hpcml.{tool}", str(cfg)], timeout=240, cwd=tmp_path)
    _one_error_line(proc, expected)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written beside the config


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KMEANS.replace("n_clusters = 3", "n_clusters = true"), r"\[model\] n_clusters: expected an integer"),
        (KMEANS.replace("n_clusters = 3", "n_clusters = 3\nn_init = [2]"), r"\[model\] n_init: expected"),
        (KMEANS.replace("n_clusters = 3", "n_clusters = 3\ntol = 1979-05-27"), r"\[model\] tol: expected a number"),
        (KMEANS + "[output]\nlabels = 1\n", r"\[output\] labels: expected a boolean"),
        (KMEANS + '[run]\nverbose = "yes"\n', r"\[run\] verbose: expected a boolean"),
        (KMEANS + "[run]\nthreads_per_rank = 1.5\n", r"\[run\] threads_per_rank: expected an integer"),
    ],
)
def test_bad_toml_types_for_kmeans_are_one_line(tmp_path, text, expected):
    _blobs(tmp_path)
    cfg = write_config(tmp_path / "k.toml", text)
    proc = run_mpi(3, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "o")], timeout=240, cwd=tmp_path)
    _one_error_line(proc, expected)
    assert not (tmp_path / "o").exists()


RUN = "[run]\nrandom_state = 0"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("factor = 2", 'factor = "x"', r"\[search\] factor: expected a number"),
        ("min_resources = 60", "min_resources = [60]", r"\[search\] min_resources: expected"),
        ("factor = 2", "factor = 2\naggressive_elimination = 1", r"\[search\] aggressive_elimination: expected a bool"),
        (RUN, RUN + "\nprefix_cache_bytes = true", r"\[run\] prefix_cache_bytes: expected"),
        (RUN, RUN + "\nfold_copies = 1", r"\[run\] fold_copies: expected a string"),
        (RUN, RUN + "\ndispatch = { a = 1 }", r"\[run\] dispatch: expected a string"),
        ('path = "digits.h5"', 'path = "digits.h5"\nload = true', r"\[data\] load: expected a string"),
    ],
)
@pytest.mark.parametrize("strategy", ["halving", "async_halving"])
def test_bad_toml_types_for_search_keys_are_one_line(tmp_path, strategy, old, new, expected):
    write_digits(tmp_path / "digits.h5", n=300)
    text = HALVING.replace('"halving"', f'"{strategy}"')
    if strategy == "async_halving":
        text = text.replace("factor = 2\n", "factor = 3\n").replace("factor = 2", "factor = 3")
        old, new = old.replace("factor = 2", "factor = 3"), new.replace("factor = 2", "factor = 3")
    assert old in text
    cfg = write_config(tmp_path / "s.toml", text.replace(old, new))
    out = tmp_path / "o"
    proc = run_mpi(3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, cwd=tmp_path)
    _one_error_line(proc, expected)
    assert not out.exists()

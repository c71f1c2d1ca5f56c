"""Defects found by the adversarial sweep of the adaptive/KMeans/reuse turn, each launched as a user would.

docs/reliability.md ("Sweep of the adaptive/KMeans/reuse turn") holds the whole
table; these are the cases that did not hold, fixed, plus one launch per new
entry point that must stay a one-line usage error.  Every launch has a hard
timeout (tests/helpers.run kills the process group).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from cvfixtures import BASIC, write_config, write_digits
from helpers import PYTHON, finish, mpiexec_path, ready_count, run_mpi, start, wait_until

HALVING = (
    BASIC.replace("C = [0.5, 5], gamma = [1e-3, 1e-2]", "C = [0.5, 1, 2, 4], gamma = [1e-3, 1e-2]").replace(
        'metrics = ["accuracy", "f1_macro"]\nrefit = "accuracy"', 'metrics = ["accuracy"]'
    )
    + '\n[search]\nstrategy = "halving"\nfactor = 2\nmin_resources = 60\n\n[run]\nrandom_state = 0\n'
)

KMEANS = '[data]\npath = "blobs.h5"\nX = "X"\n\n[model]\nn_clusters = 3\nrandom_state = 0\n'


def _one_error_line(proc, pattern: str) -> str:
    """The launch exited 2 with exactly one ``hpcml: error:`` line matching ``pattern`` (a regex) on stderr."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("hpcml: error: ") and re.search(pattern, lines[0]), lines[0]
    return lines[0]


def _blobs(folder: Path) -> None:
    rng = np.random.RandomState(0)
    with h5py.File(folder / "blobs.h5", "w") as fh:
        fh["X"] = np.vstack([rng.randn(40, 4) + c for c in (0.0, 6.0, 12.0)])


@pytest.mark.parametrize("strategy", ["halving", "async_halving"])
def test_max_resources_beyond_the_samples_is_one_line(tmp_path, strategy):
    # was: halving ran the first rung, then scikit-learn's resample raised in a unit (exit 1, a traceback per rank)
    write_digits(tmp_path / "digits.h5", n=300)
    text = HALVING.replace('"halving"', f'"{strategy}"').replace(
        "min_resources = 60", "min_resources = 60\nmax_resources = 1000000000000"
    )
    cfg = write_config(tmp_path / "s.toml", text)
    out = tmp_path / "o"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, cwd=tmp_path)
    _one_error_line(proc, r"max_resources.* 1000000000000 is greater than the number of samples \(300\)")
    assert not out.exists() or not any(out.iterdir())  # refused before any unit: nothing written


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_kmeans_init_centers_not_finite_is_one_line(tmp_path, bad):
    # was: scikit-learn's "Input contains NaN" raised inside the fit, exit 1 with a traceback per rank
    _blobs(tmp_path)
    centers = np.arange(12.0).reshape(3, 4)
    centers[1, 2] = float(bad)
    np.save(tmp_path / "c.npy", centers)
    cfg = write_config(tmp_path / "k.toml", KMEANS.replace("n_clusters = 3", 'n_clusters = 3\ninit_centers = "c.npy"'))
    proc = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "o")], timeout=240, cwd=tmp_path)
    _one_error_line(proc, r"\[model\] init_centers: .*c\.npy must hold finite numbers")
    assert not (tmp_path / "o").exists()


def test_kmeans_text_x_is_one_line(tmp_path):
    # was: a 1-D string X passed the checks (text X is valid for searches); NumPy's "could not convert
    # string to float" ended the fit with exit 1 and a traceback per rank
    with h5py.File(tmp_path / "blobs.h5", "w") as fh:
        fh["X"] = np.array([b"one document", b"another"] * 10)
    cfg = write_config(tmp_path / "k.toml", KMEANS)
    proc = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "o")], timeout=240, cwd=tmp_path)
    _one_error_line(proc, r"blobs\.h5: X 'X' holds .* values; hpcml\.cluster needs numbers")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("tol = nan", r"\[model\] tol: must be a finite number >= 0, got nan"),
        ('init = "k-means||"\noversampling_factor = inf', r"oversampling_factor: must be a finite number > 0"),
    ],
)
def test_kmeans_non_finite_parameters_are_one_line(tmp_path, line, expected):
    # was: accepted by the config check, then scikit-learn's InvalidParameterError inside the fit (exit 1,
    # a traceback per rank)
    _blobs(tmp_path)
    cfg = write_config(tmp_path / "k.toml", KMEANS.replace("n_clusters = 3", "n_clusters = 3\n" + line))
    proc = run_mpi(2, ["-m", "hpcml.cluster", str(cfg), "--out", str(tmp_path / "o")], timeout=240, cwd=tmp_path)
    _one_error_line(proc, expected)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("HPCML_DISPATCH", "bogus", "expected one of auto, flat, hierarchical"),
        ("HPCML_DATA_LOAD", "bcast", "expected one of auto, read, broadcast"),
        ("HPCML_FOLD_COPIES", "all", "expected one of auto, rank, node"),
        ("HPCML_COW_FOLDS", "maybe", "expected one of 0, 1, false, true, no, yes, off, on"),
        ("HPCML_PREFIX_CACHE_BYTES", "1G", "expected a number of bytes >= 0"),
        ("HPCML_PREFIX_CACHE_BYTES", "-5", "expected a number of bytes >= 0"),
    ],
)
def test_malformed_environment_variable_is_one_line(tmp_path, name, value, expected):
    # was: a ValueError deep in the run (exit 1, a traceback per rank), or the value silently ignored
    write_digits(tmp_path / "digits.h5", n=60)
    cfg = write_config(tmp_path / "s.toml", BASIC)
    out = tmp_path / "o"
    proc = run_mpi(
        2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=240, cwd=tmp_path, env={name: value}
    )
    _one_error_line(proc, re.escape(f"{name}={value!r}: {expected}"))
    assert not out.exists()


def test_kmeans_sigterm_after_the_handlers_are_in_place_is_one_line_exit_130(tmp_path):
    # was: Python's default SIGTERM: every rank died silently (mpiexec exit 15, no message).  The signal is sent
    # as soon as both ranks announce their handlers (start-up or data load, under load); mid-fit by hand: the table
    rng = np.random.RandomState(1)
    with h5py.File(tmp_path / "big.h5", "w") as fh:
        fh["X"] = rng.randn(200_000, 10)  # unstructured: Lloyd needs many iterations per init
    text = KMEANS.replace("blobs.h5", "big.h5").replace("n_clusters = 3", "n_clusters = 50\nn_init = 10\ntol = 0.0")
    cfg = write_config(tmp_path / "k.toml", text)
    out, ready = tmp_path / "o", tmp_path / "ready"
    cmd = [mpiexec_path(), "-n", "2", PYTHON, "-m", "hpcml.cluster", str(cfg), "--out", str(out)]
    proc = start(cmd, env={"HPCML_READY_FILE": str(ready)}, cwd=tmp_path)
    wait_until(lambda: ready_count(ready) == 2, proc, "both ranks' SIGTERM handlers", timeout=240)
    os.killpg(proc.pid, signal.SIGTERM)
    done = finish(proc, 240)
    assert done.returncode == 130, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    # over the whole output (the launcher may join two ranks' lines): our line, at most MPI_Abort's, nothing else
    ours = r"hpcml: error: (rank [01]/2 on \S+: )?interrupted"
    mpich = r"Abort\(130\) on node [01] \(rank [01] in comm 0\): application called MPI_Abort\([^)]*\) - process [01]"
    assert 1 <= len(re.findall(ours, done.stderr)) <= 2, done.stderr[-3000:]
    assert re.sub(mpich, "", re.sub(ours, "", done.stderr)).strip() == "", done.stderr[-3000:]
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []  # no partial model, labels or temp file

"""Findings of the adversarial sweep (issue #13 part 2), each launched as a user would.

Every launch has a hard timeout (tests/helpers.run kills the process group).
docs/reliability.md holds the table of these cases and their outcomes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from cvfixtures import BASIC, load_results, write_config, write_digits
from helpers import PYTHON, run, run_mpi

from hpcml.data.h5 import H5Dataset


def _one_error_line(proc, pattern: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hpcml: error: ") and pattern in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ 2: convert never destroys its input
@pytest.mark.parametrize("kind", ["csv", "npy"])
def test_convert_onto_its_own_input_is_refused_and_input_kept(tmp_path, kind):
    src = tmp_path / f"s.{kind}"
    if kind == "csv":
        src.write_text("1,2,3\n4,5,6\n")
    else:
        np.save(src, np.arange(12.0).reshape(4, 3))
    before = src.read_bytes()
    os.link(src, tmp_path / f"hard.{kind}")
    for dst in (src, tmp_path / f"hard.{kind}", tmp_path / "sub" / ".." / f"s.{kind}"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        proc = run([PYTHON, "-m", "hpcml.data", "convert", str(src), str(dst), "--target", "2"], timeout=60)
        _one_error_line(proc, "output is the input file")
        assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"s.{kind}", f"hard.{kind}", "sub"])


def test_convert_to_a_directory_is_one_line(tmp_path):
    src = tmp_path / "s.csv"
    src.write_text("1,2,3\n4,5,6\n")
    proc = run([PYTHON, "-m", "hpcml.data", "convert", str(src), str(tmp_path)], timeout=60)
    _one_error_line(proc, "output is a directory")


def test_failed_convert_keeps_an_existing_output(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("1,2,3\n4,5,6\n")
    out = tmp_path / "out.h5"
    assert run([PYTHON, "-m", "hpcml.data", "convert", str(good), str(out)], timeout=60).returncode == 0
    before = out.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5\n")  # ragged: fails after the output was opened
    proc = run([PYTHON, "-m", "hpcml.data", "convert", str(bad), str(out), "--block-rows", "1"], timeout=60)
    _one_error_line(proc, "line 2+: expected 3 columns, got 2")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "good.csv", "out.h5"]  # no temp left


# ------------------------------------------------------------------ 10: result files respect the umask
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_result_files_respect_the_umask(tmp_path, umask):
    write_digits(tmp_path / "digits.h5", n=120)
    cfg = write_config(tmp_path / "s.toml", BASIC.replace("C = [0.5, 5], gamma = [1e-3, 1e-2]", "C = [1]"))
    (tmp_path / "c.csv").write_text("1,2\n3,4\n")
    old = os.umask(umask)  # inherited by mpiexec and the ranks
    try:
        proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=120)
        conv = run([PYTHON, "-m", "hpcml.data", "convert", str(tmp_path / "c.csv"), str(tmp_path / "c.h5")],
                   timeout=60)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert conv.returncode == 0, conv.stderr
    want = 0o666 & ~umask
    files = sorted((tmp_path / "o").iterdir()) + [tmp_path / "c.h5"]
    assert {p.name for p in files} >= {"cv_results.json", "cv_results.csv", "best.json", "best_model.joblib",
                                       "run.json", "journal.jsonl", "c.h5"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(want) for p in files}


# ------------------------------------------------------------------ 4: resume catches any data change
SMALL = BASIC.replace("C = [0.5, 5], gamma = [1e-3, 1e-2]", "C = [1, 2]")


@pytest.fixture
def finished(tmp_path):
    X, y = write_digits(tmp_path / "digits.h5", n=300)
    cfg = write_config(tmp_path / "s.toml", SMALL)
    out = tmp_path / "o"
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    return tmp_path, cfg, out


def _resume(cfg: Path, out: Path, n: int = 2):
    return run_mpi(n, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=120)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("x_rows", "the data changed (X values (same shape and dtype))"),
        ("y_one", "the data changed (y values (same shape and dtype))"),
        ("x_one_bit", "the data changed (X values (same shape and dtype))"),
        ("y_dtype", "the data changed (y dtype int64 -> float64)"),
    ],
)
def test_resume_refuses_any_data_change_and_names_it(finished, change, expected):
    tmp, cfg, out = finished
    before = (out / "cv_results.json").read_bytes()
    with h5py.File(tmp / "digits.h5", "r+") as fh:
        if change == "x_rows":  # 40 rows in the middle, in place: a sampled fingerprint missed this
            fh["X"][130:170] = fh["X"][130:170] + 1.0
        elif change == "y_one":
            fh["y"][151] = (fh["y"][151] + 1) % 10
        elif change == "x_one_bit":
            row = fh["X"][77]
            row[5] = np.nextafter(row[5], np.inf)
            fh["X"][77] = row
        else:
            y = fh["y"][:]
            del fh["y"]
            fh.create_dataset("y", data=y.astype(np.float64))
    proc = _resume(cfg, out)
    line = _one_error_line(proc, "cannot resume: ")
    assert expected in line
    assert (out / "cv_results.json").read_bytes() == before


def test_resume_of_unchanged_data_at_another_rank_count_is_accepted(finished):
    tmp, cfg, out = finished
    reference = load_results(out)
    for name in ("cv_results.json", "cv_results.csv", "best.json", "best_model.joblib", "run.json"):
        (out / name).unlink()
    proc = _resume(cfg, out, n=3)
    assert proc.returncode == 0, proc.stderr
    ours = load_results(out)
    for key in reference:
        if key.startswith(("split", "mean_test", "rank_test", "params")):
            assert ours[key] == reference[key], key
    header = json.loads((out / "journal.jsonl").read_text().splitlines()[0])
    X = H5Dataset(tmp / "digits.h5").read("X")
    import hashlib

    assert header["data"]["X"]["shape"] == list(X.shape)
    assert header["data"]["X"]["dtype"] == "float64"
    assert len(header["data"]["X"]["sha256"]) == 64
    # the scheme of docs/reliability.md, recomputed here serially
    from mpi4py import MPI

    from hpcml.data.fingerprint import BLOCK_BYTES, fingerprints

    assert X.nbytes < BLOCK_BYTES
    h = hashlib.sha256(repr(sorted({"format": "dense", "shape": list(X.shape), "dtype": "float64"}.items())).encode())
    h.update(b"values@0:" + hashlib.sha256(np.ascontiguousarray(X).tobytes()).digest())
    assert header["data"]["X"]["sha256"] == h.hexdigest()
    assert fingerprints({"X": X}, MPI.COMM_SELF)["X"]["sha256"] == h.hexdigest()

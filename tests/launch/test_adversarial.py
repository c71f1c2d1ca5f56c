"""Findings of the adversarial sweep (issue #13 part 2), each launched as a user would.

Every launch has a hard timeout (tests/helpers.run kills the process group).
docs/reliability.md holds the table of these cases and their outcomes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from cvfixtures import BASIC, load_results, write_config, write_digits
from helpers import PYTHON, mpi_env, mpiexec_path, run, run_mpi

from hpcml.comm import HOST
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
    proc = run(
        [PYTHON, "-m", "hpcml.data", "convert", str(bad), str(out), "--block-rows", "1", "--overwrite"], timeout=60
    )
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
        conv = run([PYTHON, "-m", "hpcml.data", "convert", str(tmp_path / "c.csv"), str(tmp_path / "c.h5")], timeout=60)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert conv.returncode == 0, conv.stderr
    want = 0o666 & ~umask
    files = sorted((tmp_path / "o").iterdir()) + [tmp_path / "c.h5"]
    assert {p.name for p in files} >= {
        "cv_results.json",
        "cv_results.csv",
        "best.json",
        "best_model.joblib",
        "run.json",
        "journal.jsonl",
        "c.h5",
    }
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


# ------------------------------------------------------------------ 1, 9: signals at every stage
HELPERS = '''
import os, time
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import KFold


def _wait(folder, name, limit=120.0):
    end = time.monotonic() + limit  # never hangs: the test's launch timeout is shorter anyway
    while not os.path.exists(os.path.join(folder, name)) and time.monotonic() < end:
        time.sleep(0.01)


class GatedKFold(KFold):
    """KFold whose split() announces itself and waits for the test's 'go' file."""

    def __init__(self, n_splits=3, folder="."):
        super().__init__(n_splits=n_splits)
        self.folder = folder

    def split(self, X, y=None, groups=None):
        open(os.path.join(self.folder, "splitting"), "w").close()
        _wait(self.folder, "go")
        yield from super().split(X, y, groups)


class GatedRefit(ClassifierMixin, BaseEstimator):
    """Majority classifier whose refit (a fit on all rows) announces itself and waits."""

    def __init__(self, total=0, folder=".", c=0):
        self.total = total
        self.folder = folder
        self.c = c

    def fit(self, X, y):
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        if len(X) == self.total and not os.path.exists(os.path.join(self.folder, "no-wait")):
            open(os.path.join(self.folder, "refitting"), "w").close()
            _wait(self.folder, "go")
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)
'''


def _helpers(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "advhelpers.py").write_text(HELPERS)
    return {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 120) -> None:
    end = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.02)


def _start(n: int, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [mpiexec_path(), "-n", str(n), PYTHON, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=mpi_env(env),
        start_new_session=True,
    )


def _end(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"hung: killed after {timeout} s\n{err[-2000:]}")
    return proc.returncode, err


@pytest.mark.parametrize("dry_run", [False, True])
def test_sigterm_while_planning_exits_3_at_the_next_stage(tmp_path, dry_run):
    write_digits(tmp_path / "digits.h5", n=120)
    env = _helpers(tmp_path)
    cfg = write_config(
        tmp_path / "s.toml",
        BASIC.replace(
            'splitter = "StratifiedKFold"\nn_splits = 3\nshuffle = true\nrandom_state = 0',
            f'splitter = "advhelpers.GatedKFold"\nn_splits = 3\nfolder = "{tmp_path}"',
        ),
    )
    out = tmp_path / "o"
    proc = _start(
        3, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet"] + (["--dry-run"] if dry_run else []), env
    )
    _wait_for(tmp_path / "splitting", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    (tmp_path / "go").touch()
    code, err = _end(proc)
    assert code == 3, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
    assert lines == [
        "hpcml: error: stopped by signal 15 while computing the splits; no unit ran, nothing to resume (run again)"
    ], err
    assert not out.exists()


def test_plan_beyond_the_bound_is_refused_before_drawing(tmp_path):
    write_digits(tmp_path / "digits.h5", n=60)
    cfg = write_config(
        tmp_path / "s.toml",
        BASIC.replace(
            "grid = { C = [0.5, 5], gamma = [1e-3, 1e-2] }",
            'distributions = { C = { dist = "loguniform", low = 1e-3, high = 1e3 } }\nn_iter = 10000000',
        ),
    )
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--dry-run"], timeout=120)
    _one_error_line(proc, "the search has 10000000 candidates, more than hpcml plans at once (100000)")


def test_stop_flag_is_read_between_candidate_slices():
    from hpcml.cv.config import load_config
    from hpcml.cv.stages import make_candidates
    from hpcml.errors import Incomplete
    from hpcml.signals import StopFlag

    text = BASIC.replace(
        "grid = { C = [0.5, 5], gamma = [1e-3, 1e-2] }",
        'distributions = { C = { dist = "loguniform", low = 1e-3, high = 1e3 } }\nn_iter = 5000\nrandom_state = 7',
    )
    config = load_config(text.encode(), "s.toml")
    stop = StopFlag()
    assert len(make_candidates(config, stop)) == 5000
    from sklearn.model_selection import ParameterSampler

    assert [p for _, p in make_candidates(config, stop)] == list(
        ParameterSampler(config.models[0].distributions, 5000, random_state=config.models[0].random_state)
    )
    stop._set(signal.SIGTERM)
    with pytest.raises(Incomplete, match="stopped by signal 15 while drawing the candidates"):
        make_candidates(config, stop)


def test_sigterm_during_the_refit_keeps_complete_results_and_says_so(tmp_path):
    write_digits(tmp_path / "digits.h5", n=120)
    env = _helpers(tmp_path)
    cfg = write_config(
        tmp_path / "s.toml",
        BASIC.replace(
            'estimator = "sklearn.svm.SVC"\ngrid = { C = [0.5, 5], gamma = [1e-3, 1e-2] }',
            f'estimator = "advhelpers.GatedRefit"\nparams = {{ total = 120, folder = "{tmp_path}" }}\n'
            "grid = { c = [0, 1] }",
        ).replace('metrics = ["accuracy", "f1_macro"]\nrefit = "accuracy"', 'metrics = "accuracy"'),
    )
    out = tmp_path / "o"
    proc = _start(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--grace", "1"], env)
    _wait_for(tmp_path / "refitting", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    code, err = _end(proc)
    (tmp_path / "go").touch()
    assert code == 3, err
    assert (
        "hpcml: stopped by signal 15: all 6 units finished (cv_results.json written); the refit of the best "
        "candidate did not end within the 1 s grace period and best_model.joblib was not written; "
        "--resume refits it"
    ) in err
    assert sorted(p.name for p in out.iterdir()) == ["best.json", "cv_results.csv", "cv_results.json", "journal.jsonl"]
    (tmp_path / "no-wait").touch()
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(out), "--quiet", "--resume"], timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (out / "best_model.joblib").exists() and not (out / "cv_results.partial.json").exists()


# ------------------------------------------------------------------ 5-9, 11: one clear line, exit 2, printed once
def _csr_file(path: Path, indptr, indices) -> None:
    with h5py.File(path, "w") as fh:
        g = fh.create_group("X")
        g.attrs["shape"] = (6, 3)
        g.attrs["format"] = "csr"
        g["indptr"] = np.asarray(indptr, dtype=np.int64)
        g["indices"] = np.asarray(indices, dtype=np.int32)
        g["data"] = np.ones(len(indices))
        fh["y"] = np.arange(6) % 2


def _cv_cases(tmp: Path) -> dict[str, tuple[int, list[str], str]]:
    """case -> (ranks, arguments after -m hpcml.cv, expected text of the one error line)."""
    write_digits(tmp / "digits.h5", n=60)
    cfg = write_config(tmp / "s.toml", SMALL)
    _csr_file(tmp / "big_index.h5", [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 7, 0, 1])
    _csr_file(tmp / "bad_indptr.h5", [0, 2, 1, 3, 4, 5, 6], [0, 1, 2, 0, 0, 1])
    _csr_file(tmp / "neg_index.h5", [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, -1, 0, 1])
    sparse = {
        name: write_config(
            tmp / f"{name}.toml",
            SMALL.replace('path = "digits.h5"', f'path = "{name}.h5"').replace("n_splits = 3", "n_splits = 2"),
        )
        for name in ("big_index", "bad_indptr", "neg_index")
    }
    predefined = write_config(
        tmp / "p.toml",
        SMALL.replace(
            'splitter = "StratifiedKFold"\nn_splits = 3\nshuffle = true\nrandom_state = 0',
            f'splitter = "PredefinedSplit"\ntest_fold = {[-1] * 60}',
        ),
    )
    no_y = write_config(tmp / "noy.toml", SMALL.replace('path = "digits.h5"', 'path = "digits.h5"\ny = false'))
    (tmp / "afile").write_text("x")
    return {
        "csr index >= n_features": (3, [str(sparse["big_index"])], "column index 7 outside [0, 3) at entry 3"),
        "csr indptr decreasing": (3, [str(sparse["bad_indptr"])], "'indptr' decreases at row 1"),
        "csr negative index": (2, [str(sparse["neg_index"])], "column index -1 outside [0, 3) at entry 3"),
        "PredefinedSplit without test fold": (2, [str(predefined)], "gives no split: no fits were performed"),
        "--out is a file": (2, [str(cfg), "--out", str(tmp / "afile")], "exists and is not a folder"),
        "--out under a file": (2, [str(cfg), "--out", str(tmp / "afile" / "o")], "cannot create the output folder"),
        "--out empty": (2, [str(cfg), "--out", ""], "--out must name a folder, got an empty string"),
        "unknown flag at 3 ranks": (3, [str(cfg), "--bogus"], "unrecognized arguments: --bogus"),
        "--grace negative": (3, [str(cfg), "--grace", "-1"], "--grace must be a finite number of seconds"),
        "--grace nan": (2, [str(cfg), "--grace", "nan"], "--grace must be a finite number of seconds"),
        "--time-limit nan": (2, [str(cfg), "--time-limit", "nan"], "--time-limit must be a finite number"),
        "y = false, supervised model": (2, [str(no_y)], "[data] y = false, but model 'svc' (SVC) needs a target"),
    }


CV_CASES = [
    "csr index >= n_features",
    "csr indptr decreasing",
    "csr negative index",
    "PredefinedSplit without test fold",
    "--out is a file",
    "--out under a file",
    "--out empty",
    "unknown flag at 3 ranks",
    "--grace negative",
    "--grace nan",
    "--time-limit nan",
    "y = false, supervised model",
]


@pytest.mark.parametrize("case", CV_CASES)
def test_cv_bad_input_is_one_line_exit_2(tmp_path, case):
    n, args, expected = _cv_cases(tmp_path)[case]
    proc = run_mpi(n, ["-m", "hpcml.cv", *args, "--quiet"], timeout=120, cwd=tmp_path)
    _one_error_line(proc, expected)
    assert "Traceback" not in proc.stderr


def test_journal_line_that_is_not_a_unit_record_is_one_line(finished):
    tmp, cfg, out = finished
    for bad, expected in (
        ("[1, 2]", "not a journal record (a JSON list)"),
        ('{"type":"unit","unit":"x","test_scores":1}', "unit record without fit_time"),
    ):
        lines = (out / "journal.jsonl").read_text().splitlines()
        (out / "journal.jsonl").write_text("\n".join(lines[:2] + [bad] + lines[2:]) + "\n")
        line = _one_error_line(_resume(cfg, out), expected)
        assert line.startswith(f"hpcml: error: {out / 'journal.jsonl'}:3: ")
        (out / "journal.jsonl").write_text("\n".join(lines) + "\n")


def test_scoring_error_outside_error_score_is_named_correctly(tmp_path):
    write_digits(tmp_path / "digits.h5", n=60)
    cfg = write_config(
        tmp_path / "s.toml",
        SMALL.replace(
            'estimator = "sklearn.svm.SVC"\ngrid = { C = [1, 2] }',
            'estimator = "sklearn.preprocessing.StandardScaler"\ngrid = { with_mean = [true, false] }',
        ),
    )
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], timeout=120)
    assert proc.returncode == 1, proc.stderr
    # the API's error (scikit-learn's type and message), printed once, after one note saying why it ends the run
    errors = re.findall(r"^hpcml: error: .*$", proc.stderr, flags=re.MULTILINE)
    assert len(errors) == 1 and re.fullmatch(
        r"hpcml: error: rank [01]/2 on %s: AttributeError: StandardScaler has none of the following "
        r"attributes: predict\." % re.escape(HOST),
        errors[0],
    ), proc.stderr
    notes = re.findall(r"^hpcml: a unit raised an error that error_score=nan does not cover", proc.stderr, re.MULTILINE)
    assert len(notes) == 1, proc.stderr
    assert "error_score='raise'" not in proc.stderr


def test_threads_far_above_the_cores_warn_once(tmp_path):
    write_digits(tmp_path / "digits.h5", n=60)
    cfg = write_config(tmp_path / "s.toml", SMALL)
    cpus = len(os.sched_getaffinity(0))
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--dry-run", "--threads-per-rank", str(4 * cpus)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("hpcml: warning:")]
    assert len(warnings) == 1 and f"{8 * cpus} threads on {cpus} CPUs" in warnings[0], proc.stderr
    proc = run_mpi(2, ["-m", "hpcml.cv", str(cfg), "--dry-run", "--threads-per-rank", "1"], timeout=120)
    assert proc.returncode == 0 and "oversubscribed" not in proc.stderr, proc.stderr


def _data_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    np.savez(tmp / "obj.npz", X=np.array([[1, "a"]], dtype=object))
    with h5py.File(tmp / "links.h5", "w") as fh:
        fh["y"] = np.arange(3)
        fh["X"] = h5py.ExternalLink("missing.h5", "/X")
        fh["A"] = h5py.SoftLink("/B")
        fh["B"] = h5py.SoftLink("/A")
    return {
        "object npz": (
            ["convert", str(tmp / "obj.npz"), str(tmp / "o.h5")],
            "array 'X' cannot be read without unpickling",
        ),
        "external link to a missing file": (["info", str(tmp / "links.h5")], "dataset 'X' (X) cannot be opened"),
        "soft-link loop": (["info", str(tmp / "links.h5"), "--X", "A"], "dataset 'A' (X) cannot be opened"),
        "bad --header": (["convert", "a.csv", "b.h5", "--header", "maybe"], "argument --header: invalid choice"),
    }


@pytest.mark.parametrize("case", ["object npz", "external link to a missing file", "soft-link loop", "bad --header"])
def test_data_bad_input_is_one_line_exit_2(tmp_path, case):
    args, expected = _data_cases(tmp_path)[case]
    _one_error_line(run([PYTHON, "-m", "hpcml.data", *args], timeout=60, cwd=tmp_path), expected)


def test_data_usage_error_under_mpi_is_printed_once(tmp_path):
    proc = run_mpi(3, ["-m", "hpcml.data", "synth", str(tmp_path / "x.h5"), "--n-samples", "10"], timeout=60)
    _one_error_line(proc, "the following arguments are required: --n-features")


# ------------------------------------------------------------------ 5, 6: convert reads what pandas and big labels mean
def test_convert_reads_pandas_numeric_header_as_names(tmp_path):
    import pandas as pd

    X = np.arange(20.0).reshape(5, 4)
    pd.DataFrame(X).to_csv(tmp_path / "p.csv", index=False)
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "0,1,2,3"
    proc = run([PYTHON, "-m", "hpcml.data", "convert", str(tmp_path / "p.csv"), str(tmp_path / "p.h5")], timeout=60)
    assert proc.returncode == 0, proc.stderr
    ds = H5Dataset(tmp_path / "p.h5")
    np.testing.assert_array_equal(ds.read("X"), X[:, :3])
    np.testing.assert_array_equal(ds.read("y"), X[:, 3].astype(np.int64))
    with h5py.File(tmp_path / "p.h5") as fh:
        assert [n.decode() if isinstance(n, bytes) else n for n in fh["feature_names"][:]] == ["0", "1", "2"]
    proc = run(
        [PYTHON, "-m", "hpcml.data", "convert", str(tmp_path / "p.csv"), str(tmp_path / "q.h5"), "--header", "no"],
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert H5Dataset(tmp_path / "q.h5").read("X").shape == (6, 3)  # the header line read as data, on request


def test_convert_keeps_integral_targets_beyond_int64_exact_as_float(tmp_path):
    (tmp_path / "b.csv").write_text("1,2,9300000000000000000\n3,4,1\n5,6,-9300000000000000000\n")
    proc = run([PYTHON, "-m", "hpcml.data", "convert", str(tmp_path / "b.csv"), str(tmp_path / "b.h5")], timeout=60)
    assert proc.returncode == 0, proc.stderr
    y = H5Dataset(tmp_path / "b.h5").read("y")
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [9.3e18, 1.0, -9.3e18])
    np.save(tmp_path / "u.npy", np.array([[1, 2**63 + 2048], [3, 5]], dtype=np.uint64))
    proc = run(
        [PYTHON, "-m", "hpcml.data", "convert", str(tmp_path / "u.npy"), str(tmp_path / "u.h5"), "--target", "1"],
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    y = H5Dataset(tmp_path / "u.h5").read("y")
    assert y.dtype == np.float64 and y[0] == float(2**63 + 2048) and y[1] == 5.0


# ------------------------------------------------------------------ 8, 9: hpcml.sgd
def _sgd_case(tmp: Path, y: np.ndarray) -> Path:
    from hpcml.data.h5 import write_dataset

    X = np.random.default_rng(0).normal(size=(len(y), 4))
    write_dataset(tmp / "d.h5", X, y)
    return write_config(tmp / "s.toml", '[data]\npath = "d.h5"\n\n[model]\ntype = "classifier"\n')


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("float labels", "d.h5: rows 0:66: Unknown label type: continuous; a classifier needs class labels"),
        ("single class", "the data has a single class [0]; need at least 2"),
        ("--out is a file", "exists and is not a folder"),
        ("unknown flag", "unrecognized arguments: --bogus"),
    ],
)
def test_sgd_bad_input_is_one_line_exit_2_at_3_ranks(tmp_path, case, expected):
    y = {"float labels": np.random.default_rng(1).normal(size=200), "single class": np.zeros(200, dtype=int)}.get(
        case, np.arange(200) % 2
    )
    cfg = _sgd_case(tmp_path, y)
    extra = {"--out is a file": ["--out", str(cfg)], "unknown flag": ["--bogus"]}.get(case, [])
    proc = run_mpi(3, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "o"), *extra], timeout=120)
    line = _one_error_line(proc, expected)
    assert "Abort" not in proc.stderr and "Traceback" not in proc.stderr, line


# ------------------------------------------------ 11: the API notices different data on different ranks
API_DIFFERENT = r"""
import json, sys
import numpy as np
from mpi4py import MPI
from sklearn.datasets import load_iris
from sklearn.svm import SVC
import hpcml

rank = MPI.COMM_WORLD.Get_rank()
X, y = load_iris(return_X_y=True)
which = sys.argv[1]
if which == "X" and rank == 1:
    X = X.copy(); X[77, 2] += 1e-9
if which == "y" and rank == 1:
    y = y.copy(); y[[3, 140]] = y[[140, 3]]
out = {}
for name, call in (("search", lambda: hpcml.GridSearchCV(SVC(), {"C": [1, 2]}, cv=3).fit(X, y)),
                   ("cross_validate", lambda: hpcml.cross_validate(SVC(), X, y, cv=3)),
                   ("cross_val_predict", lambda: hpcml.cross_val_predict(SVC(), X, y, cv=3)),
                   ("validation_curve",
                    lambda: hpcml.validation_curve(SVC(), X, y, param_name="C", param_range=[1, 2], cv=3)),
                   ("learning_curve", lambda: hpcml.learning_curve(SVC(), X, y, train_sizes=[0.5, 1.0], cv=3))):
    try:
        call()
        out[name] = "ok"
    except ValueError as exc:
        out[name] = str(exc)
json.dump(out, open(f"{sys.argv[2]}/r{rank}.json", "w"))
"""


API_FUNCTIONS = ("search", "cross_validate", "cross_val_predict", "validation_curve", "learning_curve")


@pytest.mark.parametrize("which", ["X", "y", "same"])
def test_api_refuses_different_data_on_different_ranks(tmp_path, which):
    script = tmp_path / "api.py"
    script.write_text(API_DIFFERENT)
    proc = run_mpi(2, [str(script), which, str(tmp_path)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    if which == "same":
        assert results == [dict.fromkeys(API_FUNCTIONS, "ok")] * 2
        return
    message = (
        f"{which} differs between ranks (rank 1 holds other data than rank 0); every rank of comm must "
        "pass the same X and y to fit"
    )
    # cross_val_predict, validation_curve and learning_curve too (they fitted each rank's own data before)
    assert results == [dict.fromkeys(API_FUNCTIONS, message)] * 2


# ------------------------------------------------------------------ issue 12.5: fault hooks opt-in
@pytest.mark.parametrize("value", ["unit", "unit:x", "nowhere:0", "unit:0:1:2"])
def test_malformed_fault_variable_is_a_usage_error(tmp_path, value):
    write_digits(tmp_path / "digits.h5", n=60)
    cfg = write_config(tmp_path / "s.toml", SMALL)
    proc = run_mpi(
        2,
        ["-m", "hpcml.cv", str(cfg), "--out", str(tmp_path / "o"), "--quiet"],
        timeout=120,
        env={"HPCML_INJECT_FAULT": value},
    )
    _one_error_line(
        proc,
        f"HPCML_INJECT_FAULT={value!r}: expected POINT:RANK[:COUNT][:kill] with POINT one of load, shared-read, "
        "unit, worker, test-rows",
    )
    assert not (tmp_path / "o").exists()


def test_no_fault_hook_without_the_variable(monkeypatch):
    from hpcml import _faults

    monkeypatch.delenv("HPCML_INJECT_FAULT", raising=False)
    _faults.configured.cache_clear()
    _faults.hook.cache_clear()
    try:
        assert _faults.hook("unit", 0) is None and _faults.hook("worker", 0) is None and not _faults.active()
        monkeypatch.setenv("HPCML_INJECT_FAULT", "unit:1:2")
        assert _faults.hook("unit", 1) is None  # read once: a later change is not seen
        _faults.configured.cache_clear()
        _faults.hook.cache_clear()
        fire = _faults.hook("unit", 1)
        assert fire is not None and _faults.hook("unit", 0) is None and _faults.hook("worker", 1) is None
        fire()
        fire()
        with pytest.raises(_faults.InjectedFault, match="injected fault at 'unit' on rank 1"):
            fire()
    finally:
        _faults.configured.cache_clear()
        _faults.hook.cache_clear()


def test_sgd_threads_per_rank_flag_sets_the_layout(tmp_path):
    cfg = _sgd_case(tmp_path, np.arange(200) % 2)
    proc = run_mpi(
        2, ["-m", "hpcml.sgd", str(cfg), "--out", str(tmp_path / "o"), "--threads-per-rank", "2"], timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    history = json.loads((tmp_path / "o" / "history.json").read_text())
    assert [r["threads"] for r in history["per_rank"]] == [2, 2]  # the default here would be 1 (2 ranks, 2 CPUs)
    _one_error_line(
        run_mpi(2, ["-m", "hpcml.sgd", str(cfg), "--threads-per-rank", "0"], timeout=60),
        "--threads-per-rank must be at least 1",
    )

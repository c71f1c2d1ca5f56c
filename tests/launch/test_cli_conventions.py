"""The command-line convention of docs/cli.md, tool by tool, under real ``mpiexec -n 2``.

Every tool: bad usage is exactly one ``hpcml: error:`` line and exit 2 (not one
per rank, no traceback); a folder (a file for ``hpcml.data``) holding results is
refused with one line naming it and the flags; ``--overwrite`` replaces; ``--dry-run``
prints the plan once and writes nothing; a relative ``[output] dir`` / ``[run] out``
is relative to the config file; ``run.json`` has the same shared head.

Per-rank output may be interleaved by the launcher: every count is a regex over
the whole output, never a per-line parse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cvfixtures import BASIC, write_config, write_digits
from helpers import run_mpi
from sklearn.datasets import make_blobs, make_classification

from hpcml.data.h5 import write_dataset

ERROR = re.compile(r"hpcml: error: ([^\n]*)")
#: The keys hpcml.runreport puts in every run.json.
SHARED = ("tool", "config", "n_ranks", "nodes", "hosts", "layout", "versions", "status", "wall_seconds")
TIMEOUT = 240


def one_error(res) -> str:
    """The single error line of a run that must have exited 2."""
    found = ERROR.findall(res.stderr + res.stdout)
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert len(found) == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return found[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------- the four tools' inputs


def sgd_setup(tmp_path: Path, out: str | None = None) -> list[str]:
    X, y = make_classification(400, 5, random_state=0)
    write_dataset(tmp_path / "train.h5", X, y)
    extra = f'dir = "{out}"\n' if out else ""
    cfg = tmp_path / "train.toml"
    cfg.write_text(
        '[data]\npath = "train.h5"\n[train]\nmax_iter = 3\ntol = "none"\n'
        f"[output]\nplot = false\n{extra}[run]\nthreads_per_rank = 1\n"
    )
    return ["-m", "hpcml.sgd", str(cfg)]


def cluster_setup(tmp_path: Path, out: str | None = None) -> list[str]:
    X, _ = make_blobs(300, n_features=3, centers=3, random_state=0)
    write_dataset(tmp_path / "blobs.h5", X, None)
    extra = f'[output]\ndir = "{out}"\n' if out else ""
    cfg = tmp_path / "km.toml"
    model = "[model]\nn_clusters = 3\nmax_iter = 5\n"
    cfg.write_text(f'[data]\npath = "blobs.h5"\n{model}{extra}[run]\nthreads_per_rank = 1\n')
    return ["-m", "hpcml.cluster", str(cfg)]


def cv_setup(tmp_path: Path, out: str | None = None) -> list[str]:
    write_digits(tmp_path / "digits.h5", n=120)
    text = BASIC.replace("C = [0.5, 5], gamma = [1e-3, 1e-2]", "C = [1]")
    if out:
        text += f'\n[run]\nout = "{out}"\n'
    cfg = write_config(tmp_path / "search.toml", text)
    return ["-m", "hpcml.cv", str(cfg), "--quiet"]


SETUPS = {"hpcml.sgd": sgd_setup, "hpcml.cluster": cluster_setup, "hpcml.cv": cv_setup}
FOLDER_TOOLS = sorted(SETUPS)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("tool", [*FOLDER_TOOLS, "hpcml.data"])
def test_unknown_flag_is_one_line_exit_2_at_two_ranks(tmp_path: Path, tool: str) -> None:
    args = ["-m", tool, "c.toml"]
    if tool == "hpcml.data":
        args = ["-m", tool, "synth", "x.h5", "--n-samples", "10", "--n-features", "2"]
    res = run_mpi(2, [*args, "--no-such-flag"], timeout=TIMEOUT, cwd=tmp_path)
    assert one_error(res) == f"unrecognized arguments: --no-such-flag (see python -m {tool} --help)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", [*FOLDER_TOOLS, "hpcml.data"])
def test_threads_per_rank_zero_is_one_line_exit_2(tmp_path: Path, tool: str) -> None:
    args = ["-m", tool, "synth", "x.h5", "--n-samples", "10", "--n-features", "2"]
    if tool != "hpcml.data":
        args = SETUPS[tool](tmp_path)
    res = run_mpi(2, [*args, "--threads-per-rank", "0"], timeout=TIMEOUT, cwd=tmp_path)
    assert one_error(res).startswith("--threads-per-rank must be at least 1"), res.stderr
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("tool", FOLDER_TOOLS)
def test_refusal_then_overwrite(tmp_path: Path, tool: str) -> None:
    args = SETUPS[tool](tmp_path)
    out = tmp_path / "out"
    first = run_mpi(2, [*args, "--out", str(out)], timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(out)
    assert "run.json" in before
    again = run_mpi(2, [*args, "--out", str(out)], timeout=TIMEOUT)
    line = one_error(again)
    assert line.startswith(f"{out}: output folder already holds "), line
    assert "run.json" in line and "--overwrite" in line, line
    assert snapshot(out) == before  # nothing touched
    third = run_mpi(2, [*args, "--out", str(out), "--overwrite"], timeout=TIMEOUT)
    assert third.returncode == 0, third.stderr[-3000:]
    assert sorted(snapshot(out)) == sorted(before)
    report = json.loads((out / "run.json").read_text())
    assert report["tool"] == tool and report["n_ranks"] == 2 and report["status"] == "complete"
    assert [lay["rank"] for lay in report["layout"]] == [0, 1]
    assert set(SHARED) <= set(report), sorted(set(SHARED) - set(report))
    assert set(report["versions"]) == {
        "hpcml",
        "python",
        "numpy",
        "scipy",
        "scikit-learn",
        "h5py",
        "mpi4py",
        "threadpoolctl",
        "mpi",
    }


@pytest.mark.parametrize("tool", FOLDER_TOOLS)
def test_dry_run_prints_the_plan_once_and_writes_nothing(tmp_path: Path, tool: str) -> None:
    args = SETUPS[tool](tmp_path)
    before = snapshot(tmp_path)
    res = run_mpi(2, [*args, "--out", str(tmp_path / "out"), "--dry-run"], timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(re.findall(r"dry run", res.stdout, flags=re.IGNORECASE)) == 1, res.stdout
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("tool", FOLDER_TOOLS)
def test_config_output_folder_is_relative_to_the_config_file(tmp_path: Path, tool: str) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    args = SETUPS[tool](conf, out="results")
    res = run_mpi(2, args, timeout=TIMEOUT, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (conf / "results" / "run.json").is_file()
    assert list(work.iterdir()) == []
    # the flag is relative to the working directory
    res = run_mpi(2, [*args, "--out", "flag"], timeout=TIMEOUT, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (work / "flag" / "run.json").is_file()


def test_sgd_dry_run_plan_names_shards_batches_and_epochs(tmp_path: Path) -> None:
    args = sgd_setup(tmp_path)
    res = run_mpi(2, [*args, "--dry-run"], timeout=TIMEOUT, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # 400 rows on 2 ranks; batch "auto" = max(16, min(256, 400 // 32)) = 16; ceil(400 / 16) = 25 steps
    assert "(400 x 5); 2 rank(s), shards of 200-200 rows" in res.stdout, res.stdout
    assert "batch 16 rows per step, global sampling, 25 steps per epoch, at most 3 epochs" in res.stdout, res.stdout
    assert not (tmp_path / "hpcml-out").exists()


def test_sgd_report_is_run_json_and_history_json_is_its_copy(tmp_path: Path) -> None:
    args = sgd_setup(tmp_path)
    res = run_mpi(2, [*args, "--out", str(tmp_path / "o")], timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "o"
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.joblib", "model.npz", "run.json"]
    assert (out / "history.json").read_bytes() == (out / "run.json").read_bytes()
    report = json.loads((out / "run.json").read_text())
    assert report["n_iter"] == len(report["epochs"]) == 3
    assert report["ranks"] == report["n_ranks"] == 2


def test_data_refusal_overwrite_and_dry_run(tmp_path: Path) -> None:
    args = ["-m", "hpcml.data", "synth", "s.h5", "--n-samples", "100", "--n-features", "3"]
    dry = run_mpi(2, [*args, "--dry-run"], timeout=TIMEOUT, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert len(re.findall(r"dry run", dry.stdout)) == 1, dry.stdout
    assert "100 x 3 classification (3200 bytes" in dry.stdout, dry.stdout  # 100 x (3 x 8 + 8) bytes
    assert list(tmp_path.iterdir()) == []
    assert run_mpi(2, args, timeout=TIMEOUT, cwd=tmp_path).returncode == 0
    before = (tmp_path / "s.h5").read_bytes()
    line = one_error(run_mpi(2, [*args, "--seed", "1"], timeout=TIMEOUT, cwd=tmp_path))
    assert line == "s.h5: output file already exists; use --overwrite to replace it or another output name"
    assert (tmp_path / "s.h5").read_bytes() == before
    res = run_mpi(2, [*args, "--seed", "1", "--overwrite"], timeout=TIMEOUT, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "s.h5").read_bytes() != before

    np.save(tmp_path / "a.npy", np.arange(12.0).reshape(4, 3))
    conv = ["-m", "hpcml.data", "convert", "a.npy", "s.h5"]
    res = run_mpi(1, [*conv, "--dry-run"], timeout=TIMEOUT, cwd=tmp_path)
    line = one_error(res)  # an existing output is refused by the dry run too
    assert line == "s.h5: output file already exists; use --overwrite to replace it or another output name"
    res = run_mpi(1, [*conv[:-1], "t.h5", "--dry-run"], timeout=TIMEOUT, cwd=tmp_path)
    assert res.returncode == 0 and "would convert a.npy (npy) to t.h5" in res.stdout, res.stderr
    assert not (tmp_path / "t.h5").exists()

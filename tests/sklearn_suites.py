"""Run one of scikit-learn's own test files against hpcml's classes, under ``mpiexec -n N``.

The file is copied at test time from the installed scikit-learn (never committed
here), one line is added after its imports (e.g. ``from hpcml import GridSearchCV,
RandomizedSearchCV``) so that the test module's names are hpcml's, and the copy is
run with ``mpiexec -n N python -m pytest`` and scikit-learn's own ``conftest``
(``pytest_plugins = ["sklearn.conftest"]``).  Every rank runs the whole file, test
by test in the same order, so hpcml's collective calls meet; each rank writes
its outcome counts to ``rank-<r>.json`` beside the copy.

Typical use (see tests/launch/test_sklearn_suites.py)::

    suite = prepare_suite(tmp_path, "model_selection/tests/test_search.py",
                          "from hpcml import GridSearchCV, RandomizedSearchCV")
    result = run_suite(suite, n=2, timeout=900)
    assert result.failed == 0

``prepare_suite(..., swap=None)`` gives the unmodified copy (the reference counts).
"""

from __future__ import annotations

import ast
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from helpers import PYTHON, mpiexec_path, run

#: conftest.py written beside the copy: scikit-learn's fixtures + one JSON of outcomes per rank.
_CONFTEST = """
import json
import os

pytest_plugins = ["sklearn.conftest"]


def _rank():
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if os.environ.get(var) is not None:
            return int(os.environ[var])
    return 0


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    counts = {key: len([r for r in stats.get(key, []) if key != "passed" or getattr(r, "when", "call") == "call"])
              for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
    counts["failed_ids"] = sorted({r.nodeid for r in stats.get("failed", []) + stats.get("error", [])})
    path = os.path.join(os.path.dirname(__file__), "rank-%d.json" % _rank())
    with open(path, "w") as fh:
        json.dump(counts, fh)
"""

_PYTEST_INI = """[pytest]
addopts = -p no:cacheprovider
"""


def sklearn_file(relative: str) -> Path:
    """Path of a file inside the installed scikit-learn package (e.g. ``model_selection/tests/test_search.py``)."""
    import sklearn

    path = Path(sklearn.__file__).resolve().parent / relative
    if not path.is_file():
        raise FileNotFoundError(f"scikit-learn {sklearn.__version__} has no {relative}")
    return path


def insert_after_imports(source: str, line: str) -> str:
    """``source`` with ``line`` inserted after its leading block of top-level imports.

    The line goes after the last ``import``/``from`` statement that precedes the
    first other top-level statement (the module docstring excepted), so the
    names it binds replace the ones the file imported.
    """
    tree = ast.parse(source)
    end = None
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            end = node.end_lineno
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and end is None:
            continue  # module docstring
        else:
            break
    if end is None:
        raise ValueError("no leading imports to insert after")
    lines = source.splitlines(keepends=True)
    return "".join(lines[:end]) + line.rstrip("\n") + "\n" + "".join(lines[end:])


def prepare_suite(workdir: Path, relative: str, swap: str | None) -> Path:
    """Copy scikit-learn's ``relative`` test file into ``workdir`` (one added line ``swap``) with the conftest.

    Parameters
    ----------
    workdir : Path
        An empty directory (e.g. pytest's ``tmp_path``); it becomes the run's rootdir.
    relative : str
        Path of the test file inside the installed ``sklearn`` package.
    swap : str or None
        The line to add after the imports; ``None`` copies the file unchanged.

    Returns
    -------
    Path
        The copied test file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    source = sklearn_file(relative).read_text()
    if swap is not None:
        source = insert_after_imports(source, swap)
    target = workdir / Path(relative).name
    target.write_text(source)
    (workdir / "conftest.py").write_text(_CONFTEST)
    (workdir / "pytest.ini").write_text(_PYTEST_INI)
    return target


@dataclass
class SuiteResult:
    """Outcome of :func:`run_suite`: rank 0's counts, every rank's counts, the launch's output."""

    returncode: int
    ranks: list[dict] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    def count(self, key: str) -> int:
        """Rank 0's number of tests with outcome ``key`` (passed, failed, error, skipped, xfailed, xpassed)."""
        return int(self.ranks[0][key]) if self.ranks else -1

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def failed(self) -> int:
        """Failures plus errors, on the rank that had most of them."""
        return max((int(r["failed"]) + int(r["error"]) for r in self.ranks), default=-1)

    @property
    def failed_ids(self) -> list[str]:
        """Node ids that failed or errored on any rank."""
        return sorted({i for r in self.ranks for i in r["failed_ids"]})

    def summary(self, lines: int = 60) -> str:
        """The counts and the tail of the output, for an assertion message."""
        tail = "\n".join((self.stdout + self.stderr).splitlines()[-lines:])
        return f"exit {self.returncode}, ranks {self.ranks}\n{tail}"


def run_suite(
    test_file: Path,
    n: int | None,
    timeout: float = 900,
    pytest_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> SuiteResult:
    """Run a prepared copy with ``mpiexec -n n python -m pytest`` (``n=None``: plain pytest, no mpiexec).

    The launch runs in its own process group and is killed on ``timeout``
    (``subprocess.TimeoutExpired`` then propagates: a hang fails the test).
    """
    workdir = test_file.parent
    for old in workdir.glob("rank-*.json"):
        old.unlink()
    cmd = [PYTHON, "-m", "pytest", "-q", "-rfE", "--durations=10", "--rootdir", str(workdir)]
    cmd += ["-c", str(workdir / "pytest.ini")]
    cmd += [*pytest_args, str(test_file)]
    if n is not None:
        cmd = [mpiexec_path(), "-n", str(n), *cmd]
    proc = run(cmd, timeout=timeout, env=env, cwd=workdir)
    ranks = []
    for rank in range(n or 1):
        path = workdir / f"rank-{rank}.json"
        ranks.append(json.loads(path.read_text()) if path.exists() else None)
    result = SuiteResult(proc.returncode, [r for r in ranks if r is not None], proc.stdout, proc.stderr)
    if any(r is None for r in ranks):
        raise AssertionError(f"a rank wrote no outcome file:\n{result.summary()}")
    return result


def clean(workdir: Path) -> None:
    """Remove a prepared suite directory."""
    shutil.rmtree(workdir, ignore_errors=True)

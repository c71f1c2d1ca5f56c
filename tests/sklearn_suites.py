"""Run scikit-learn's own test modules against hpcml's classes (a shared test helper).

scikit-learn ships its tests inside the installed package.  :func:`prepare`
copies one module (say ``sklearn/model_selection/tests/test_successive_halving.py``)
into a folder, inserts one import line after its own imports that rebinds
scikit-learn's class names to hpcml's, and writes a ``conftest.py`` holding
``pytest_plugins = ["sklearn.conftest"]`` (scikit-learn's fixtures such as
``global_random_seed``).  Nothing of scikit-learn's is committed: the copy is
made from the installed version at test time.  :func:`run_suite` runs such a
folder with pytest, alone or under ``mpiexec -n N`` (every rank runs the same
tests in the same order, so hpcml's collective ``fit`` meets itself), and
:func:`counts` reads pytest's summary lines.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

from helpers import PYTHON, mpiexec_path, run

PYTEST = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-W", "ignore"]
SUMMARY = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b")


def sklearn_test_file(module: str) -> Path:
    """The installed file of a scikit-learn test module, e.g. ``sklearn.model_selection.tests.test_search``."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{module} is not installed (scikit-learn without its tests?)")
    return Path(spec.origin)


def prepare(module: str, dest: Path, swap: str | None) -> Path:
    """Copy ``module``'s file into ``dest`` (plus the conftest); insert ``swap`` after its imports.

    Parameters
    ----------
    module : str
        Dotted name of a scikit-learn test module.
    dest : pathlib.Path
        Folder to write into (created).
    swap : str or None
        One line, e.g. ``"from hpcml import HalvingGridSearchCV, HalvingRandomSearchCV"``,
        inserted before the first top-level statement that follows the module's
        imports (so it wins over them); ``None`` keeps the copy unmodified.

    Returns
    -------
    pathlib.Path
        The copied test file.
    """
    dest.mkdir(parents=True, exist_ok=True)
    source = sklearn_test_file(module)
    lines = source.read_text().splitlines(keepends=True)
    if swap is not None:
        at = _after_imports(lines)
        lines.insert(at, f"{swap}  # noqa: E402,F811 - hpcml's classes swapped in\n")
    target = dest / source.name
    target.write_text("".join(lines))
    (dest / "conftest.py").write_text('pytest_plugins = ["sklearn.conftest"]\n')
    return target


def _after_imports(lines: list[str]) -> int:
    """Index of the first top-level line after the module's leading import block."""
    import ast

    tree = ast.parse("".join(lines))
    last = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and last == 0
        ):
            last = node.end_lineno or last
        else:
            break
    return last


def run_suite(
    folder: Path, n: int | None, timeout: float, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest over ``folder``: plainly (``n=None``) or under ``mpiexec -n n``, with a hard timeout."""
    args = [PYTHON, *PYTEST, *(extra or []), str(folder)]
    if n is not None:
        args = [mpiexec_path(), "-n", str(n), *args]
    return run(args, timeout=timeout, cwd=folder)


def counts(output: str) -> list[dict[str, int]]:
    """Every pytest summary line's counts (one per rank under mpiexec), e.g. ``[{"passed": 40}]``."""
    found = []
    for line in output.splitlines():
        if re.match(r"^=*\s*\d+ \w+.* in [\d.]+s", line.strip()):
            found.append({k.rstrip("s") if k.startswith("error") else k: int(v) for v, k in SUMMARY.findall(line)})
    return found

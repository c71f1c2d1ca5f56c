"""The code rules the project states, checked on the source (no imports of the checked modules).

* hpcml/_compat.py is the only importer of private scikit-learn names;
* every ``HPCML_*`` environment variable of hpcml/ and slurm/ is named in hpcml/env.py;
* no function over 80 lines in the modules already split (benchmarks/code_shape.py lists the rest).
"""

from __future__ import annotations

import ast
import importlib.util
import re

from helpers import ROOT

PACKAGE = ROOT / "hpcml"


def _private_sklearn_imports(path):
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sklearn":
            private_module = any(part.startswith("_") for part in node.module.split("."))
            names = [a.name for a in node.names if a.name.startswith("_")]
            if private_module or names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {names or '...'}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sklearn" and any(p.startswith("_") for p in alias.name.split(".")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {alias.name}")
    return found


def test_compat_is_the_only_importer_of_private_sklearn_names():
    offenders = [
        hit for p in sorted(PACKAGE.rglob("*.py")) if p.name != "_compat.py" for hit in _private_sklearn_imports(p)
    ]
    assert offenders == []
    assert _private_sklearn_imports(PACKAGE / "_compat.py")  # the check itself sees such imports


def test_every_hpcml_environment_variable_is_named_in_env_py():
    named = set(re.findall(r"HPCML_[A-Z0-9_]+", (PACKAGE / "env.py").read_text()))
    used = set()
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "slurm").iterdir()]:
        if path.is_file() and path.name != "env.py":
            used |= set(re.findall(r"HPCML_[A-Z0-9_]+", path.read_text(errors="replace")))
    assert used, "the scan found no variable at all"
    assert sorted(used - named) == []


def test_no_long_functions_in_the_split_modules():
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "benchmarks" / "code_shape.py")
    shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shape)
    split = [p for p in sorted((PACKAGE / "sgd").glob("*.py")) if p.name != "__main__.py"]
    split += sorted((PACKAGE / "comm").glob("*.py"))
    split += [PACKAGE / "data" / "synth.py", PACKAGE / "data" / "h5.py", PACKAGE / "tomlconf.py", PACKAGE / "env.py"]
    cv_core = ("engine", "search", "schedule", "validation", "runner", "stages", "observer", "plan", "fitting")
    split += [PACKAGE / "cv" / f"{name}.py" for name in cv_core]
    assert shape.long_functions(split, 80) == []
    # the measure counts what it should: a 90-line function is found
    assert len(shape.long_functions([PACKAGE / "cv" / "runner.py"], 10)) > 0

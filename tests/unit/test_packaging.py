"""Packaging facts users meet first: setup.py, environment.yml, README, .ci/run."""

from __future__ import annotations

import ast
import re

from helpers import ROOT


def _install_requires() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INSTALL_REQUIRES":
            return [ast.literal_eval(elt) for elt in node.value.elts]
    raise AssertionError("INSTALL_REQUIRES not found in setup.py")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\s\[]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_lists_every_runtime_requirement():
    env = (ROOT / "environment.yml").read_text()
    conda = {_name(line.strip()[2:]) for line in env.splitlines() if line.strip().startswith("- ") and ":" not in line}
    for requirement in _install_requires():
        assert _name(requirement) in conda, f"{requirement} missing from environment.yml"
    assert "conda-forge" in env and ("mpich" in conda or "openmpi" in conda)


def test_runtime_requirements_are_the_documented_ones():
    names = {_name(r) for r in _install_requires()}
    assert names == {"mpi4py", "numpy", "scipy", "scikit-learn", "h5py", "threadpoolctl", "cloudpickle", "tomli"}


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_screen = text.split("\n## ", 1)[0]
    return re.findall(r"^(python3 -m venv .*)$", first_screen, flags=re.M)


def test_readme_first_screen_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith("mpiexec -n 4 python -m hpcml.cv --demo")
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    assert _readme_commands()[1] in (ROOT / ".ci" / "run").read_text()

"""Small HDF5 data sets and configs for CLI tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def write_digits(path: Path, n: int = 360, groups: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    from hpcml.data import write_dataset

    X, y = load_digits(return_X_y=True)
    X, y = X[:n], y[:n]
    write_dataset(path, X, y, groups=(np.arange(n) % 6) if groups else None)
    return X, y


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BASIC = """\
[data]
path = "digits.h5"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
grid = { C = [0.5, 5], gamma = [1e-3, 1e-2] }

[cv]
splitter = "StratifiedKFold"
n_splits = 3
shuffle = true
random_state = 0

[scoring]
metrics = ["accuracy", "f1_macro"]
refit = "accuracy"
"""


def load_results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "cv_results.json").read_text())

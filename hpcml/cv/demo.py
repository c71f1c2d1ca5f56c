"""The built-in demo: scikit-learn's digits in HDF5 and a two-model search config."""

from __future__ import annotations

import os

DEMO_CONFIG = """\
# hpcml demo search: scikit-learn's digits (1797 x 64), two model classes,
# 5-fold stratified CV, two metrics.  Copy this file to start your own search.
[data]
path = "digits.h5"
X = "X"
y = "y"

[[model]]
name = "svc"
estimator = "sklearn.svm.SVC"
params = { kernel = "rbf" }
grid = { C = [0.1, 1, 10, 100], gamma = [1e-4, 1e-3, 1e-2] }

[[model]]                        # a pipeline: grid keys are step__param
name = "logreg"
steps = [ { name = "scale", estimator = "sklearn.preprocessing.StandardScaler" },
          { name = "clf", estimator = "sklearn.linear_model.LogisticRegression", params = { max_iter = 1000 } } ]
grid = { clf__C = [0.01, 0.1, 1, 10] }

[cv]
splitter = "StratifiedKFold"
n_splits = 5
shuffle = true
random_state = 0

[scoring]
metrics = ["accuracy", "f1_macro"]
refit = "accuracy"

[run]
error_score = "nan"
return_train_score = false
refit = true
"""


def write_demo(folder: str) -> str:
    """Write ``digits.h5`` and ``search.toml`` into ``folder``; return the config path.

    Called on rank 0 only.  The data file is rewritten only when missing.
    """
    from sklearn.datasets import load_digits

    from hpcml.data.h5 import write_dataset

    os.makedirs(folder, exist_ok=True)
    data = os.path.join(folder, "digits.h5")
    if not os.path.exists(data):
        X, y = load_digits(return_X_y=True)
        tmp = data + ".tmp"
        write_dataset(tmp, X, y, source="hpcml.cv --demo (sklearn.datasets.load_digits)")
        os.replace(tmp, data)
    config = os.path.join(folder, "search.toml")
    with open(config + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(DEMO_CONFIG)
    os.replace(config + ".tmp", config)
    return config

"""hpcml.sgd: allreduce-based synchronous data-parallel SGD on HDF5 shards.

Public names are loaded lazily (PEP 562) so that ``python -m hpcml.sgd`` can
pin OpenMP/BLAS threads before NumPy is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "SGDClassifier",
    "SGDRegressor",
    "GradientExchange",
    "Schedule",
    "linear_scaled_eta0",
    "InvalidData",
    "FitDiverged",
]

_LAZY = {
    "SGDClassifier": "hpcml.sgd.estimators",
    "SGDRegressor": "hpcml.sgd.estimators",
    "InvalidData": "hpcml.sgd.estimators",
    "FitDiverged": "hpcml.sgd.estimators",
    "GradientExchange": "hpcml.sgd.allreduce",
    "Schedule": "hpcml.sgd.schedules",
    "linear_scaled_eta0": "hpcml.sgd.schedules",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpcml.sgd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

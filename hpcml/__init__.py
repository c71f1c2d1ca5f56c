"""hpcml: MPI-native cross-validation, hyperparameter search and synchronous SGD.

The public names are loaded lazily (PEP 562) so that ``python -m hpcml.cv``
can pin OpenMP/BLAS threads before NumPy is imported.
"""

from __future__ import annotations

from typing import Any

from hpcml._version import __version__

__all__ = [
    "GridSearchCV",
    "RandomizedSearchCV",
    "HalvingGridSearchCV",
    "HalvingRandomSearchCV",
    "cross_validate",
    "AsyncHalvingSearchCV",
    "cross_val_score",
    "cross_val_predict",
    "validation_curve",
    "learning_curve",
    "run_info",
    "H5Dataset",
    "write_dataset",
    "KMeans",
    "__version__",
]

_LAZY = {
    "GridSearchCV": "hpcml.cv.search",
    "RandomizedSearchCV": "hpcml.cv.search",
    "HalvingGridSearchCV": "hpcml.cv.halving",
    "HalvingRandomSearchCV": "hpcml.cv.halving",
    "cross_validate": "hpcml.cv.search",
    "AsyncHalvingSearchCV": "hpcml.cv.async_search",
    "cross_val_score": "hpcml.cv.validation",
    "cross_val_predict": "hpcml.cv.validation",
    "validation_curve": "hpcml.cv.validation",
    "learning_curve": "hpcml.cv.validation",
    "run_info": "hpcml.cv.search",
    "H5Dataset": "hpcml.data.h5",
    "write_dataset": "hpcml.data.h5",
    "KMeans": "hpcml.cluster.kmeans",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpcml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

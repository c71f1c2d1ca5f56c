"""hpcml.cluster: distributed KMeans on rank-sharded data (arrays or HDF5 shards).

Public names are loaded lazily (PEP 562) so that ``python -m hpcml.cluster``
can pin OpenMP/BLAS threads before NumPy is imported.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KMeans", "InvalidData"]

_LAZY = {
    "KMeans": "hpcml.cluster.kmeans",
    "InvalidData": "hpcml.cluster.kmeans",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpcml.cluster' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

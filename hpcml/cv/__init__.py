"""hpcml.cv: MPI cross-validation and hyperparameter search (lazy re-exports)."""

from __future__ import annotations

from typing import Any

__all__ = ["GridSearchCV", "RandomizedSearchCV", "cross_validate"]


def __getattr__(name: str) -> Any:  # PEP 562: `python -m hpcml.cv` must not load numpy here
    if name in __all__:
        from hpcml.cv import search

        return getattr(search, name)
    raise AttributeError(f"module 'hpcml.cv' has no attribute {name!r}")

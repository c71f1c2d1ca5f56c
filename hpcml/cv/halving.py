"""Successive halving over MPI: scikit-learn's ``HalvingGridSearchCV`` and ``HalvingRandomSearchCV``.

The classes subclass scikit-learn's own: the iteration schedule
(``n_resources_``, ``n_candidates_``, ``min_resources_`` with ``'exhaust'`` /
``'smallest'``, ``aggressive_elimination``), the subsampling of train and test
indices (``_SubsampleMetaSplitter``), the choice of survivors (``_top_k``) and
of the best candidate are scikit-learn's code.  Only ``fit`` differs: each
iteration's ``evaluate_candidates`` call is one collective
:func:`hpcml.cv.engine.evaluate` over ``comm``, so the (candidate, split) units
of a rung are spread over the ranks by hpcml's scheduler; rank 0's splits and
candidates are broadcast, so every rank takes the same decisions.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any

import numpy as np
from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - makes the classes importable
from sklearn.model_selection import HalvingGridSearchCV as _SkHalvingGrid
from sklearn.model_selection import HalvingRandomSearchCV as _SkHalvingRandom

from hpcml._compat import _num_samples
from hpcml.comm import resolve_comm
from hpcml.cv.async_search import check_subsamples
from hpcml.cv.search import _EXTRA_CONSTRAINTS, _MPISearchMixin, _resolve_data

__all__ = ["HalvingGridSearchCV", "HalvingRandomSearchCV"]


def _check_resource_not_searched(search: Any) -> None:
    """scikit-learn's check from ``_run_search``, made before the collective data check of ``fit``.

    A candidate holds the resource exactly when its grid (or distributions) names it,
    so the keys are checked without drawing candidates.
    """
    if search.resource == "n_samples":
        return
    grid = getattr(search, "param_grid", None)
    if grid is None:
        grid = search.param_distributions
    grids = grid if isinstance(grid, list) else [grid]
    if any(search.resource in g for g in grids):
        raise ValueError(
            f"Cannot use parameter {search.resource} as the resource since it is part of the searched parameters."
        )


class _MPIHalvingMixin(_MPISearchMixin):
    """``fit`` and ``_run_search`` glue between scikit-learn's halving and hpcml's MPI search."""

    def fit(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Run successive halving over all ranks of ``comm``.

        Collective over ``comm``: call it on every rank with the same arguments.

        Parameters
        ----------
        X : array-like, sparse matrix or hpcml.H5Dataset
            Training vectors; an ``H5Dataset`` is read once per node.
        y : array-like, optional
            Target (taken from the ``H5Dataset`` when X is one and y is None).
        **params : dict
            Fit parameters, ``groups`` for the splitter, as in scikit-learn.

        Returns
        -------
        self : object
            The fitted search (identical on every rank).
        """
        X, y, params = _resolve_data(X, y, params, resolve_comm(self.comm))
        self._n_samples_orig = _num_samples(X)
        _check_resource_not_searched(self)
        _MPISearchMixin.fit(self, X, y, **params)
        # scikit-learn's halving sets best_score_ itself (its refit selects by iteration)
        self.best_score_ = self.cv_results_["mean_test_score"][self.best_index_]
        return self

    def _check_rung_splits(self, splits: list[tuple[Any, Any]], X: Any, y: Any, more_results: Any, comm: Any) -> None:
        """Refuse the first rung's subsamples if no fit can use them (scikit-learn #20775), before any fit.

        Called by ``evaluate_candidates`` with the rung's splits (rank 0's,
        broadcast); the check is :func:`hpcml.cv.async_search.check_subsamples`,
        shared with ASHA, and raises the same ``ValueError`` on every rank.
        """
        if self.resource != "n_samples" or more_results is None or int(more_results["iter"][0]) != 0:
            return
        check_subsamples(splits, X, y, int(more_results["n_resources"][0]), self.estimator, comm)

    def _run_search(self, evaluate_candidates: Any, *, callback_ctx: Any = None) -> None:
        """scikit-learn's halving loop; its ``verbose`` lines are printed by rank 0 only.

        Every rank runs the loop (the decisions are computed from identical,
        broadcast results); the fits inside ``evaluate_candidates`` print on the
        rank that runs them, as in :class:`hpcml.GridSearchCV`.
        """
        real_stdout = sys.stdout
        quiet = resolve_comm(self.comm).Get_rank() != 0

        def evaluate(candidate_params: Any, cv: Any = None, more_results: Any = None, **kw: Any) -> Any:
            with contextlib.redirect_stdout(real_stdout):
                return evaluate_candidates(candidate_params, cv, more_results, **kw)

        kwargs = {} if callback_ctx is None else {"callback_ctx": callback_ctx}  # scikit-learn < 1.9: none
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            super()._run_search(evaluate, **kwargs)  # type: ignore[misc]


_HALVING_CONSTRAINTS = {name: _EXTRA_CONSTRAINTS[name] for name in ("comm", "threads_per_rank", "prefix_cache_bytes")}


class HalvingGridSearchCV(_MPIHalvingMixin, _SkHalvingGrid):
    """Successive halving over a parameter grid, each iteration spread over MPI ranks.

    Same parameters, iterations and attributes as
    :class:`sklearn.model_selection.HalvingGridSearchCV` (``n_jobs`` is accepted
    and ignored: the ranks are the parallelism), plus ``comm``,
    ``threads_per_rank`` and ``prefix_cache_bytes`` as in :class:`hpcml.GridSearchCV`.  ``cv_results_``
    (with ``iter`` and ``n_resources``), ``best_*``, ``n_resources_``,
    ``n_candidates_``, ``n_remaining_candidates_``, ``min_resources_``,
    ``max_resources_``, ``n_iterations_``, ``n_possible_iterations_`` and
    ``n_required_iterations_`` are scikit-learn's, on every rank.

    Examples
    --------
    Run under ``mpiexec -n 4 python script.py``::

        from sklearn.svm import SVC
        import hpcml
        search = hpcml.HalvingGridSearchCV(SVC(), {"C": [1, 10, 100], "gamma": [1e-3, 1e-4]},
                                           factor=3, random_state=0)
        search.fit(X, y)          # every rank gets the same cv_results_
    """

    _parameter_constraints: dict = {**_SkHalvingGrid._parameter_constraints, **_HALVING_CONSTRAINTS}

    def __init__(
        self,
        estimator: Any,
        param_grid: Any,
        *,
        factor: float = 3,
        resource: str = "n_samples",
        max_resources: Any = "auto",
        min_resources: Any = "exhaust",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: Any = True,
        error_score: Any = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: Any = None,
        verbose: int = 0,
        comm: Any = None,
        threads_per_rank: int | None = None,
        prefix_cache_bytes: int | None = None,
    ) -> None:
        super().__init__(
            estimator,
            param_grid,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.comm = comm
        self.threads_per_rank = threads_per_rank
        self.prefix_cache_bytes = prefix_cache_bytes


class HalvingRandomSearchCV(_MPIHalvingMixin, _SkHalvingRandom):
    """Successive halving over sampled candidates, each iteration spread over MPI ranks.

    Same parameters, iterations and attributes as
    :class:`sklearn.model_selection.HalvingRandomSearchCV`, plus ``comm``,
    ``threads_per_rank`` and ``prefix_cache_bytes`` as in :class:`hpcml.GridSearchCV`.  The candidates are
    drawn on every rank and rank 0's are used (an unseeded search is still
    consistent across ranks).
    """

    _parameter_constraints: dict = {**_SkHalvingRandom._parameter_constraints, **_HALVING_CONSTRAINTS}

    def __init__(
        self,
        estimator: Any,
        param_distributions: Any,
        *,
        n_candidates: Any = "exhaust",
        factor: float = 3,
        resource: str = "n_samples",
        max_resources: Any = "auto",
        min_resources: Any = "smallest",
        aggressive_elimination: bool = False,
        cv: Any = 5,
        scoring: Any = None,
        refit: Any = True,
        error_score: Any = np.nan,
        return_train_score: bool = True,
        random_state: Any = None,
        n_jobs: Any = None,
        verbose: int = 0,
        comm: Any = None,
        threads_per_rank: int | None = None,
        prefix_cache_bytes: int | None = None,
    ) -> None:
        super().__init__(
            estimator,
            param_distributions,
            n_candidates=n_candidates,
            factor=factor,
            resource=resource,
            max_resources=max_resources,
            min_resources=min_resources,
            aggressive_elimination=aggressive_elimination,
            cv=cv,
            scoring=scoring,
            refit=refit,
            error_score=error_score,
            return_train_score=return_train_score,
            random_state=random_state,
            n_jobs=n_jobs,
            verbose=verbose,
        )
        self.comm = comm
        self.threads_per_rank = threads_per_rank
        self.prefix_cache_bytes = prefix_cache_bytes

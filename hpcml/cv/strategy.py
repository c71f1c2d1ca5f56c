"""The ``[search]`` table of a search config: which strategy, with which parameters.

``strategy`` is one of ``"grid"`` / ``"random"`` (exhaustive search of the
models' grids / sampled distributions: what a config without ``[search]``
does), ``"halving"`` (scikit-learn's synchronous successive halving, run by
:mod:`hpcml.cv.halving_run`) or ``"async_halving"`` (ASHA).  The halving
strategies take scikit-learn's halving parameters; this module only parses
and checks them (every problem is a :class:`hpcml.errors.ConfigError` naming the
key).  See docs/config.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcml.tomlconf import Table

STRATEGIES = ("grid", "random", "halving", "async_halving")
HALVING_KEYS = ("factor", "resource", "min_resources", "max_resources", "aggressive_elimination", "n_candidates")


@dataclass(frozen=True)
class SearchStrategy:
    """A parsed ``[search]`` table (``strategy=None``: no table, today's behaviour)."""

    strategy: str | None = None
    factor: float = 3
    resource: str = "n_samples"
    min_resources: int | str = "exhaust"
    max_resources: int | str = "auto"
    aggressive_elimination: bool = False
    n_candidates: int | str = "exhaust"
    random_state: int | None = None  # [run] random_state (subsampling, sampling)

    @property
    def halving(self) -> bool:
        """True for the two successive-halving strategies."""
        return self.strategy in ("halving", "async_halving")

    def sklearn_params(self) -> dict[str, Any]:
        """The keyword arguments of scikit-learn's halving classes (not ``n_candidates``)."""
        return {
            "factor": self.factor,
            "resource": self.resource,
            "min_resources": self.min_resources,
            "max_resources": self.max_resources,
            "aggressive_elimination": self.aggressive_elimination,
        }


def parse_search(t: Table | None, models: list[Any], random_state: int | None) -> SearchStrategy:
    """Parse ``[search]`` against the already-parsed ``[[model]]`` list.

    Parameters
    ----------
    t : Table or None
        The ``[search]`` table (None when the config has none).
    models : list of hpcml.cv.config.ModelConfig
        The models (their grids/distributions and valid parameter names).
    random_state : int or None
        ``[run] random_state``.

    Returns
    -------
    SearchStrategy
    """
    if t is None:
        return SearchStrategy()
    strategy = t.get("strategy", str)
    if strategy not in STRATEGIES:
        raise t.error("strategy", f"expected one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
    if strategy in ("grid", "random"):
        _check_kind(t, strategy, models)
        t.finish(["strategy"])  # the halving keys are unknown here
        return SearchStrategy(strategy=strategy)
    random_models = [m for m in models if m.distributions is not None]
    if strategy == "halving" and len(models) != 1:
        raise t.error(
            "strategy",
            f"'halving' searches one [[model]] (scikit-learn's successive halving takes one estimator); "
            f"this config has {len(models)}: run one search per model, or make the models one grid "
            "(a pipeline step whose values are estimators)",
        )
    factor = t.get("factor", float, 3.0)
    if not factor > 1:
        raise t.error("factor", f"must be greater than 1, got {factor!r}")
    resource = t.get("resource", str, "n_samples")
    if resource != "n_samples":
        _check_resource(t, resource, models)
    default_min = "smallest" if random_models else "exhaust"
    min_resources = _int_or(t, "min_resources", ("exhaust", "smallest"), default_min)
    max_resources = _int_or(t, "max_resources", ("auto",), "auto")
    if max_resources == "auto" and resource != "n_samples":
        raise t.error("max_resources", f"give an integer: 'auto' only applies to resource = \"n_samples\" ({resource})")
    if isinstance(min_resources, int) and isinstance(max_resources, int) and min_resources > max_resources:
        raise t.error("min_resources", f"{min_resources} is greater than max_resources = {max_resources}")
    aggressive = t.get("aggressive_elimination", bool, False)
    n_candidates = _int_or(t, "n_candidates", ("exhaust",), "exhaust")
    if "n_candidates" in t and not random_models:
        raise t.error(
            "n_candidates", "only for models with distributions (random halving); a grid gives its candidates"
        )
    if random_models and n_candidates == "exhaust" == min_resources:
        raise t.error("n_candidates", "n_candidates and min_resources cannot both be 'exhaust'")
    if strategy == "halving" and resource == "n_samples" and random_state is None:
        raise t.error(
            "strategy",
            "halving on n_samples subsamples each rung at random: set [run] random_state "
            "(an integer) so that every rank and a --resume draw the same rows",
        )
    t.finish(["strategy", *HALVING_KEYS])
    return SearchStrategy(
        strategy, factor, resource, min_resources, max_resources, aggressive, n_candidates, random_state
    )


def _check_kind(t: Table, strategy: str, models: list[Any]) -> None:
    for model in models:
        has_dist = model.distributions is not None
        if (strategy == "random") != has_dist:
            need = "distributions (and n_iter)" if strategy == "random" else "a grid"
            raise t.error("strategy", f"'{strategy}' needs {need} in every [[model]]; model '{model.name}' has not")


def _check_resource(t: Table, resource: str, models: list[Any]) -> None:
    for model in models:
        if resource not in model.estimator.get_params(deep=True):
            raise t.error("resource", f"'{resource}' is not a parameter of model '{model.name}' ({model.label})")
        spaces = model.grid if model.grid is not None else [model.distributions or {}]
        if any(resource in space for space in spaces):
            raise t.error(
                "resource", f"'{resource}' is the resource: remove it from model '{model.name}''s search space"
            )


def _int_or(t: Table, key: str, words: tuple[str, ...], default: Any) -> Any:
    value = t.get(key, (int, str), default)
    if isinstance(value, str):
        if value not in words:
            raise t.error(key, f"expected a positive integer or {' / '.join(map(repr, words))}, got {value!r}")
        return value
    if value < 1:
        raise t.error(key, f"expected a positive integer, got {value}")
    return value

"""The search config: TOML -> validated, frozen objects (identical on every rank).

See docs/config.md for the reference.  Every problem is a
:class:`hpcml.errors.ConfigError` whose message names the file and the key.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass, field
from typing import Any

from hpcml.cv.folds import MODES as FOLD_MODES
from hpcml.cv.hierarchy import DISPATCH_MODES
from hpcml.cv.strategy import SearchStrategy, parse_search
from hpcml.errors import ConfigError
from hpcml.tomlconf import Table, config_hash, import_object, parse_toml

TOP_KEYS = ("data", "model", "cv", "scoring", "run", "search")


def _none(value: Any) -> Any:
    """TOML has no null: the string "None" stands for Python's None."""
    if isinstance(value, str) and value == "None":
        return None
    if isinstance(value, list):
        return [_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _none(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: where X, y (and optional groups, sample_weight) live."""

    path: str
    X: str = "X"
    y: str | None = "y"
    groups: str | None = None
    sample_weight: str | None = None
    load: str | None = None  # "auto" | "read" | "broadcast" (hpcml.data.shared.load_mode); None: env/auto


@dataclass
class ModelConfig:
    """One ``[[model]]`` entry: an estimator (or pipeline) and its search space."""

    name: str
    estimator: Any
    label: str
    grid: list[dict[str, list[Any]]] | None = None
    distributions: dict[str, Any] | None = None
    n_iter: int = 10
    random_state: int | None = None

    def candidates(self) -> list[dict[str, Any]]:
        """Every parameter set of this model (ParameterGrid or ParameterSampler)."""
        from sklearn.model_selection import ParameterGrid, ParameterSampler

        if self.distributions is not None:
            return list(ParameterSampler(self.distributions, self.n_iter, random_state=self.random_state))
        return list(ParameterGrid(self.grid if self.grid is not None else [{}]))


@dataclass
class SearchConfig:
    """A whole search, parsed and validated."""

    source: str
    hash: str
    data: DataConfig
    models: list[ModelConfig]
    cv: Any
    cv_label: str
    scoring: Any
    multimetric: bool
    refit_metric: str
    error_score: Any
    return_train_score: bool
    refit: bool
    out: str | None
    fold_copies: str = "auto"
    #: per-rank byte budget of the pipeline-prefix cache (None: HPCML_PREFIX_CACHE_BYTES or 1 GiB; 0: off)
    prefix_cache_bytes: int | None = None
    #: "auto" / "flat" / "hierarchical": how rank 0 hands out units (hpcml.cv.hierarchy)
    dispatch: str = "auto"
    search: SearchStrategy = field(default_factory=SearchStrategy)  # [search]: hpcml.cv.strategy


def load_config(data: bytes, source: str) -> SearchConfig:
    """Parse and validate a search config.

    Parameters
    ----------
    data : bytes
        The TOML file's content.
    source : str
        Its path (relative paths inside it are relative to its folder).
    """
    doc = parse_toml(data, source)
    top = Table(doc, f"{source}:")
    base = os.path.dirname(os.path.abspath(source))
    data_cfg = _data(top.sub("data", required=True), base)
    models = _models(top, source)
    cv, cv_label = _cv(top.sub("cv"))
    scoring, multimetric, refit_metric = _scoring(top.sub("scoring"))
    run = top.sub("run") or Table({}, f"{source}: [run]")
    error_score = _error_score(run)
    return_train_score = run.get("return_train_score", bool, False)
    refit = run.get("refit", bool, True)
    out = run.get("out", str, None)
    if out == "":  # was: silently the config file's folder (an empty --out is refused too)
        raise run.error("out", 'must name a folder, got ""')
    if out is not None:
        out = os.path.join(base, out)
    random_state = run.get("random_state", int, None)
    fold_copies = run.get("fold_copies", str, "auto")
    if fold_copies not in FOLD_MODES:
        raise run.error("fold_copies", f"expected one of {', '.join(map(repr, FOLD_MODES))}, got {fold_copies!r}")
    prefix_cache_bytes = run.get("prefix_cache_bytes", int, None)
    dispatch = run.get("dispatch", str, "auto")
    if dispatch not in DISPATCH_MODES:
        raise run.error("dispatch", f"expected one of {', '.join(map(repr, DISPATCH_MODES))}, got {dispatch!r}")
    if prefix_cache_bytes is not None and prefix_cache_bytes < 0:
        raise run.error("prefix_cache_bytes", f"expected a number of bytes >= 0, got {prefix_cache_bytes}")
    for model in models:
        if model.distributions is not None and model.random_state is None:
            model.random_state = random_state
    run.finish(
        [
            "error_score",
            "return_train_score",
            "refit",
            "out",
            "random_state",
            "fold_copies",
            "prefix_cache_bytes",
            "dispatch",
        ]
    )
    search = parse_search(top.sub("search"), models, random_state)
    if search.halving and multimetric:
        raise ConfigError(f"{source}: [scoring] successive halving ranks candidates by one metric: give one")
    top.finish(TOP_KEYS)
    return SearchConfig(
        source=source,
        hash=config_hash(data),
        data=data_cfg,
        models=models,
        cv=cv,
        cv_label=cv_label,
        scoring=scoring,
        multimetric=multimetric,
        refit_metric=refit_metric,
        error_score=error_score,
        return_train_score=return_train_score,
        refit=refit,
        out=out,
        fold_copies=fold_copies,
        search=search,
        prefix_cache_bytes=prefix_cache_bytes,
        dispatch=dispatch,
    )


def _data(t: Table, base: str) -> DataConfig:
    path = t.get("path", str)
    cfg = DataConfig(
        path=os.path.join(base, path),
        X=t.get("X", str, "X"),
        y=_opt_name(t, "y", "y"),
        groups=t.get("groups", str, None),
        sample_weight=t.get("sample_weight", str, None),
        load=t.get("load", str, None),
    )
    if cfg.load not in (None, "auto", "read", "broadcast"):
        raise t.error("load", f"expected one of 'auto', 'read', 'broadcast', got {cfg.load!r}")
    t.finish(["path", "X", "y", "groups", "sample_weight", "load"])
    return cfg


def _opt_name(t: Table, key: str, default: str) -> str | None:
    value = t.get(key, (str, bool), default)
    if value is False:
        return None
    if value is True:
        raise t.error(key, "expected a dataset name or false")
    return value


def _build_estimator(cls_path: str, params: dict[str, Any], where: str) -> Any:
    cls = import_object(cls_path, "estimator", where)
    if not (inspect.isclass(cls) and hasattr(cls, "fit") and hasattr(cls, "get_params")):
        raise ConfigError(f"{where}: '{cls_path}' is not a scikit-learn estimator class")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"{where}: invalid parameters for {cls_path}: {exc}") from None


def _models(top: Table, source: str) -> list[ModelConfig]:
    raw = top.raw("model", None)
    if raw is None:
        raise ConfigError(f"{source}: no [[model]] table: give at least one model to search")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: model must be an array of tables ([[model]])")
    models = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        label = entry.get("name", f"#{i + 1}") if isinstance(entry, dict) else f"#{i + 1}"
        t = Table(entry, f"{source}: [[model]] {label}")
        name = t.get("name", str, f"model{i}")
        if name in names:
            raise t.error("name", f"duplicate model name '{name}'")
        names.add(name)
        params = _none(t.get("params", dict, {}))
        if "estimator" in t and "steps" in t:
            raise t.error(None, "give either estimator or steps, not both")
        if "steps" in t:
            estimator, est_label = _pipeline(t, params)
        else:
            est_label = t.get("estimator", str)
            estimator = _build_estimator(est_label, params, f"{t.where} estimator")
        valid = set(estimator.get_params(deep=True))
        grid = distributions = None
        if "grid" in t and "distributions" in t:
            raise t.error(None, "give either grid or distributions, not both")
        if "distributions" in t:
            distributions = _distributions(t, valid, est_label)
            n_iter = t.get("n_iter", int, 10)
            if n_iter < 1:
                raise t.error("n_iter", "must be at least 1")
        else:
            if "n_iter" in t:
                raise t.error("n_iter", "only applies with distributions (a grid runs every candidate)")
            grid = _grid(t, valid, est_label)
            n_iter = 10
        models.append(
            ModelConfig(
                name=name,
                estimator=estimator,
                label=est_label,
                grid=grid,
                distributions=distributions,
                n_iter=n_iter,
                random_state=t.get("random_state", int, None),
            )
        )
        t.finish(["name", "estimator", "steps", "params", "grid", "distributions", "n_iter", "random_state"])
    return models


def _pipeline(t: Table, params: dict[str, Any]) -> tuple[Any, str]:
    from sklearn.pipeline import Pipeline

    steps_raw = t.get("steps", list)
    if not steps_raw:
        raise t.error("steps", "a pipeline needs at least one step")
    steps = []
    for j, step in enumerate(steps_raw):
        st = Table(step, f"{t.where} steps[{j}]")
        name = st.get("name", str)
        path = st.get("estimator", str)
        step_params = _none(st.get("params", dict, {}))
        steps.append((name, _build_estimator(path, step_params, f"{st.where} estimator")))
        st.finish(["name", "estimator", "params"])
    try:
        pipe = Pipeline(steps)
        pipe.get_params()
        if params:
            _check_names(t, "params", params, set(pipe.get_params(deep=True)), "Pipeline")
            pipe.set_params(**params)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise t.error("steps", str(exc)) from None
    return pipe, "Pipeline(" + ", ".join(s[1].__class__.__name__ for s in steps) + ")"


def _check_names(t: Table, key: str, names: Any, valid: set[str], label: str) -> None:
    for name in names:
        if name not in valid:
            raise t.error(key, f"invalid parameter '{name}' for estimator {label}")


def _grid(t: Table, valid: set[str], label: str) -> list[dict[str, list[Any]]]:
    raw = t.raw("grid", {})
    grids = raw if isinstance(raw, list) else [raw]
    out = []
    for g in grids:
        if not isinstance(g, dict):
            raise t.error("grid", "expected a table of lists (or an array of such tables)")
        _check_names(t, "grid", g, valid, label)
        clean = {}
        for name, values in g.items():
            if not isinstance(values, list):
                raise t.error(f"grid.{name}", f"expected an array of values, got {values!r}")
            if not values:
                raise t.error(f"grid.{name}", "empty list: the grid has no candidates")
            # an array among the values is a tuple for scikit-learn (ngram_range, feature_range, ...)
            clean[name] = [tuple(v) if isinstance(v, list) else v for v in _none(values)]
        out.append(clean)
    if isinstance(raw, list) and not raw:
        raise t.error("grid", "empty grid")
    return out


def _distributions(t: Table, valid: set[str], label: str) -> dict[str, Any]:
    import scipy.stats

    raw = t.get("distributions", dict)
    if not raw:
        raise t.error("distributions", "empty: give at least one parameter")
    _check_names(t, "distributions", raw, valid, label)
    out: dict[str, Any] = {}
    for name, spec in raw.items():
        key = f"distributions.{name}"
        if isinstance(spec, list):
            if not spec:
                raise t.error(key, "empty list of choices")
            out[name] = _none(spec)
            continue
        if not isinstance(spec, dict) or "dist" not in spec:
            raise t.error(
                key, 'expected a list of choices or a table like { dist = "loguniform", low = 1e-3, high = 1e3 }'
            )
        kwargs = {k: v for k, v in spec.items() if k != "dist"}
        dist_name = spec["dist"]
        dist = getattr(scipy.stats, str(dist_name), None)
        if dist is None or not hasattr(dist, "rvs"):
            raise t.error(key, f"unknown distribution '{dist_name}' (any scipy.stats distribution)")
        if dist_name in ("loguniform", "reciprocal") and {"low", "high"} <= set(kwargs):
            kwargs = {"a": kwargs.pop("low"), "b": kwargs.pop("high"), **kwargs}
        elif dist_name == "uniform" and {"low", "high"} <= set(kwargs):
            low, high = kwargs.pop("low"), kwargs.pop("high")
            kwargs = {"loc": low, "scale": high - low, **kwargs}
        try:
            frozen = dist(**kwargs)
            frozen.rvs(random_state=0)
        except Exception as exc:  # noqa: BLE001 - scipy raises many kinds
            raise t.error(key, f"invalid {dist_name} distribution: {exc}") from None
        out[name] = frozen
    return out


def _cv(t: Table | None) -> tuple[Any, str]:
    from sklearn import model_selection

    if t is None:
        return 5, "default (5 folds; stratified for classifiers)"
    name = t.get("splitter", str, None)
    kwargs = {k: _none(v) for k, v in t.rest().items()}
    if name is None:
        n = kwargs.pop("n_splits", 5)
        if kwargs:
            raise t.error(None, f"unknown key '{next(iter(kwargs))}' (give [cv] splitter to use splitter options)")
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise t.error("n_splits", f"expected an integer >= 2, got {n!r}")
        return n, f"default ({n} folds; stratified for classifiers)"
    if "." in name:
        cls = import_object(name, "splitter", f"{t.where} splitter")
    else:
        cls = getattr(model_selection, name, None)
    if cls is None or not inspect.isclass(cls) or not hasattr(cls, "split"):
        raise t.error("splitter", f"unknown splitter '{name}' (any sklearn.model_selection splitter, e.g. KFold)")
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p != "self"]
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for key in kwargs:
        if key not in accepted and not has_var_kw:
            raise t.error(key, f"unknown key for splitter {name} (it takes: {', '.join(accepted) or 'nothing'})")
    for key, types in (("n_splits", int), ("n_repeats", int), ("shuffle", bool), ("random_state", int)):
        value = kwargs.get(key)
        if value is not None and (not isinstance(value, types) or (types is int and isinstance(value, bool))):
            raise t.error(key, f"expected {'an integer' if types is int else 'a boolean'}, got {value!r}")
    try:
        splitter = cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - sklearn raises ValueError/TypeError
        raise t.error(None, f"invalid {name} settings: {exc}") from None
    return splitter, repr(splitter)


def _scoring(t: Table | None) -> tuple[Any, bool, str]:
    from sklearn.metrics import get_scorer

    if t is None:
        return None, False, "score"
    metrics = t.raw("metrics", None)
    refit = t.get("refit", str, None)
    t.finish(["metrics", "refit"])

    def check(name: Any, key: str) -> None:
        if not isinstance(name, str):
            raise t.error(key, f"expected a scorer name, got {name!r}")
        try:
            get_scorer(name)
        except ValueError:
            raise t.error(key, f"unknown scorer '{name}' (see sklearn.metrics.get_scorer_names())") from None

    if metrics is None:
        if refit is not None:
            raise t.error("refit", "refit names a metric but no metrics are given")
        return None, False, "score"
    if isinstance(metrics, str):
        check(metrics, "metrics")
        return metrics, False, "score"
    if isinstance(metrics, list):
        if not metrics:
            raise t.error("metrics", "empty list of metrics")
        for m in metrics:
            check(m, "metrics")
        if len(set(metrics)) != len(metrics):
            raise t.error("metrics", "duplicate metric")
        if len(metrics) == 1:
            if refit not in (None, metrics[0]):
                raise t.error("refit", f"'{refit}' is not one of the metrics {metrics}")
            return metrics[0], False, "score"
        names = list(metrics)
        scoring: Any = list(metrics)
    elif isinstance(metrics, dict):
        if not metrics:
            raise t.error("metrics", "empty table of metrics")
        for k, m in metrics.items():
            check(m, f"metrics.{k}")
        names = list(metrics)
        scoring = dict(metrics)
    else:
        raise t.error("metrics", "expected a scorer name, an array of names or a table name = scorer")
    refit = refit if refit is not None else names[0]
    if refit not in names:
        raise t.error("refit", f"'{refit}' is not one of the metrics {names}")
    return scoring, True, refit


def _error_score(run: Table) -> Any:
    value = run.get("error_score", (str, float), "nan")
    if isinstance(value, str):
        if value.lower() == "nan":
            return math.nan
        if value == "raise":
            return "raise"
        raise run.error("error_score", f'expected "nan", "raise" or a number, got {value!r}')
    return value

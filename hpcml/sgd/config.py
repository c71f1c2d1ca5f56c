"""The TOML config of ``python -m hpcml.sgd`` (strict: unknown keys are errors).

Reading a config never imports NumPy, so the entry point can read the thread
budget from it before pinning BLAS threads.  See ``docs/sgd.md`` for the
reference; in short::

    [data]                      # required unless --demo
    path = "train.h5"
    X = "X"                     # dataset names inside the file
    y = "y"
    sample_weight = "w"         # optional: per-row weights dataset
    test_path = "test.h5"       # optional: scored after training

    [model]
    type = "classifier"         # or "regressor"
    loss = "log_loss"           # log_loss, hinge | squared_error, huber
    penalty = "l2"              # l2, l1, elasticnet, none
    alpha = 1e-4
    l1_ratio = 0.15
    epsilon = 0.1               # huber only
    fit_intercept = true

    [train]
    max_iter = 1000             # epochs (stops earlier on tol, like scikit-learn)
    batch_size = "auto"         # global batch (all ranks together); auto: training rows // 32 in [16, 256]
    sampling = "global"         # or "local"
    tol = 1e-3                  # or "none"
    n_iter_no_change = 5
    early_stopping = false
    validation_fraction = 0.1
    momentum = 0.0
    nesterov = false
    random_state = 0

    [schedule]
    name = "constant"           # constant, invscaling, cosine
    eta0 = 0.1
    power_t = 0.5
    warmup_steps = 0
    eta_min = 0.0

    [output]
    dir = "hpcml-out"           # relative to this file (--out: to the working directory); default ./hpcml-out
    plot = true

    [run]
    threads_per_rank = 1        # default: CPUs of the node / ranks on it
    verbose = false
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hpcml.cliargs import config_path_value
from hpcml.errors import ConfigError
from hpcml.tomlconf import Table, parse_toml, read_config_bytes

MODEL_TYPES = ("classifier", "regressor")
_LOSSES = {"classifier": ("log_loss", "hinge"), "regressor": ("squared_error", "huber")}
_PENALTIES = ("l2", "l1", "elasticnet", "none")
_SCHEDULES = ("constant", "invscaling", "cosine")
_SAMPLING = ("global", "local")
_SECTIONS = ("data", "model", "train", "schedule", "output", "run")


@dataclass
class SGDConfig:
    """A checked config: everything the entry point needs, as plain Python values."""

    source: str = "<demo>"
    data_path: str | None = None
    X: str = "X"
    y: str = "y"
    sample_weight: str | None = None
    test_path: str | None = None
    model_type: str = "classifier"
    estimator_params: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "hpcml-out"
    plot: bool = True
    threads_per_rank: int | None = None
    verbose: bool = False


def _choice(table: Table, key: str, choices: tuple[str, ...], default: str) -> str:
    value = table.get(key, str, default)
    if value not in choices:
        raise table.error(key, f"expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _number(
    table: Table,
    key: str,
    default: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    value = table.get(key, float, default)
    if low is not None and (value < low or (low_open and value == low)):
        raise table.error(key, f"must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise table.error(key, f"must be {'<' if high_open else '<='} {high}, got {value!r}")
    return value


def _int(table: Table, key: str, default: int | None, low: int = 0) -> int | None:
    value = table.get(key, int, default)
    if value is not None and value < low:
        raise table.error(key, f"must be >= {low}, got {value!r}")
    return value


def parse_config(data: dict[str, Any], source: str, demo: bool = False) -> SGDConfig:
    """Check a parsed TOML document and return an :class:`SGDConfig`.

    Parameters
    ----------
    data : dict
        Parsed TOML.
    source : str
        File name for messages.
    demo : bool
        ``--demo``: the ``[data]`` table is optional (the demo set replaces it).

    Returns
    -------
    SGDConfig
    """
    top = Table(data, source)
    cfg = SGDConfig(source=source)
    _data_table(top, cfg, demo)
    params: dict[str, Any] = {}
    _model_table(top, cfg, params)
    _train_table(top, params)
    _schedule_table(top, cfg, params)
    otab = top.sub("output") or Table({}, f"{source} [output]")
    out = otab.get("dir", str, None)  # relative to the config file; --out to the working directory (docs/cli.md)
    if out == "":  # was: silently the config file's folder (an empty --out is refused too)
        raise otab.error("dir", 'must name a folder, got ""')
    cfg.out_dir = config_path_value(out, source) if out is not None else "hpcml-out"
    cfg.plot = otab.get("plot", bool, True)
    otab.finish()
    rtab = top.sub("run") or Table({}, f"{source} [run]")
    cfg.threads_per_rank = _int(rtab, "threads_per_rank", None, low=1)
    cfg.verbose = rtab.get("verbose", bool, False)
    rtab.finish()
    top.finish(_SECTIONS)
    cfg.estimator_params = params
    return cfg


def _data_table(top: Table, cfg: SGDConfig, demo: bool) -> None:
    """``[data]``: paths relative to the config file."""
    source = cfg.source
    base = os.path.dirname(os.path.abspath(source)) if source != "<demo>" else os.getcwd()
    dtab = top.sub("data", required=not demo)
    if dtab is None:
        return
    path = dtab.get("path", str, None) if demo else dtab.get("path", str)
    cfg.data_path = os.path.join(base, path) if path else None
    cfg.X = dtab.get("X", str, "X")
    cfg.y = dtab.get("y", str, "y")
    cfg.sample_weight = dtab.get("sample_weight", str, None)
    test = dtab.get("test_path", str, None)
    cfg.test_path = os.path.join(base, test) if test else None
    dtab.finish()


def _model_table(top: Table, cfg: SGDConfig, params: dict[str, Any]) -> None:
    """``[model]``: type, loss and penalty."""
    mtab = top.sub("model") or Table({}, f"{cfg.source} [model]")
    cfg.model_type = _choice(mtab, "type", MODEL_TYPES, "classifier")
    losses = _LOSSES[cfg.model_type]
    params["loss"] = _choice(mtab, "loss", losses, losses[0])
    penalty = _choice(mtab, "penalty", _PENALTIES, "l2")
    params["penalty"] = None if penalty == "none" else penalty
    params["alpha"] = _number(mtab, "alpha", 1e-4, low=0.0)
    params["l1_ratio"] = _number(mtab, "l1_ratio", 0.15, low=0.0, high=1.0)
    if cfg.model_type == "regressor":
        params["epsilon"] = _number(mtab, "epsilon", 0.1, low=0.0)
    elif "epsilon" in mtab:
        raise mtab.error("epsilon", 'only applies to type = "regressor" (huber loss)')
    params["fit_intercept"] = mtab.get("fit_intercept", bool, True)
    mtab.finish()


def _train_table(top: Table, params: dict[str, Any]) -> None:
    """``[train]``: epochs, batches, stopping, momentum, seed."""
    ttab = top.sub("train") or Table({}, f"{top.where} [train]")
    params["max_iter"] = _int(ttab, "max_iter", 1000, low=1)
    batch = ttab.get("batch_size", (int, str), "auto")
    if isinstance(batch, str) and batch != "auto":
        raise ttab.error("batch_size", f'must be "auto" or a positive integer, got {batch!r}')
    if isinstance(batch, int) and batch < 1:
        raise ttab.error("batch_size", f"must be >= 1, got {batch!r}")
    params["batch_size"] = batch
    params["sampling"] = _choice(ttab, "sampling", _SAMPLING, "global")
    tol = ttab.get("tol", (float, str), 1e-3)
    if isinstance(tol, str):
        if tol != "none":
            raise ttab.error("tol", f'expected a number or "none", got {tol!r}')
        tol = None
    params["tol"] = tol
    params["n_iter_no_change"] = _int(ttab, "n_iter_no_change", 5, low=1)
    params["early_stopping"] = ttab.get("early_stopping", bool, False)
    params["validation_fraction"] = _number(
        ttab, "validation_fraction", 0.1, low=0.0, high=1.0, low_open=True, high_open=True
    )
    params["momentum"] = _number(ttab, "momentum", 0.0, low=0.0, high=1.0, high_open=True)
    params["nesterov"] = ttab.get("nesterov", bool, False)
    if params["nesterov"] and params["momentum"] == 0.0:
        raise ttab.error("nesterov", "needs momentum > 0")
    params["random_state"] = _int(ttab, "random_state", 0, low=0)
    ttab.finish()


def _schedule_table(top: Table, cfg: SGDConfig, params: dict[str, Any]) -> None:
    """``[schedule]``: the learning-rate schedule (default ``eta0`` by model type)."""
    stab = top.sub("schedule") or Table({}, f"{cfg.source} [schedule]")
    params["learning_rate"] = _choice(stab, "name", _SCHEDULES, "constant")
    params["eta0"] = _number(stab, "eta0", 0.1 if cfg.model_type == "classifier" else 0.01, low=0.0, low_open=True)
    params["power_t"] = _number(stab, "power_t", 0.5, low=0.0)
    params["warmup_steps"] = _int(stab, "warmup_steps", 0, low=0)
    params["eta_min"] = _number(stab, "eta_min", 0.0, low=0.0)
    if params["eta_min"] > params["eta0"]:
        raise stab.error("eta_min", f"must be <= eta0 ({params['eta0']!r}), got {params['eta_min']!r}")
    stab.finish()


def load_config(path: str | None, demo: bool = False) -> SGDConfig:
    """Read and check ``path`` (``None`` only with ``demo``)."""
    if path is None:
        if not demo:
            raise ConfigError("a config file is required (or run with --demo)")
        return parse_config({}, "<demo>", demo=True)
    return parse_config(parse_toml(read_config_bytes(path), path), path, demo=demo)

"""The TOML config of ``python -m hpcml.cluster`` (strict: unknown keys are errors).

Reading a config never imports NumPy, so the entry point can pin BLAS threads
first.  Reference (docs/kmeans.md)::

    [data]
    path = "blobs.h5"           # relative to this file
    X = "X"                     # dataset name of the rows
    sample_weight = "w"         # optional: per-row weights dataset

    [model]
    n_clusters = 8
    init = "k-means++"          # "k-means++", "random", "k-means||"
    init_centers = "c.npy"      # instead of init: initial centres (.npy, n_clusters x n_features)
    n_init = "auto"             # or a positive integer
    max_iter = 300
    tol = 1e-4
    random_state = 0            # or "none"
    oversampling_factor = 2.0   # k-means||
    init_max_iter = 5           # k-means|| rounds

    [output]
    dir = "hpcml-out"           # relative to this file (--out: to the working directory); default ./hpcml-out
    labels = true               # write labels.h5 (one label per row)

    [run]
    threads_per_rank = 1        # default: CPUs of the node / ranks on it
    verbose = false
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from hpcml.cliargs import config_path_value
from hpcml.errors import ConfigError
from hpcml.tomlconf import Table, parse_toml, read_config_bytes

INITS = ("k-means++", "random", "k-means||")
_SECTIONS = ("data", "model", "output", "run")


@dataclass
class ClusterConfig:
    """A checked config: everything the entry point needs, as plain Python values."""

    source: str
    data_path: str
    X: str = "X"
    sample_weight: str | None = None
    init_centers: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "hpcml-out"
    labels: bool = True
    threads_per_rank: int | None = None
    verbose: bool = False


def _positive_int(table: Table, key: str, default: int | None) -> int | None:
    value = table.get(key, int, default)
    if value is not None and value < 1:
        raise table.error(key, f"must be >= 1, got {value!r}")
    return value


def _model(mtab: Table, base: str, cfg: ClusterConfig) -> dict[str, Any]:
    p: dict[str, Any] = {"n_clusters": _positive_int(mtab, "n_clusters", 8)}
    init = mtab.get("init", str, None)
    centers = mtab.get("init_centers", str, None)
    if centers == "":  # was: silently no initial centres (k-means++)
        raise mtab.error("init_centers", 'must name a .npy file, got ""')
    if init is not None and centers is not None:
        raise mtab.error("init_centers", "give either init or init_centers, not both")
    if init is not None and init not in INITS:
        raise mtab.error("init", f"expected one of {', '.join(repr(i) for i in INITS)}, got {init!r}")
    p["init"] = init or "k-means++"
    cfg.init_centers = os.path.join(base, centers) if centers else None
    n_init = mtab.get("n_init", (int, str), "auto")
    if (isinstance(n_init, str) and n_init != "auto") or (isinstance(n_init, int) and n_init < 1):
        raise mtab.error("n_init", f'must be "auto" or a positive integer, got {n_init!r}')
    p["n_init"] = n_init
    p["max_iter"] = _positive_int(mtab, "max_iter", 300)
    p["tol"] = mtab.get("tol", float, 1e-4)
    if not 0 <= p["tol"] < math.inf:  # NaN and infinity too (scikit-learn refuses them inside the fit)
        raise mtab.error("tol", f"must be a finite number >= 0, got {p['tol']!r}")
    seed = mtab.get("random_state", (int, str), 0)
    if isinstance(seed, str) and seed != "none":
        raise mtab.error("random_state", f'expected an integer or "none", got {seed!r}')
    if isinstance(seed, int) and seed < 0:
        raise mtab.error("random_state", f"must be >= 0, got {seed!r}")
    p["random_state"] = None if seed == "none" else seed
    p["oversampling_factor"] = mtab.get("oversampling_factor", float, 2.0)
    if not 0 < p["oversampling_factor"] < math.inf:
        raise mtab.error("oversampling_factor", f"must be a finite number > 0, got {p['oversampling_factor']!r}")
    p["init_max_iter"] = _positive_int(mtab, "init_max_iter", None)
    mtab.finish()
    return p


def parse_config(data: dict[str, Any], source: str) -> ClusterConfig:
    """Check a parsed TOML document and return a :class:`ClusterConfig`."""
    top = Table(data, source)
    base = os.path.dirname(os.path.abspath(source))
    dtab = top.sub("data", required=True)
    assert dtab is not None
    cfg = ClusterConfig(source=source, data_path=os.path.join(base, dtab.get("path", str)))
    cfg.X = dtab.get("X", str, "X")
    cfg.sample_weight = dtab.get("sample_weight", str, None)
    dtab.finish()
    cfg.params = _model(top.sub("model") or Table({}, f"{source} [model]"), base, cfg)
    otab = top.sub("output") or Table({}, f"{source} [output]")
    out = otab.get("dir", str, None)  # relative to the config file; --out to the working directory (docs/cli.md)
    if out == "":  # was: silently the config file's folder (an empty --out is refused too)
        raise otab.error("dir", 'must name a folder, got ""')
    cfg.out_dir = config_path_value(out, source) if out is not None else "hpcml-out"
    cfg.labels = otab.get("labels", bool, True)
    otab.finish()
    rtab = top.sub("run") or Table({}, f"{source} [run]")
    cfg.threads_per_rank = _positive_int(rtab, "threads_per_rank", None)
    cfg.verbose = rtab.get("verbose", bool, False)
    rtab.finish()
    top.finish(_SECTIONS)
    return cfg


def load_config(path: str | None) -> ClusterConfig:
    """Read and check ``path``."""
    if path is None:
        raise ConfigError("a config file is required")
    return parse_config(parse_toml(read_config_bytes(path), path), path)

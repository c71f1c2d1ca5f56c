"""The sections every tool's ``run.json`` shares (docs/cli.md, "run.json").

``hpcml.cv``, ``hpcml.sgd`` and ``hpcml.cluster`` build their report as
``{**common_sections(...), <tool's own keys>}`` and end it with
:func:`timing`, so a script can read the tool, the ranks and their layout, the
library versions and the wall time at the same keys whatever wrote the folder.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

RUN_JSON = "run.json"


def versions() -> dict[str, str]:
    """Versions of hpcml, Python, the scientific stack and the MPI library."""
    import h5py
    import mpi4py
    import numpy as np
    import scipy
    import sklearn
    import threadpoolctl
    from mpi4py import MPI

    from hpcml._version import __version__

    return {
        "hpcml": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "h5py": h5py.__version__,
        "mpi4py": mpi4py.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
    }


def common_sections(tool: str, config: str | None, layouts: list[dict[str, Any]]) -> dict[str, Any]:
    """``tool``, ``config``, ``n_ranks``, ``nodes``, ``hosts``, ``layout`` and ``versions``.

    Parameters
    ----------
    tool : str
        The module run, e.g. ``"hpcml.sgd"``.
    config : str or None
        The config file (made absolute), ``None`` for a demo run without one.
    layouts : list of dict
        Every rank's :meth:`hpcml.threads.RankLayout.as_dict`, in rank order (``comm.gather``).

    Returns
    -------
    dict
        The shared head of ``run.json``.
    """
    return {
        "tool": tool,
        "config": os.path.abspath(config) if config and not config.startswith("<") else config,
        "n_ranks": len(layouts),
        "nodes": len({lay["node"] for lay in layouts}),
        "hosts": sorted({lay["host"] for lay in layouts}),
        "layout": layouts,
        "versions": versions(),
    }


def timing(started: float, status: str = "complete") -> dict[str, Any]:
    """``status`` and ``wall_seconds`` since ``started`` (a ``time.time()`` value), the report's tail."""
    return {"status": status, "wall_seconds": time.time() - started}

"""Loading X/y on every rank of a run (collective)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpcml.comm import raise_if_any

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

    from hpcml.data.h5 import H5Dataset


def load_arrays(dataset: H5Dataset, comm: MPI.Intracomm) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read every named dataset on every rank.  Collective over ``comm``.

    Returns
    -------
    arrays : dict
        ``{"X": ..., "y": ..., "groups": ..., "sample_weight": ...}`` (absent roles ``None``).
    info : dict
        How the data were loaded (``{"method": "per-rank", ...}``), for the run report.

    Raises
    ------
    hpcml.errors.DataError
        On every rank, if any rank could not read or validate the data.
    """
    error = None
    arrays: dict[str, Any] = {}
    try:
        if comm.Get_rank() == 0:
            dataset.validate()
    except Exception as exc:  # noqa: BLE001 - agreed below
        error = exc
    raise_if_any(comm, error)
    try:
        arrays = {role: dataset.read(role) for role in ("X", "y", "groups", "sample_weight")}
    except Exception as exc:  # noqa: BLE001 - agreed below
        error = exc
    raise_if_any(comm, error)
    return arrays, {"method": "per-rank", "reason": "shared windows not implemented yet"}

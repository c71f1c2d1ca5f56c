"""HDF5 data for hpcml: the on-disk layout, readers, converters and node-shared loading."""

from __future__ import annotations

from typing import Any

__all__ = ["H5Dataset", "write_dataset", "load_arrays"]


def __getattr__(name: str) -> Any:  # PEP 562: keep `import hpcml.data` free of numpy/h5py
    if name == "H5Dataset":
        from hpcml.data.h5 import H5Dataset

        return H5Dataset
    if name == "write_dataset":
        from hpcml.data.h5 import write_dataset

        return write_dataset
    if name == "load_arrays":
        from hpcml.data.shared import load_arrays

        return load_arrays
    raise AttributeError(f"module 'hpcml.data' has no attribute {name!r}")

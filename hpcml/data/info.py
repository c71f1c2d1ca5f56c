"""``python -m hpcml.data info``: what is in an hpcml HDF5 file."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcml.data.h5 import ROLES, H5Dataset, is_sparse_group

#: At most this many classes are listed individually.
MAX_CLASSES = 50


def describe_file(path: str, X: str = "X", y: str | None = "y", block_rows: int = 1 << 16) -> dict[str, Any]:
    """Summarise an hpcml HDF5 file (streaming through X in row blocks).

    Parameters
    ----------
    path : str
        The file.
    X, y : str
        Dataset names (``y`` is skipped when the file has none).
    block_rows : int
        Rows per block when counting NaNs.

    Returns
    -------
    dict
        ``path``, ``attrs``, ``X`` (shape, dtype, chunks, sparse, nnz, nan),
        ``y`` (shape, dtype, nan, classes: ``{label: count}`` or ``None``) and
        any other 1-D datasets.
    """
    import h5py

    probe = H5Dataset(path, X=X, y=None)
    with probe._open() as fh:
        has_y = y is not None and y in fh
    ds = H5Dataset(path, X=X, y=y if has_y else None)
    meta = ds.validate()
    out: dict[str, Any] = {"path": path}
    with ds._open() as fh:
        out["attrs"] = {k: _plain(v) for k, v in fh.attrs.items()}
        node = fh[X]
        if is_sparse_group(node):
            out["X"] = _sparse_x(node, meta["X"][0])
        elif meta.get("text"):
            out["X"] = _text_x(node)
        else:
            out["X"] = _dense_x(node, block_rows)
        for role in ROLES[1:]:
            name = {"y": y if has_y else None}.get(role, role)
            if name is None or name not in fh or not isinstance(fh[name], h5py.Dataset):
                continue
            out[role] = _column(fh[name], name, role)
        if "feature_names" in fh:
            out["feature_names"] = int(fh["feature_names"].shape[0])
    return out


def _sparse_x(node: Any, shape: tuple[int, int]) -> dict[str, Any]:
    """Summary of a CSR X group (NaNs counted in blocks of the stored values)."""
    data = node["data"]
    nan = 0
    for start in range(0, data.shape[0], 1 << 22):
        nan += int(np.count_nonzero(np.isnan(data[start : start + (1 << 22)])))
    return {
        "shape": list(shape),
        "dtype": str(data.dtype),
        "sparse": True,
        "nnz": int(data.shape[0]),
        "density": float(data.shape[0]) / max(1, shape[0] * shape[1]),
        "chunks": list(data.chunks or []),
        "nan": nan,
    }


def _text_x(node: Any) -> dict[str, Any]:
    """Summary of a text X (one document per row)."""
    return {
        "shape": list(node.shape),
        "dtype": "str",
        "sparse": False,
        "text": True,
        "chunks": list(node.chunks) if node.chunks else None,
        "nan": 0,
    }


def _dense_x(node: Any, block_rows: int) -> dict[str, Any]:
    """Summary of a dense X, streaming its rows in blocks of at most 64 MiB to count NaNs."""
    nan = 0
    rows = max(1, min(block_rows, (64 << 20) // max(1, node.shape[1] * node.dtype.itemsize)))
    buf = np.empty((rows, node.shape[1]), dtype=node.dtype)
    for start in range(0, node.shape[0], rows):
        stop = min(start + rows, node.shape[0])
        part = buf[: stop - start]
        node.read_direct(part, source_sel=np.s_[start:stop])
        if node.dtype.kind == "f":
            nan += int(np.count_nonzero(np.isnan(part)))
    return {
        "shape": list(node.shape),
        "dtype": str(node.dtype),
        "sparse": False,
        "chunks": list(node.chunks) if node.chunks else None,
        "nan": nan,
    }


def _column(dataset: Any, name: str, role: str) -> dict[str, Any]:
    """Summary of a 1-D dataset (y, groups, sample_weight); class counts for y."""
    values = dataset[...]
    entry: dict[str, Any] = {
        "name": name,
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "nan": int(np.count_nonzero(np.isnan(values))) if values.dtype.kind == "f" else 0,
    }
    if role == "y":
        entry["classes"] = _classes(values)
    return entry


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _classes(y: np.ndarray) -> dict[str, int] | None:
    """Label counts if y looks like class labels (integers, or few integral floats)."""
    if y.dtype.kind == "f":
        finite = y[np.isfinite(y)]
        if finite.size == 0 or not np.all(finite == np.round(finite)):
            return None
        y = finite
    labels, counts = np.unique(y, return_counts=True)
    if labels.size > MAX_CLASSES and y.dtype.kind == "f":
        return None
    return {str(_plain(k)): int(c) for k, c in zip(labels, counts, strict=True)}


def format_info(info: dict[str, Any]) -> str:
    """Human-readable lines for :func:`describe_file`'s result."""
    x = info["X"]
    lines = [f"file:     {info['path']}"]
    attrs = info.get("attrs", {})
    if "hpcml_format_version" in attrs:
        lines.append(f"format:   hpcml v{attrs['hpcml_format_version']}, created by {attrs.get('created_by', '?')}")
    if x["sparse"]:
        lines.append(
            f"X:        {x['shape'][0]} x {x['shape'][1]} {x['dtype']} CSR, nnz {x['nnz']} "
            f"(density {x['density']:.3g}), data chunks {x['chunks']}"
        )
    elif x.get("text"):
        lines.append(f"X:        {x['shape'][0]} documents (strings), chunks {x['chunks']}")
    else:
        lines.append(f"X:        {x['shape'][0]} x {x['shape'][1]} {x['dtype']}, chunks {x['chunks']}")
    lines.append(f"X NaN:    {x['nan']}")
    y = info.get("y")
    if y is None:
        lines.append("y:        none")
    else:
        lines.append(f"y:        '{y['name']}' {y['shape'][0]} {y['dtype']}, NaN {y['nan']}")
        classes = y.get("classes")
        if classes is None:
            lines.append("classes:  (continuous target)")
        else:
            total = sum(classes.values())
            shown = sorted(classes.items(), key=lambda kv: -kv[1])[:MAX_CLASSES]
            parts = [f"{k}: {v} ({100.0 * v / total:.1f}%)" for k, v in shown]
            more = f" ... {len(classes) - len(shown)} more" if len(classes) > len(shown) else ""
            lines.append(f"classes:  {len(classes)}: " + ", ".join(parts) + more)
    for role in ("groups", "sample_weight"):
        if role in info:
            e = info[role]
            lines.append(f"{role + ':':<10}{e['shape'][0]} {e['dtype']}, NaN {e['nan']}")
    if "feature_names" in info:
        lines.append(f"features: {info['feature_names']} names")
    return "\n".join(lines)

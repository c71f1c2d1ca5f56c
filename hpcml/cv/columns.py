"""Bulk conversion and encoding of cv_results columns (rank 0's end of run).

``to_json_value`` and ``dumps_columns`` produce exactly what the per-value
recursion and ``json.dumps(columns, indent=1, allow_nan=False)`` produce, but
convert whole NumPy columns at once and encode the common scalars (finite
floats, ints, bools, None, strings) and flat dicts without the pure-Python
indenting encoder.  Anything else falls back to the standard library, so the
bytes never differ (tests/unit/test_cv_columns.py compares them).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps uses with ensure_ascii=True
_sorted_encoder = json.JSONEncoder(sort_keys=True)


def _plain(value: Any) -> bool:
    """True when ``value`` is already its own JSON-ready form."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is str or kind is int or kind is bool


def _convert_list(values: list[Any]) -> list[Any]:
    """Convert the entries of a fresh list in place (plain ones are kept as they are)."""
    for i, value in enumerate(values):
        if _plain(value) or (type(value) is dict and _plain_dict(value)):
            continue  # a flat dict of plain values is its own JSON form (kept, never mutated)
        values[i] = to_json_value(value)
    return values


def _plain_dict(value: dict) -> bool:
    """True for a dict of string keys and plain values (a candidate's ``params`` as a rule)."""
    return all(type(k) is str for k in value) and all(map(_plain, value.values()))


def _convert_array(value: np.ndarray) -> list[Any]:
    """A 1-D array column: numbers at once (non-finite -> null), other dtypes entry by entry."""
    items = value.tolist()
    if value.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(value))
        for i in bad.tolist():
            items[i] = None
        return items
    if value.dtype.kind in "biu":
        return items
    return _convert_list(items)


def to_json_value(value: Any) -> Any:
    """A JSON-ready copy of a cv_results value (NaN and masked entries -> null)."""
    if isinstance(value, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(value)
        if value.ndim != 1:
            return [None if m else to_json_value(v) for v, m in zip(value.data.tolist(), mask)]
        items = value.data.tolist()
        for i in np.flatnonzero(mask).tolist():
            items[i] = None
        return _convert_list(items)
    if isinstance(value, np.ndarray):
        if value.ndim == 1:
            return _convert_array(value)
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _convert_list(list(value))
    if value is None or isinstance(value, str | int | bool):
        return value
    return repr(value)


def _scalar(value: Any) -> str | None:
    """JSON text of a plain scalar exactly as json.dumps writes it, else None."""
    kind = type(value)
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return None


def _entry(value: Any, pad: str) -> str:
    """JSON text of one entry at indentation ``pad`` (as json.dumps(indent=1) nests it)."""
    text = _scalar(value)
    if text is not None:
        return text
    if type(value) is dict and value and all(type(k) is str for k in value):
        parts = [_scalar(v) for v in value.values()]
        if None not in parts:
            inner = ",\n" + pad + " "
            keys = [_encode_str(k) for k in value]
            return "{\n" + pad + " " + inner.join(k + ": " + v for k, v in zip(keys, parts)) + "\n" + pad + "}"
    return json.dumps(value, indent=1, allow_nan=False).replace("\n", "\n" + pad)


def _entries(column: list[Any]) -> list[str] | Any:
    """JSON texts of a column's entries: a column of one plain type at once, else entry by entry."""
    kinds = set(map(type, column))
    if kinds == {float} and all(map(math.isfinite, column)):
        return map(float.__repr__, column)
    if kinds == {int}:
        return map(int.__repr__, column)
    if kinds == {str}:
        return map(_encode_str, column)
    return [_entry(v, "  ") for v in column]


def dumps_columns(columns: dict[str, Any]) -> str:
    """``json.dumps(columns, indent=1, allow_nan=False)`` for an object of column lists, in bulk."""
    if not columns or not all(type(k) is str for k in columns):
        return json.dumps(columns, indent=1, allow_nan=False)
    parts = []
    for key, column in columns.items():
        if type(column) is list and column:
            body = "[\n  " + ",\n  ".join(_entries(column)) + "\n ]"
        else:
            body = _entry(column, " ")
        parts.append(" " + _encode_str(key) + ": " + body)
    return "{\n" + ",\n".join(parts) + "\n}"


def csv_cells(column: list[Any]) -> list[Any]:
    """One CSV column: dicts and lists as sorted compact JSON, None as empty, the rest as is."""
    encode = _sorted_encoder.encode
    return ["" if v is None else encode(v) if isinstance(v, dict | list) else v for v in column]

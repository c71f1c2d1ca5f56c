"""The per-value cv_results writer before the bulk one (hpcml.cv.columns): the peer of bench_finish.py
and the reference the byte-identity test (tests/unit/test_cv_columns.py) compares with."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import numpy as np


def to_json_value(value: Any) -> Any:
    """The old recursion, one Python call per value."""
    if isinstance(value, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(value)
        return [None if m else to_json_value(v) for v, m in zip(value.data.tolist(), mask)]
    if isinstance(value, np.ndarray):
        return [to_json_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return repr(value)


def cv_results_texts(results: dict[str, Any]) -> tuple[str, str]:
    """(cv_results.json text, cv_results.csv text) as the old write_cv_results built them."""
    columns = {key: to_json_value(value) for key, value in results.items()}
    text = json.dumps(columns, indent=1, allow_nan=False)
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = list(columns)
    writer.writerow(keys)
    for i in range(len(columns["params"])):
        row = []
        for key in keys:
            value = columns[key][i]
            if isinstance(value, dict | list):
                value = json.dumps(value, sort_keys=True)
            row.append("" if value is None else value)
        writer.writerow(row)
    return text, buf.getvalue()

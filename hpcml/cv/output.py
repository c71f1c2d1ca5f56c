"""Output folder: atomic writes of cv_results (JSON, CSV), best.json, run.json, summary.

Every file is written to a temporary name in the same folder and renamed into
place (``os.replace``), so a kill never leaves a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import numpy as np

from hpcml.atomicio import atomic_write as _atomic_write
from hpcml.cv.columns import csv_cells, dumps_columns, to_json_value

CV_RESULTS_JSON = "cv_results.json"
CV_RESULTS_CSV = "cv_results.csv"
PARTIAL_JSON = "cv_results.partial.json"
BEST_JSON = "best.json"
BEST_MODEL = "best_model.joblib"
RUN_JSON = "run.json"
OUTPUT_FILES = (CV_RESULTS_JSON, CV_RESULTS_CSV, PARTIAL_JSON, BEST_JSON, BEST_MODEL, RUN_JSON, "journal.jsonl")


def atomic_write(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (mode: 0666 less the umask)."""
    _atomic_write(path, data)


def cv_results_columns(results: dict[str, Any]) -> dict[str, list[Any]]:
    """cv_results_ as an object of columns, each a list with one entry per candidate."""
    return {key: to_json_value(value) for key, value in results.items()}


def write_cv_results(folder: str, results: dict[str, Any], partial: bool = False) -> None:
    """cv_results.json and cv_results.csv (or cv_results.partial.json for a stopped run)."""
    columns = cv_results_columns(results)
    text = dumps_columns(columns)
    if partial:
        atomic_write(os.path.join(folder, PARTIAL_JSON), text)
        return
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(columns))
    writer.writerows(zip(*[csv_cells(column) for column in columns.values()]))
    write_cv_texts(folder, text, buf.getvalue())


def write_cv_texts(folder: str, json_text: str, csv_text: str) -> None:
    """cv_results.json and cv_results.csv from their texts (hpcml.cv.accrue); a partial snapshot is removed."""
    atomic_write(os.path.join(folder, CV_RESULTS_JSON), json_text)
    atomic_write(os.path.join(folder, CV_RESULTS_CSV), csv_text)
    partial_path = os.path.join(folder, PARTIAL_JSON)
    if os.path.exists(partial_path):
        os.unlink(partial_path)


def write_json(folder: str, name: str, obj: Any) -> None:
    """Any JSON document, atomically."""
    atomic_write(os.path.join(folder, name), json.dumps(to_json_value(obj), indent=1, allow_nan=False))


def write_model(folder: str, estimator: Any) -> None:
    """best_model.joblib (load only from runs you trust: joblib files are pickles)."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    atomic_write(os.path.join(folder, BEST_MODEL), buf.getvalue())


def summary_table(results: dict[str, Any], metric: str, top: int = 10) -> str:
    """A short human table of the best candidates by ``rank_test_<metric>``."""
    ranks = np.asarray(results[f"rank_test_{metric}"])
    means = np.asarray(results[f"mean_test_{metric}"], dtype=float)
    stds = np.asarray(results[f"std_test_{metric}"], dtype=float)
    models = results.get("model", [""] * len(ranks))
    order = np.argsort(ranks, kind="stable")[:top]
    label = "score" if metric == "score" else metric
    width = max(5, max((len(str(models[i])) for i in order), default=5))
    lines = [f"{'rank':>4}  {'model':<{width}}  {'mean ' + label:>16}  {'std':>8}  params"]
    for i in order:
        params = ", ".join(f"{k}={v}" for k, v in results["params"][i].items())
        lines.append(f"{ranks[i]:>4}  {str(models[i]):<{width}}  {means[i]:>16.5f}  {stds[i]:>8.5f}  {params}")
    if len(ranks) > top:
        lines.append(f"... {len(ranks) - top} more candidates in cv_results.csv")
    return "\n".join(lines)

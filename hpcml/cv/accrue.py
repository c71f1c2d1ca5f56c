"""cv_results folded on rank 0 as unit results arrive, so that the end of a run is short.

:class:`ResultColumns` takes every finished unit (:meth:`ResultColumns.add`,
from the CLI observer while rank 0 waits for requests, and from the journal on
``--resume``) into per-column float arrays, and the first time a candidate's
unit arrives it encodes the candidate's ``params`` cell (JSON and CSV), which
does not depend on the scores.  After the last unit only the cheap part is left
(:meth:`ResultColumns.finish`): means, standard deviations and ranks per
candidate (scikit-learn's ``_format_results`` arithmetic on the same arrays),
the ``param_*`` columns, and joining the texts.

The texts are byte-identical to :func:`hpcml.cv.output.write_cv_results` on
scikit-learn's own ``cv_results_`` (``tests/unit/test_cv_accrue.py``).  Any
value the fast path does not know (a score that is not a number, a parameter
column of an unusual dtype, a unit missing or seen twice) makes
:meth:`ResultColumns.usable` false, and the caller takes the full path.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from hpcml._compat import rank_of_means
from hpcml.cv.columns import _convert_list, _encode_str, _entries, _entry, _plain_dict, _sorted_encoder, to_json_value


def csv_field(value: Any) -> str:
    """One CSV cell as ``csv.writer`` (excel dialect, minimal quoting) writes it in a row of several."""
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _float_texts(values: np.ndarray, texts: list[str] | None = None) -> tuple[list[str], list[str]]:
    """JSON and CSV texts of a float column (non-finite: ``null`` and an empty cell).

    ``texts``, when given, are the values' ``repr`` already (made as the values arrived).
    """
    json_texts = texts if texts is not None else list(map(float.__repr__, values.tolist()))
    csv_texts = json_texts
    finite = np.isfinite(values)
    if not finite.all():
        json_texts, csv_texts = list(json_texts), list(json_texts)
        for i in np.flatnonzero(~finite).tolist():
            json_texts[i], csv_texts[i] = "null", ""
    return json_texts, csv_texts


def _as_float(value: Any) -> float:
    """A score as np.array(..., dtype=float64) in scikit-learn's ``_store`` holds it (numbers only)."""
    if not isinstance(value, numbers.Number):
        raise TypeError(f"a score that is not a number: {value!r}")
    return float(value)


def _column_texts(converted: list[Any]) -> tuple[list[str], list[str]]:
    """JSON entries and CSV cells of a converted column (``hpcml.cv.columns`` rules)."""
    json_texts = list(_entries(converted))
    kinds = set(map(type, converted))
    if kinds == {int} or (kinds == {float} and all(map(math.isfinite, converted))):
        return json_texts, json_texts  # csv.writer writes ints and floats as their repr
    return json_texts, [_csv_cell(v) for v in converted]


def _param_column(index: list[int], values: list[Any], n: int) -> list[Any] | None:
    """A ``param_*`` column as the writer sees scikit-learn's masked array (None: not a known dtype)."""
    try:
        arr = np.array(values)
    except ValueError:
        kind = "O"
    else:
        kind = arr.dtype.kind if arr.ndim == 1 else "O"
    if kind in "biuf":  # the values as an array of that dtype holds them (an int in a float column: float)
        converted = _convert_list(arr.tolist())
    elif kind in "OU":  # scikit-learn keeps the objects themselves (object dtype)
        converted = _convert_list(list(values))
    else:
        return None
    column: list[Any] = [None] * n
    for i, value in zip(index, converted):
        column[i] = value
    return column


class ResultColumns:
    """cv_results of one search, folded as the units' results arrive (rank 0).

    Parameters
    ----------
    candidate_params : list of dict
        The candidates' parameters, in candidate order.
    n_splits : int
        Splits per candidate (unit = candidate * n_splits + split).
    models : list of str
        The model name of each candidate (the ``model`` column).
    scoring_names : list of str or None
        The scorers' names (multi-metric) or None (one ``score``).
    return_train_score : bool
        Whether results carry ``train_scores``.
    """

    def __init__(
        self,
        candidate_params: list[dict[str, Any]],
        n_splits: int,
        models: list[str],
        scoring_names: list[str] | None,
        return_train_score: bool,
    ) -> None:
        self.params, self.n_splits, self.models = candidate_params, n_splits, models
        self.multimetric = scoring_names is not None
        self.names = list(scoring_names) if scoring_names is not None else ["score"]
        self.train = return_train_score
        n = len(candidate_params) * n_splits
        self.times = {key: np.full(n, np.nan) for key in ("fit_time", "score_time")}
        # per scorer: the scores and their repr (the split columns' texts, made as the scores arrive)
        self.test = {name: (np.full(n, np.nan), [""] * n) for name in self.names}
        self.train_scores = {name: (np.full(n, np.nan), [""] * n) for name in self.names} if self.train else {}
        self.seen = bytearray(n)
        self.count = 0
        self.params_json: list[str] = []  # the params cells of candidates 0, 1, ... (see _advance)
        self.params_csv: list[str] = []
        self.param_values: dict[str, tuple[list[int], list[Any]]] = {}  # param_* key -> (candidates, values)
        self.failed: str | None = None  # why the fast path cannot be used

    def usable(self) -> bool:
        """Whether every unit arrived exactly once with values the fast path knows."""
        return self.failed is None and self.count == len(self.seen)

    def add(self, unit: int, result: dict[str, Any]) -> None:
        """Fold one unit's result (never raises: an unknown value only turns the fast path off)."""
        if self.failed is not None:
            return
        try:
            self._add(unit, result)
        except Exception as exc:  # noqa: BLE001 - the end of the run takes the full path instead
            self.failed = f"unit {unit}: {type(exc).__name__}: {exc}"

    def _add(self, unit: int, result: dict[str, Any]) -> None:
        if self.seen[unit]:
            raise ValueError("seen twice")
        self.seen[unit] = 1
        self.count += 1
        self.times["fit_time"][unit] = result["fit_time"]
        self.times["score_time"][unit] = result["score_time"]
        self._scores(self.test, result["test_scores"], unit)
        if self.train:
            self._scores(self.train_scores, result["train_scores"], unit)
        self._advance()

    def _scores(self, columns: dict[str, tuple[np.ndarray, list[str]]], scores: Any, unit: int) -> None:
        if not self.multimetric:
            if isinstance(scores, dict):
                raise ValueError("a dict of scores for a single scorer")
            scores = {"score": scores}
        elif type(scores) is not dict or len(scores) != len(columns) or (unit == 0 and list(scores) != self.names):
            raise ValueError(f"scores {scores!r} do not match the scorers {list(columns)}")
        for name, value in scores.items():
            array, texts = columns[name]
            number = value if type(value) is float else _as_float(value)
            array[unit] = number
            texts[unit] = float.__repr__(number)

    def _advance(self) -> None:
        """The ``params`` cells and ``param_*`` values of the next candidates, in candidate order.

        One candidate per ``n_splits`` units added, so that the work is spread evenly over the run.
        """
        while len(self.params_json) < min(len(self.params), -(-self.count // self.n_splits)):
            self._encode_next()

    def _encode_next(self) -> None:
        cand = len(self.params_json)
        params = self.params[cand]
        converted = params if type(params) is dict and _plain_dict(params) else to_json_value(params)
        self.params_json.append(_entry(converted, "  "))
        self.params_csv.append(_csv_cell(converted))
        for name, value in params.items():  # scikit-learn's order: first appearance over the candidates
            index, values = self.param_values.setdefault(f"param_{name}", ([], []))
            index.append(cand)
            values.append(value)

    def finish(self) -> tuple[dict[str, Any], str, str] | None:
        """The numeric cv_results (scikit-learn's keys and values) and the JSON and CSV texts.

        Returns
        -------
        (results, json_text, csv_text) or None
            ``results`` holds ``model``, ``params`` and every numeric column
            (``param_*`` columns are only in the texts).  None when the fast path
            cannot be used (:meth:`usable`, or a ``param_*`` column of a dtype it
            does not know): take the full path.
        """
        params_columns = self._param_columns() if self.usable() else None
        if params_columns is None:
            return None
        results: dict[str, Any] = {"model": list(self.models)}
        texts: dict[str, tuple[list[str], list[str]]] = {"model": _column_texts(_convert_list(list(self.models)))}
        for key in ("fit_time", "score_time"):
            self._store(key, self.times[key], None, results, texts, rank=False)
        texts.update(params_columns)
        texts["params"] = (self.params_json, self.params_csv)
        results["params"] = self.params
        for name in self.names:
            self._store(f"test_{name}", *self.test[name], results, texts, rank=True)
            if self.train:
                self._store(f"train_{name}", *self.train_scores[name], results, texts, rank=False)
        return results, _json_text(texts), _csv_text(texts)

    def _store(
        self, key: str, flat: np.ndarray, reprs: list[str] | None, results: dict, texts: dict, rank: bool
    ) -> None:
        """scikit-learn's ``_format_results._store`` on a folded column, and the texts of what it stores.

        ``reprs`` (the scores' texts): the split columns are stored too, as for scores in scikit-learn.
        """
        n_splits = self.n_splits
        array = flat.reshape(len(self.params), n_splits)
        if reprs is not None:
            for split in range(n_splits):
                results[f"split{split}_{key}"] = array[:, split]
                texts[f"split{split}_{key}"] = _float_texts(array[:, split], reprs[split::n_splits])
        means = np.average(array, axis=1)
        results[f"mean_{key}"] = means
        if key.startswith(("train_", "test_")) and np.any(~np.isfinite(means)):
            warnings.warn(f"One or more of the {key.split('_')[0]} scores are non-finite: {means}", UserWarning)
        stds = np.sqrt(np.average((array - means[:, np.newaxis]) ** 2, axis=1))
        results[f"std_{key}"] = stds
        texts[f"mean_{key}"] = _float_texts(means)
        texts[f"std_{key}"] = _float_texts(stds)
        if rank:
            ranks = rank_of_means(means)
            results[f"rank_{key}"] = ranks
            rank_texts = list(map(int.__repr__, ranks.tolist()))
            texts[f"rank_{key}"] = (rank_texts, rank_texts)

    def _param_columns(self) -> dict[str, tuple[list[str], list[str]]] | None:
        """The ``param_*`` columns' texts, in scikit-learn's order (None: a dtype the fast path does not know)."""
        while len(self.params_json) < len(self.params):
            self._encode_next()
        out = {}
        for key, (index, values) in self.param_values.items():
            column = _param_column(index, values, len(self.params))
            if column is None:
                return None
            out[key] = _column_texts(column)
        return out


def _csv_cell(value: Any) -> str:
    """A converted cv_results value's CSV cell (hpcml.cv.columns.csv_cells, one value)."""
    if isinstance(value, dict | list):
        return csv_field(_sorted_encoder.encode(value))
    return csv_field(value)


def _json_text(texts: dict[str, tuple[list[str], list[str]]]) -> str:
    """``json.dumps(columns, indent=1)`` of the columns, from their entries' texts."""
    parts = [" " + _encode_str(key) + ": [\n  " + ",\n  ".join(j) + "\n ]" for key, (j, _) in texts.items()]
    return "{\n" + ",\n".join(parts) + "\n}"


def _csv_text(texts: dict[str, tuple[list[str], list[str]]]) -> str:
    """The CSV file ``csv.writer`` writes: a header row, then one row per candidate (CRLF line ends)."""
    header = ",".join(csv_field(key) for key in texts)
    rows = map(",".join, zip(*(c for _, c in texts.values())))
    return header + "\r\n" + "\r\n".join(rows) + "\r\n"


__all__ = ["ResultColumns", "csv_field"]

"""The journal's line encoder and one write per batch (hpcml.cv.journal, hpcml.cv.hierarchy.NodeResults; no MPI)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpcml.cv.hierarchy import NodeResults
from hpcml.cv.journal import Journal, _clean, encode_line, read_journal
from hpcml.cv.observer import RunObserver
from hpcml.cv.progress import Progress


def _reference(record, kind=None):
    """The line as the journal wrote it before the fast path: json.dumps of the cleaned record."""
    whole = {"type": kind, **record} if kind is not None else record
    return json.dumps(_clean(whole), separators=(",", ":"), allow_nan=False) + "\n"


RECORDS = [
    {"unit": 0, "test_scores": {"accuracy": 0.1 + 0.2, "f1": 1e-300}, "fit_time": 1.5, "fit_error": None},
    {
        "unit": 1,
        "test_scores": math.nan,
        "train_scores": {"a": math.inf, "b": -math.inf},
        "fit_error": 'Tr\u00e9ce\n"x"',
    },
    {"unit": np.int64(2), "score": np.float64(0.25), "f32": np.float32(0.1), "flag": np.bool_(True)},
    {"unit": 3, "params": {"ngram_range": (1, 2), "alpha": 1e-4, "norm": None, "fit_intercept": False}},
    {"unit": 4, "nested": [{"x": [np.float64(math.nan), 2, "s"]}], "zero": -0.0, "big": 2**70},
    {"unit": 5, "array": np.array(3.5), "keys": {1: "int key", 2.5: "float key"}},
    {"unit": 6, "type": "odd"},
    {},
]


@pytest.mark.parametrize("kind", [None, "unit"])
@pytest.mark.parametrize("record", RECORDS, ids=[f"record{i}" for i in range(len(RECORDS))])
def test_line_equals_the_cleaned_json_dumps_line(record, kind):
    line = encode_line(record, kind)
    assert line == _reference(record, kind)
    assert line.endswith("\n") and "\n" not in line[:-1]


@pytest.mark.parametrize("value", [object(), np.zeros(2), {1, 2}])
def test_a_value_json_cannot_hold_is_refused_as_before(value):
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_line({"unit": 0, "bad": value}, "unit")
    with pytest.raises(TypeError, match="not JSON serializable"):
        _reference({"unit": 0, "bad": value}, "unit")


class _CountingFile:
    """The journal's file, counting the calls that reach it."""

    def __init__(self, fh):
        self.fh, self.writes, self.flushes = fh, 0, 0

    def write(self, text):
        self.writes += 1
        return self.fh.write(text)

    def flush(self):
        self.flushes += 1
        self.fh.flush()

    def __getattr__(self, name):
        return getattr(self.fh, name)


def _observer(folder, n_splits=3):
    folder.mkdir()
    journal = Journal(str(folder), {"config_hash": "c"})
    counting = _CountingFile(journal._fh)
    journal._fh = counting
    params = [{"C": 0.5}, {"C": 5.0}]
    observer = RunObserver(
        journal,
        Progress(len(params) * n_splits, 0, n_splits, "score", enabled=False),
        lambda u: (u // n_splits, u % n_splits, "svc", params[u // n_splits]),
        {},
        lambda finished: None,
        [f"host{r}" for r in range(4)],
        "score",
    )
    return observer, counting


def _result(score):
    return {"test_scores": {"score": score}, "fit_time": 0.5, "score_time": 0.1, "n_test_samples": 7, "fit_error": None}


def test_a_node_message_is_one_write_and_one_flush(tmp_path):
    """NodeResults.many (rank 0, hierarchical): every unit of a node's message in one write + one flush."""
    observer, counting = _observer(tmp_path / "many")
    parts = [(1, [(0, _result(0.5), 1.0)]), (3, [(1, _result(math.nan), 1.1), (2, _result(0.75), 1.2)]), (2, [])]
    NodeResults(observer.on_parts).many(parts)
    assert (counting.writes, counting.flushes) == (1, 1)
    observer.journal.close()
    _, units, count = read_journal(str(tmp_path / "many"))
    assert count == 3 and sorted(units) == [0, 1, 2]
    assert [units[u]["rank"] for u in range(3)] == [1, 3, 3]
    assert [units[u]["host"] for u in range(3)] == ["host1", "host3", "host3"]
    assert [units[u]["split"] for u in range(3)] == [0, 1, 2] and units[2]["params"] == {"C": 0.5}
    assert units[0]["test_scores"] == {"score": 0.5} and math.isnan(units[1]["test_scores"]["score"])
    assert observer.progress.done == 3 and set(observer.finished) == {0, 1, 2}


def test_one_call_per_rank_batch_writes_the_same_records(tmp_path):
    """The same message as per-rank on_results calls (flat dispatch, or a wrapped callback): same records."""
    parts = [(1, [(0, _result(0.5), 1.0)]), (3, [(1, _result(0.25), 1.1), (2, _result(0.75), 1.2)])]
    many, _ = _observer(tmp_path / "many")
    NodeResults(many.on_parts).many(parts)
    single, counting = _observer(tmp_path / "single")
    callback = NodeResults(single.on_parts)
    for rank, items in parts:
        callback(rank, items)
    assert (counting.writes, counting.flushes) == (2, 2)
    for observer in (many, single):
        observer.journal.close()
    a, b = read_journal(str(tmp_path / "many"))[1], read_journal(str(tmp_path / "single"))[1]
    assert {u: {k: v for k, v in r.items() if k != "time"} for u, r in a.items()} == {
        u: {k: v for k, v in r.items() if k != "time"} for u, r in b.items()
    }

"""journal.jsonl: one JSON line per finished unit, so that no finished work is lost.

The first line is a header with the config hash, the data fingerprint and a
hash of the plan (candidates and splits); ``--resume`` refuses a journal whose
header does not match.  A batch of lines is encoded by the C JSON encoder, written with one
``write`` and flushed to the OS before :meth:`Journal.append` returns (a killed
process loses nothing) and fsynced at most every ``fsync_interval`` seconds (a
crashed node loses at most those seconds).  A torn last line is ignored.
Only JSON is ever read back: nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import time
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from hpcml.errors import ConfigError

JOURNAL = "journal.jsonl"
FORMAT = 2  # 2: the header's data fingerprint covers every byte (hpcml.data.fingerprint)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None (floats round-trip exactly otherwise)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: ``json.dumps(..., separators=(",", ":"), allow_nan=False)`` without its per-call set-up
#: (``json.dumps`` with options builds a new encoder for every line): the C encoder, made once.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_C_ENCODE = (
    c_make_encoder(None, _refuse, encode_basestring_ascii, None, ":", ",", False, False, False)
    if c_make_encoder is not None
    else None
)


def _encode(record: dict[str, Any]) -> str:
    return "".join(_C_ENCODE(record, 0)) if _C_ENCODE is not None else _ENCODER.encode(record)


def encode_line(record: dict[str, Any], kind: str | None = None) -> str:
    """One journal line: ``record`` as compact JSON (``{"type": kind, **record}`` when ``kind``), newline-terminated.

    The C encoder takes the record as it is when it holds only JSON values;
    only a record it refuses (NaN or inf, NumPy integers, ...) goes through
    :func:`_clean` first, so the line is the same either way.
    """
    if kind is not None and "type" in record:
        record, kind = {"type": kind, **record}, None
    try:
        text = _encode(record)
    except (TypeError, ValueError, RecursionError):
        text = _ENCODER.encode(_clean(record))
    if kind is not None:
        text = f'{{"type":"{kind}"' + ("," + text[1:] if text != "{}" else "}")
    return text + "\n"


def _nan(value: Any) -> Any:
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    return value


class Journal:
    """Append-only unit journal (rank 0 only).

    Parameters
    ----------
    folder : str
        Output folder; the journal is ``folder/journal.jsonl``.
    header : dict
        Identity of the search (written when the journal is new).
    fsync_interval : float
        Longest time between fsyncs, in seconds.
    """

    def __init__(self, folder: str, header: dict[str, Any], fsync_interval: float = 2.0) -> None:
        self.path = os.path.join(folder, JOURNAL)
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.fsync_interval = fsync_interval
        self._last_sync = time.monotonic()
        if new:
            self._write({"type": "header", "format": FORMAT, **header})
        else:
            self._repair_tail()
            self._write({"type": "resume", "time": time.time()})
        self.sync()

    def _repair_tail(self) -> None:
        # A kill may leave a torn last line; start the next record on a fresh line.
        with open(self.path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(self.path) - 1))
            last = fh.read(1)
        if last and last != b"\n":
            self._fh.write("\n")

    def _write(self, record: dict[str, Any]) -> None:
        self._fh.write(encode_line(record))

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write finished units and hand them to the OS; fsync when the interval has passed.

        The batch is one ``write`` and one flush, whatever its length.
        """
        self._fh.write("".join([encode_line(record, "unit") for record in records]))
        self._fh.flush()
        if time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def note(self, records: list[dict[str, Any]]) -> None:
        """Write records of another ``type`` than units (e.g. ASHA decisions) and hand them to the OS."""
        self._fh.write("".join([encode_line(record) for record in records]))
        self._fh.flush()

    def sync(self) -> None:
        """Flush and fsync (nothing once closed)."""
        if self._fh.closed:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """Sync and close."""
        if not self._fh.closed:
            self.sync()
            self._fh.close()


def read_journal(folder: str) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]], int]:
    """Read a journal: (header, unit -> record, number of unit lines).

    Later lines for the same unit win (a unit is never run twice by hpcml, but a
    journal edited by hand may repeat one).  NaN scores come back as NaN.
    """
    path = os.path.join(folder, JOURNAL)
    header = None
    units: dict[int, dict[str, Any]] = {}
    count = 0
    if not os.path.exists(path):
        return None, units, 0
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A line torn by a kill is the last one, or the one before the
            # "resume" record the next run appended; anything else is damage.
            following = next((ln for ln in lines[number:] if ln.strip()), "")
            if not following or following.startswith('{"type":"resume"'):
                continue
            raise ConfigError(f"{path}:{number}: corrupt journal line") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{number}: not a journal record (a JSON {type(record).__name__})")
        kind = record.get("type")
        if kind == "header" and header is None:
            header = record
        elif kind == "unit":
            _check_unit(record, path, number)
            count += 1
            for key in ("test_scores", "train_scores"):
                if key in record:
                    record[key] = _nan(record[key])
            units[int(record["unit"])] = record
    return header, units, count


#: Keys every unit record must hold to be reused by ``--resume``.
UNIT_KEYS = ("unit", "test_scores", "fit_time", "score_time", "n_test_samples", "fit_error")


def _check_unit(record: dict[str, Any], path: str, number: int) -> None:
    missing = [key for key in UNIT_KEYS if key not in record]
    if missing:
        raise ConfigError(f"{path}:{number}: unit record without {', '.join(missing)}")
    unit = record["unit"]
    if not isinstance(unit, int) or isinstance(unit, bool) or unit < 0:
        raise ConfigError(f"{path}:{number}: unit record with an invalid unit number {unit!r}")


def check_header(header: dict[str, Any] | None, expected: dict[str, Any], path: str) -> None:
    """Refuse to resume a journal written by another search (config, data or plan changed).

    The message says what changed; for the data, which role (X, y, groups,
    sample_weight) and whether its shape, dtype or only its values differ.
    """
    if header is None:
        raise ConfigError(f"{path}: journal has no header; cannot resume from it")
    tail = " since this journal was written (use --overwrite to start over)"
    if header.get("config_hash") != expected.get("config_hash"):
        raise ConfigError(f"{path}: cannot resume: the config file changed{tail}")
    if header.get("data_fingerprint") != expected.get("data_fingerprint"):
        if "data" not in header:
            what = "the journal predates full-data fingerprints (format 1); its data cannot be verified"
        else:
            from hpcml.data.fingerprint import what_changed

            what = f"the data changed ({what_changed(header['data'], expected.get('data') or {})})"
        raise ConfigError(f"{path}: cannot resume: {what}{tail}")
    if header.get("plan_hash") != expected.get("plan_hash"):
        raise ConfigError(
            f"{path}: cannot resume: the candidates or splits changed (seed the splitter/sampler with "
            f"random_state to resume){tail}"
        )

"""Strict TOML config reading shared by ``hpcml.cv`` and ``hpcml.sgd``.

Errors are :class:`hpcml.errors.ConfigError` whose one-line message names the
file and the key (``search.toml: [cv] n_splits: expected an integer, got 'five'``),
or the line and column of a TOML syntax error.  Objects named in a config
(estimators, splitters) are imported from their dotted import path only; nothing
is ever evaluated.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from hpcml.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_MISSING = object()


def read_config_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a config file, turning OS errors into one-line :class:`ConfigError`."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def parse_toml(data: bytes, source: str) -> dict[str, Any]:
    """Parse TOML text; syntax errors name the file, line and column."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None


def config_hash(data: bytes) -> str:
    """SHA-256 of the config file's bytes (recorded in journals and reports)."""
    return hashlib.sha256(data).hexdigest()


class Table:
    """Typed, strict access to one TOML table.

    Every key read is remembered; :meth:`finish` raises on any key that was not
    read, naming it (so misspelt keys never pass silently).

    Parameters
    ----------
    data : dict
        The parsed table.
    where : str
        How to name it in messages, e.g. ``"search.toml: [cv]"``.
    """

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table, got {_tname(data)}")
        self.data = data
        self.where = where
        self._seen: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def error(self, key: str | None, message: str) -> ConfigError:
        """A :class:`ConfigError` located at ``key`` of this table."""
        at = f"{self.where} {key}" if key else self.where
        return ConfigError(f"{at}: {message}")

    def get(self, key: str, types: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        """Value of ``key`` checked against ``types`` (``default`` if absent, else required)."""
        self._seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, "required key is missing")
            return default
        value = self.data[key]
        types_t = types if isinstance(types, tuple) else (types,)
        if float in types_t and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if bool not in types_t and isinstance(value, bool):
            raise self.error(key, f"expected {_names(types_t)}, got a boolean")
        if not isinstance(value, types_t):
            raise self.error(key, f"expected {_names(types_t)}, got {_tname(value)} {value!r}")
        return value

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """Value of ``key`` without a type check."""
        self._seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, "required key is missing")
            return default
        return self.data[key]

    def sub(self, key: str, required: bool = False) -> Table | None:
        """A nested table (``None`` when absent and not required)."""
        self._seen.add(key)
        if key not in self.data:
            if required:
                raise self.error(None, f"required table [{key}] is missing")
            return None
        return Table(
            self.data[key], f"{self.where.rstrip(']')}.{key}]" if "[" in self.where else f"{self.where} [{key}]"
        )

    def rest(self) -> dict[str, Any]:
        """All keys not read yet (marks them read): for pass-through keyword arguments."""
        out = {k: v for k, v in self.data.items() if k not in self._seen}
        self._seen.update(out)
        return out

    def finish(self, allowed_hint: Iterable[str] | None = None) -> None:
        """Raise on the first key that was never read."""
        unknown = [k for k in self.data if k not in self._seen]
        if unknown:
            hint = ""
            if allowed_hint:
                hint = f" (known keys: {', '.join(sorted(allowed_hint))})"
            raise self.error(None, f"unknown key '{unknown[0]}'{hint}")


def import_object(path: str, what: str, where: str) -> Any:
    """Import ``package.module.Name`` from its dotted path; no evaluation of any kind.

    Parameters
    ----------
    path : str
        Dotted import path, e.g. ``"sklearn.svm.SVC"``.
    what : str
        What the object is, for messages (``"estimator"``).
    where : str
        Location for messages (``"search.toml: [[model]] svc estimator"``).
    """
    if not isinstance(path, str) or not path or any(not part.isidentifier() for part in path.split(".")):
        raise ConfigError(f"{where}: '{path}' is not a dotted import path of an {what}")
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigError(f"{where}: unknown {what} '{path}' (give the full import path, e.g. sklearn.svm.SVC)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: unknown {what} '{path}' (cannot import {module_name}: {exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{where}: unknown {what} '{path}' ({module_name} has no '{attr}')") from None


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "an array",
    dict: "a table",
}


def _names(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def _tname(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)

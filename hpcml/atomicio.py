"""One atomic writer for every tool: a temporary file in the target's folder, then ``os.replace``.

A kill never leaves a half-written file and an existing file is replaced only
once its successor is complete.  Files get the mode an ordinary ``open()``
would give them (``0o666`` less the process umask), not ``mkstemp``'s ``0600``:
colleagues sharing a cluster project can read results if the umask lets them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

#: Mode of a new file before the umask, as ``open()`` uses.
FILE_MODE = 0o666


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``).

    Returns
    -------
    int
        The umask bits (e.g. ``0o022``).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # other systems: the only portable read is a set-and-restore
    os.umask(mask)
    return mask


def _temp_name(path: str) -> tuple[int, str]:
    folder = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    return tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)


@contextlib.contextmanager
def atomic_path(path: str, mode: int = FILE_MODE) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success move it to ``path`` with ``mode`` less the umask.

    The caller writes the temporary file by name (h5py, joblib, ...).  On any
    exception the temporary file is removed and ``path`` is left untouched.

    Parameters
    ----------
    path : str
        Final file name.
    mode : int
        Permission bits before the umask (default ``0o666``).

    Yields
    ------
    str
        The temporary file's path (it exists, empty).
    """
    fd, tmp = _temp_name(path)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str, data: bytes | str, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` atomically (fsynced), with ``mode`` less the umask.

    Parameters
    ----------
    path : str
        Final file name.
    data : bytes or str
        Content (``str`` is written as UTF-8).
    mode : int
        Permission bits before the umask (default ``0o666``).
    """
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())

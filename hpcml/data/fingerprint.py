"""Data fingerprints that catch any change: SHA-256 over every byte, hashed by all ranks together.

``--resume`` must never mix results computed on different data, so the journal
records, for each role (X, y, groups, sample_weight), its shape, dtype, storage
format and a SHA-256 over all its bytes.  The bytes are cut into fixed blocks
of :data:`BLOCK_BYTES` (independent of the number of ranks), rank ``r`` hashes
blocks ``r, r + size, ...`` of its own copy of the loaded arrays, and the block
digests are combined in block order: the fingerprint is the same at any rank
count and costs ``bytes / (size * SHA-256 speed)``.  A sparse matrix is hashed as
its ``data``, ``indices`` and ``indptr`` arrays; text X (an object array of strings)
as its documents' UTF-8 bytes and their lengths.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

#: Bytes per hashed block.
BLOCK_BYTES = 16 << 20


def _streams(array: Any) -> list[tuple[str, np.ndarray]]:
    """The byte streams of an array: ``values`` (dense) or ``data``/``indices``/``indptr`` (sparse)."""
    if sp.issparse(array):
        csr = array.tocsr()
        return [(name, _bytes_of(getattr(csr, name))) for name in ("data", "indices", "indptr")]
    array = np.asarray(array)
    if array.dtype.hasobject:  # text X: each document's UTF-8 bytes, with the lengths that delimit them
        encoded = [str(v).encode("utf-8", "surrogatepass") for v in array.reshape(-1)]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        return [("lengths", lengths.view(np.uint8)), ("text", np.frombuffer(b"".join(encoded), dtype=np.uint8))]
    return [("values", _bytes_of(array))]


def _bytes_of(array: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype.hasobject:
        raise TypeError(f"cannot fingerprint an object array (dtype {flat.dtype})")
    return flat.view(np.uint8)


def describe(array: Any) -> dict[str, Any]:
    """Shape, dtype and storage format of an array (dense or sparse)."""
    kind = "csr" if sp.issparse(array) else "dense"
    dtype = array.dtype if sp.issparse(array) else np.asarray(array).dtype
    return {"format": kind, "shape": [int(n) for n in array.shape], "dtype": str(dtype)}


def fingerprints(arrays: dict[str, Any], comm: MPI.Intracomm) -> dict[str, dict[str, Any]]:
    """Per role, ``describe(array)`` plus ``sha256`` over all its bytes.  Collective over ``comm``.

    Parameters
    ----------
    arrays : dict
        Role -> array (dense or scipy sparse) or ``None`` (skipped); every rank
        holds the same arrays.
    comm : mpi4py.MPI.Intracomm
        Ranks that share the hashing.

    Returns
    -------
    dict
        ``{role: {"format", "shape", "dtype", "sha256"}}`` on every rank.
    """
    roles = sorted(role for role, array in arrays.items() if array is not None)
    tasks: list[tuple[str, str, np.ndarray, int]] = []
    for role in roles:
        for name, stream in _streams(arrays[role]):
            tasks.extend((role, name, stream, start) for start in range(0, max(1, stream.size), BLOCK_BYTES))
    rank, size = comm.Get_rank(), comm.Get_size()
    mine = {
        i: hashlib.sha256(tasks[i][2][tasks[i][3] : tasks[i][3] + BLOCK_BYTES]).digest()
        for i in range(rank, len(tasks), size)
    }
    digests: dict[int, bytes] = {}
    for part in comm.allgather(mine):
        digests.update(part)
    result = {}
    for role in roles:
        info = describe(arrays[role])
        h = hashlib.sha256(repr(sorted(info.items())).encode())
        for i, (task_role, name, _, start) in enumerate(tasks):
            if task_role == role:
                h.update(f"{name}@{start}:".encode() + digests[i])
        result[role] = {**info, "sha256": h.hexdigest()}
    return result


def combined(prints: dict[str, dict[str, Any]]) -> str:
    """One hex digest of all roles' fingerprints (for a single comparison)."""
    return hashlib.sha256(repr(sorted((r, sorted(v.items())) for r, v in prints.items())).encode()).hexdigest()


def what_changed(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> str:
    """A short phrase naming what differs between two :func:`fingerprints` results.

    Examples: ``"X values"``, ``"y shape [100] -> [120]"``, ``"groups added"``.
    """
    parts = []
    for role in sorted(set(old) | set(new)):
        a, b = old.get(role), new.get(role)
        if a is None or b is None:
            parts.append(f"{role} {'added' if a is None else 'removed'}")
            continue
        for key in ("format", "shape", "dtype"):
            if a.get(key) != b.get(key):
                parts.append(f"{role} {key} {a.get(key)} -> {b.get(key)}")
                break
        else:
            if a.get("sha256") != b.get("sha256"):
                parts.append(f"{role} values (same shape and dtype)")
    return ", ".join(parts) or "nothing visible"

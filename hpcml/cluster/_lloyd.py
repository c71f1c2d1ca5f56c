"""Distributed Lloyd iterations: chunked BLAS assignment and one fused ``Allreduce`` per iteration.

The loop reproduces scikit-learn's ``_kmeans_single_lloyd`` step for step
(labels by the first nearest centre from ``||c||^2 - 2 x.c``, the strict
convergence test on unchanged labels, the centre-shift test against the
variance-scaled tolerance, empty clusters relocated to the points farthest from
their centres, a final E-step when not strictly converged, and the inertia of
the final labels) with every sum taken over all ranks.  The buffer reduced
each iteration holds, back to back, the weighted centre sums (``k * d``), the
cluster weights (``k``), the weighted inertia of the old centres and the
number of labels that changed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from hpcml.cluster._shard import allsum

#: Bytes of the per-chunk distance block (rows x clusters) of the assignment step.
CHUNK_BYTES = 1 << 21


def chunk_rows(n_columns: int) -> int:
    """Rows per chunk: about :data:`CHUNK_BYTES` of a ``rows x n_columns`` float64 block, at least 256.

    256 rows is scikit-learn's chunk.  Used with the number of clusters (the
    distance block) and with the number of features (row differences).
    """
    return max(256, CHUNK_BYTES // (8 * max(1, n_columns)))


class FusedBuffer:
    """The preallocated float64 buffer reduced once per Lloyd iteration.

    Parameters
    ----------
    n_clusters, n_features : int

    Attributes
    ----------
    sums : ndarray (k, d)
        Weighted sums of the rows of each cluster.
    weights : ndarray (k,)
        Weight of each cluster.
    extra : ndarray (2,)
        ``[inertia of the old centres, labels changed]``.
    """

    def __init__(self, n_clusters: int, n_features: int) -> None:
        kd = n_clusters * n_features
        self.buf = np.zeros(kd + n_clusters + 2, dtype=np.float64)
        self.sums = self.buf[:kd].reshape(n_clusters, n_features)
        self.weights = self.buf[kd : kd + n_clusters]
        self.extra = self.buf[kd + n_clusters :]


def dense_rows(X: Any, lo: int, hi: int) -> np.ndarray:
    """Rows ``[lo, hi)`` of dense or CSR ``X`` as a dense array (a view for dense X)."""
    return X[lo:hi].toarray() if sp.issparse(X) else X[lo:hi]


def row_sq_norms(X: Any) -> np.ndarray:
    """Squared norms of the rows of dense or CSR ``X``, in X's dtype."""
    if sp.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1), dtype=X.dtype).ravel()
    return np.einsum("ij,ij->i", X, X)


def assign(
    X: np.ndarray,
    w: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    fused: FusedBuffer | None,
) -> None:
    """E-step (and the local part of the M-step) over this rank's rows.  No communication.

    Writes the nearest centre of every row into ``labels``; with ``fused``, also
    accumulates the weighted sums, weights, inertia and the count of changed
    labels into it (``fused`` is zeroed first).

    Parameters
    ----------
    X : ndarray (n_local, d), float32 or float64, C-contiguous, or a CSR matrix
    w : ndarray (n_local,) of X's dtype
    centers : ndarray (k, d) of X's dtype
    labels : ndarray (n_local,) of int32, updated in place
    fused : FusedBuffer or None
    """
    n, k = X.shape[0], centers.shape[0]
    sparse = sp.issparse(X)
    step = chunk_rows(k)
    cnorm = np.einsum("ij,ij->i", centers, centers)
    dist = np.empty((min(step, max(n, 1)), k), dtype=X.dtype)
    if fused is not None:
        fused.buf[:] = 0.0
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        Xc, D = X[lo:hi], dist[: hi - lo]
        if sparse:
            D[...] = Xc @ centers.T
        else:
            np.matmul(Xc, centers.T, out=D)
        D *= -2.0
        D += cnorm
        lab = D.argmin(axis=1).astype(np.int32)
        if fused is not None:
            wc = w[lo:hi]
            mind = np.take_along_axis(D, lab[:, None].astype(np.intp), axis=1)[:, 0]
            xnorm = row_sq_norms(Xc)
            fused.extra[0] += float(np.dot(wc.astype(np.float64), (mind + xnorm).astype(np.float64)))
            fused.extra[1] += float(np.count_nonzero(lab != labels[lo:hi]))
            onehot = sp.csr_matrix((wc.astype(np.float64), lab, np.arange(hi - lo + 1)), shape=(hi - lo, k))
            fused.sums += (onehot.T @ Xc).toarray() if sparse else onehot.T @ Xc
            fused.weights += np.bincount(lab, weights=wc, minlength=k)
        labels[lo:hi] = lab


def distances_to_own_centre(X: Any, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance of every row to its centre, in X's dtype, as scikit-learn's relocation computes it.

    Dense: ``((X - centers[labels]) ** 2).sum(axis=1)`` chunk by chunk; CSR:
    ``||c||^2 + sum over the non-zeros of ((x - c)^2 - c^2)``, clipped at 0.
    """
    n = X.shape[0]
    if sp.issparse(X):
        rows = np.repeat(np.arange(n), np.diff(X.indptr))
        c = centers[labels[rows], X.indices]
        t = (X.data - c) ** 2 - c * c
        cnorm = np.einsum("ij,ij->i", centers, centers)
        dist = np.bincount(rows, weights=t, minlength=n) + cnorm[labels]
        return np.maximum(dist, 0).astype(X.dtype)
    dist = np.empty(n, dtype=X.dtype)
    step = chunk_rows(X.shape[1])
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        dist[lo:hi] = ((X[lo:hi] - centers[labels[lo:hi]]) ** 2).sum(axis=1)
    return dist


def relocate_empty(
    comm: Any,
    X: Any,
    w: np.ndarray,
    centers_old: np.ndarray,
    labels: np.ndarray,
    fused: FusedBuffer,
    start: int,
    whole: bool = False,
) -> None:
    """scikit-learn's ``_relocate_empty_clusters_dense`` / ``_sparse`` over all ranks.  Collective.

    Each empty cluster takes the row farthest from its centre (globally), the
    donor cluster loses it.  With ``whole`` (the whole data was given to every
    rank) the distances of all rows are gathered and the rows picked with
    scikit-learn's own ``argpartition``, so ties and the pairing of several
    empty clusters with the farthest rows are scikit-learn's.  Otherwise (rows
    sharded) each rank offers its farthest rows (one ``allgather``) and ties
    follow descending distance, then ascending global row (see docs/kmeans.md).
    """
    empty = np.flatnonzero(fused.weights == 0)
    m = empty.shape[0]
    if m == 0:
        return
    dist = distances_to_own_centre(X, centers_old, labels)
    if whole:
        alld = np.concatenate(comm.allgather(dist)) if comm.Get_size() > 1 else dist
        if alld.max() == 0:
            return  # more clusters than distinct points: relocating is pointless (scikit-learn)
        far = np.argpartition(alld, -m)[: -m - 1 : -1]
        mine = [int(g) - start for g in far if start <= g < start + X.shape[0]]
    else:
        mine = np.argsort(-dist, kind="stable")[:m].tolist() if X.shape[0] else []
    local = [
        (float(dist[i]), start + i, dense_rows(X, i, i + 1)[0].astype(np.float64), float(w[i]), int(labels[i]))
        for i in mine
    ]
    everyone = {c[1]: c for part in comm.allgather(local) for c in part}
    if whole:
        chosen = [everyone[int(g)] for g in far]
    else:
        if not everyone or max(c[0] for c in everyone.values()) == 0:
            return  # more clusters than distinct points: relocating is pointless (scikit-learn)
        chosen = sorted(everyone.values(), key=lambda c: (-c[0], c[1]))[:m]
    for new_id, (_, _, row, weight, old_id) in zip(empty, chosen):
        fused.sums[old_id] -= row * weight
        fused.sums[new_id] = row * weight
        fused.weights[new_id] = weight
        fused.weights[old_id] -= weight


def average(fused: FusedBuffer, out: np.ndarray) -> None:
    """scikit-learn's ``_average_centers``: ``sums * (1 / weights)``; an empty cluster copies the heaviest one.

    As in scikit-learn's loop, an empty cluster numbered below the heaviest one
    copies its still unscaled sums, one numbered above it the scaled centre.
    """
    heavy = int(np.argmax(fused.weights))
    full = fused.weights > 0
    out[full] = fused.sums[full] * (1.0 / fused.weights[full])[:, None]
    for j in np.flatnonzero(~full):
        out[j] = fused.sums[heavy] if j < heavy or not full[heavy] else out[heavy]


def lloyd(
    comm: Any,
    X: np.ndarray,
    w: np.ndarray,
    centers_init: np.ndarray,
    max_iter: int,
    tol: float,
    start: int,
    verbose: bool = False,
    whole: bool = False,
) -> tuple[np.ndarray, float, np.ndarray, int, dict[str, Any]]:
    """One k-means run from ``centers_init``.  Collective.

    ``whole``: every rank was given the whole data (empty clusters are then
    relocated exactly as scikit-learn does, see :func:`relocate_empty`).

    Returns
    -------
    labels : ndarray of int32 (this rank's rows)
    inertia : float
    centers : ndarray (k, d)
    n_iter : int
    timing : dict
        ``iter_s`` (seconds per iteration), ``comm_s`` (in the fused reduction).
    """
    k, d = centers_init.shape
    centers = np.array(centers_init, dtype=X.dtype, order="C")
    centers_new = np.empty_like(centers)
    labels = np.full(X.shape[0], -1, dtype=np.int32)
    fused = FusedBuffer(k, d)
    timing: dict[str, Any] = {"iter_s": [], "comm_s": 0.0}
    strict = False
    for i in range(max_iter):
        t0 = time.perf_counter()
        assign(X, w, centers, labels, fused)
        t1 = time.perf_counter()
        allsum(comm, fused.buf)
        timing["comm_s"] += time.perf_counter() - t1
        relocate_empty(comm, X, w, centers, labels, fused, start, whole)
        average(fused, centers_new)
        shift = np.sqrt(((centers_new.astype(np.float64) - centers) ** 2).sum(axis=1))
        if verbose:
            print(f"Iteration {i}, inertia {fused.extra[0]}.")
        centers, centers_new = centers_new, centers
        timing["iter_s"].append(time.perf_counter() - t0)
        if fused.extra[1] == 0:
            strict = True
            if verbose:
                print(f"Converged at iteration {i}: strict convergence.")
            break
        shift_tot = float((shift**2).sum())
        if shift_tot <= tol:
            if verbose:
                print(f"Converged at iteration {i}: center shift {shift_tot} within tolerance {tol}.")
            break
    if not strict:
        assign(X, w, centers, labels, None)
    inertia = final_inertia(comm, X, w, centers, labels)
    return labels, inertia, centers, i + 1, timing


def final_inertia(comm: Any, X: np.ndarray, w: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> float:
    """Weighted sum of squared distances of the rows to their centres, over all ranks (exact, not expanded)."""
    total = np.zeros(1, dtype=np.float64)
    n = X.shape[0]
    step = chunk_rows(X.shape[1])
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        diff = dense_rows(X, lo, hi) - centers[labels[lo:hi]]
        total[0] += float(np.dot(w[lo:hi].astype(np.float64), np.einsum("ij,ij->i", diff, diff)))
    return float(allsum(comm, total)[0])

"""Distributed initialisations: k-means++ and "random" (scikit-learn's draws), and k-means||.

k-means++ and "random" draw their random numbers from the same
``RandomState`` as scikit-learn, in the same order, on every rank; the
cumulative sums scikit-learn searches are replaced by rank-local cumulative
sums plus the mass of the lower ranks (:func:`hpcml.cluster._shard.search_rows`),
so the same rows are picked at any rank count (up to a draw that falls within
rounding of a boundary between two rows: see docs/kmeans.md).

k-means|| (Bahmani et al. 2012) samples about ``oversampling_factor *
n_clusters`` candidates per round, each row independently with probability
``l * w * d^2 / phi``; the uniform numbers come from per-block streams
``SeedSequence(seed, spawn_key=(round, block))`` of fixed 65536-row blocks, so
the candidates do not depend on the rank count.  The candidates are then
weighted by the weight of the rows nearest to them and re-clustered with
scikit-learn's weighted k-means++ / Lloyd on rank 0.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp

from hpcml._compat import euclidean_distances_sq
from hpcml.cluster._lloyd import chunk_rows
from hpcml.cluster._shard import allsum, fetch_rows, search_rows

#: Rows per random stream of k-means|| (the unit that makes the draws rank-count invariant).
BLOCK_ROWS = 65536
#: Lloyd iterations of the weighted re-clustering of the candidates (Spark MLlib's LocalKMeans uses 30):
#: the Lloyd iterations on the whole data that follow refine the centres anyway.
RECLUSTER_MAX_ITER = 30


def kmeans_plusplus(
    comm: Any, X: np.ndarray, xsq: np.ndarray, w: np.ndarray, k: int, rs: np.random.RandomState, start: int, n: int
) -> np.ndarray:
    """scikit-learn's ``_kmeans_plusplus`` (greedy, ``2 + log(k)`` trials) over all ranks.  Collective.

    Parameters
    ----------
    X, xsq, w : this rank's rows, their squared norms and weights
    k : int
    rs : RandomState, in the same state on every rank
    start, n : this rank's first global row, the global number of rows
    """
    trials = 2 + int(np.log(k))
    centers = np.empty((k, X.shape[1]), dtype=X.dtype)
    wsum = allsum(comm, np.array([w.sum(dtype=np.float64)]))[0]
    u = rs.random_sample()  # RandomState.choice(n, p=w/w.sum()) draws exactly this one number
    first = search_rows(comm, np.cumsum(w, dtype=np.float64), np.array([u * wsum]), start, n, "right")
    centers[0] = fetch_rows(comm, X, first, start)[0]
    closest = euclidean_distances_sq(centers[:1], X, xsq)[0]
    pot = allsum(comm, np.array([float(closest @ w)]))[0]
    for c in range(1, k):
        rand_vals = rs.uniform(size=trials) * pot
        cum = np.cumsum(w * closest, dtype=np.float64)
        ids = search_rows(comm, cum, rand_vals, start, n, "left")
        cand = fetch_rows(comm, X, ids, start)
        dist = euclidean_distances_sq(cand, X, xsq)
        np.minimum(closest, dist, out=dist)
        pots = allsum(comm, (dist @ w.reshape(-1, 1)).astype(np.float64).ravel())
        best = int(np.argmin(pots))
        pot = pots[best]
        closest = dist[best]
        centers[c] = cand[best]
    return centers


def random_rows(
    comm: Any, X: np.ndarray, w: np.ndarray, k: int, rs: np.random.RandomState, start: int, n: int
) -> np.ndarray:
    """``X[rs.choice(n, size=k, replace=False, p=w / w.sum())]`` over all ranks.  Collective.

    Follows NumPy's legacy ``choice`` without replacement: draw the missing
    number of uniforms, zero the weights of the rows found, search, keep the new
    distinct rows in draw order, repeat.
    """
    nonzero = allsum(comm, np.array([np.count_nonzero(w > 0)], dtype=np.int64))[0]
    if nonzero < k:
        raise ValueError("Fewer non-zero entries in p than size")
    p = w.astype(np.float64, copy=True)
    found = np.zeros(0, dtype=np.int64)
    while found.size < k:
        x = rs.rand(k - found.size)
        mine = found[(found >= start) & (found < start + X.shape[0])] - start
        p[mine] = 0.0
        cum = np.cumsum(p)
        total = allsum(comm, np.array([cum[-1] if cum.size else 0.0]))[0]
        new = search_rows(comm, cum, x * total, start, n, "right")
        _, first = np.unique(new, return_index=True)
        new = new[np.sort(first)]
        new = new[~np.isin(new, found)]
        found = np.concatenate([found, new])
    return fetch_rows(comm, X, found, start)


def _block_uniforms(seed: int, rnd: int, start: int, stop: int) -> np.ndarray:
    """Uniforms of global rows ``[start, stop)`` for round ``rnd``: a function of the row, not of the rank."""
    out = np.empty(stop - start, dtype=np.float64)
    b = start // BLOCK_ROWS
    while b * BLOCK_ROWS < stop:
        lo, hi = max(start, b * BLOCK_ROWS), min(stop, (b + 1) * BLOCK_ROWS)
        u = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(rnd, b))).random(BLOCK_ROWS)
        out[lo - start : hi - start] = u[lo - b * BLOCK_ROWS : hi - b * BLOCK_ROWS]
        b += 1
    return out


def _update_nearest(
    X: np.ndarray, xsq: np.ndarray, cand: np.ndarray, base: int, d2: np.ndarray, near: np.ndarray
) -> None:
    """Lower ``d2`` (squared distance to the nearest candidate) and ``near`` with the new candidates ``cand``.

    One chunked GEMM ``X @ cand.T`` with the candidates' norms added, the row
    norms only after the minimum (the same expansion as the Lloyd assignment).
    """
    n = X.shape[0]
    step = chunk_rows(cand.shape[0])
    csq = np.einsum("ij,ij->i", cand, cand)
    buf = np.empty((min(step, max(n, 1)), cand.shape[0]), dtype=X.dtype)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        D = buf[: hi - lo]
        if sp.issparse(X):
            D[...] = X[lo:hi] @ cand.T
        else:
            np.matmul(X[lo:hi], cand.T, out=D)
        D *= -2.0
        D += csq
        j = D.argmin(axis=1)
        m = np.maximum(D[np.arange(hi - lo), j] + xsq[lo:hi], 0.0)
        better = m < d2[lo:hi]
        d2[lo:hi][better] = m[better]
        near[lo:hi][better] = base + j[better]


def kmeans_parallel(
    comm: Any,
    X: np.ndarray,
    xsq: np.ndarray,
    w: np.ndarray,
    k: int,
    rs: np.random.RandomState,
    start: int,
    n: int,
    oversampling_factor: float,
    rounds: int,
) -> tuple[np.ndarray, dict[str, Any]]:
    """k-means|| with weighted re-clustering of the candidates.  Collective.

    Returns
    -------
    centers : ndarray (k, d)
    info : dict
        ``candidates`` (how many), ``rounds`` (run).
    """
    seed = int(rs.randint(np.iinfo(np.int32).max))
    wsum = allsum(comm, np.array([w.sum(dtype=np.float64)]))[0]
    u = rs.random_sample()
    first = search_rows(comm, np.cumsum(w, dtype=np.float64), np.array([u * wsum]), start, n, "right")
    cands = [fetch_rows(comm, X, first, start)]
    d2 = np.full(X.shape[0], np.inf)
    near = np.zeros(X.shape[0], dtype=np.int64)
    _update_nearest(X, xsq, cands[0], 0, d2, near)
    ell = oversampling_factor * k
    n_cand, r = 1, 0
    while r < rounds or (n_cand < k and r < rounds + 50):
        phi = allsum(comm, np.array([float(np.dot(w, d2))]))[0]
        if phi <= 0:
            break  # every row sits on a candidate
        pick = np.flatnonzero(_block_uniforms(seed, r + 1, start, start + X.shape[0]) < ell * w * d2 / phi)
        r += 1
        picked = X[pick].toarray() if sp.issparse(X) else X[pick]
        new = [row for part in comm.allgather(picked) for row in part] if comm.Get_size() > 1 else list(picked)
        if not new:
            continue
        block = np.asarray(new, dtype=X.dtype).reshape(len(new), X.shape[1])
        _update_nearest(X, xsq, block, n_cand, d2, near)
        cands.append(block)
        n_cand += block.shape[0]
    C = np.concatenate(cands)
    weights = allsum(comm, np.bincount(near, weights=w, minlength=n_cand).astype(np.float64))
    return recluster(comm, C, weights, k, seed), {"candidates": int(n_cand), "rounds": r}


def recluster(comm: Any, C: np.ndarray, weights: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Weighted k-means (scikit-learn's k-means++, then at most 30 Lloyd iterations) of the candidates on rank 0.

    The centres are broadcast to every rank.
    """
    from sklearn.cluster import KMeans as SKKMeans

    centers = None
    if comm.Get_rank() == 0:
        keep = weights > 0
        Ck, wk = C[keep], weights[keep]
        if Ck.shape[0] <= k:  # too few distinct candidates: take them all, pad with the heaviest
            order = np.argsort(-wk, kind="stable")
            centers = np.concatenate([Ck, np.repeat(Ck[order[:1]], k - Ck.shape[0], axis=0)])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                km = SKKMeans(
                    k, init="k-means++", n_init=1, max_iter=RECLUSTER_MAX_ITER, random_state=seed, algorithm="lloyd"
                )
                centers = km.fit(Ck, sample_weight=wk.astype(Ck.dtype)).cluster_centers_
        centers = np.ascontiguousarray(centers, dtype=C.dtype)
    return comm.bcast(centers, root=0)

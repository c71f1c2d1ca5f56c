"""Which rows each rank uses at each step: shards, validation split and batch plans.

Rows are numbered globally ``0 .. n-1``; rank ``r`` of ``N`` holds the
contiguous shard ``[start, stop)`` of :func:`shard_range`.

``sampling="global"`` (rank-count invariant)
    Each epoch every rank draws the same permutation of all training-row
    indices from ``(random_state, epoch)``; global batch ``j`` is the fixed set
    ``perm[j*B:(j+1)*B]``.  A rank contributes the rows of that set that lie in
    its shard, so the union over ranks is exactly the global batch whatever the
    number of ranks.
``sampling="local"`` (throughput, Horovod style)
    Each rank shuffles its own training rows with ``(random_state, epoch,
    rank)`` and takes ``B // N`` rows per step; the number of steps per epoch
    is agreed (the largest shard decides, shorter shards contribute fewer rows
    at the end).  The shuffle permutes *blocks* of consecutive rows
    (:func:`local_block_rows`: 8 blocks per local batch), with block
    boundaries moved by a random offset every epoch, so a batch is a few
    contiguous runs of the shard that the kernel multiplies where they lie
    (:func:`contiguous_runs`), instead of hundreds of scattered rows gathered
    into a buffer (see ``docs/sgd.md``).  A local batch of fewer than 16 rows
    uses a plain row permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SAMPLING = ("global", "local")

#: Extra stream tag of the validation split, so it never collides with epoch streams.
_VALIDATION_TAG = 0x5EED


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous, balanced shard ``[start, stop)`` of ``n`` rows for ``rank`` of ``size``."""
    return (n * rank) // size, (n * (rank + 1)) // size


def validation_mask(n: int, fraction: float, seed: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``[start, stop)`` of the global held-out mask (``True`` = validation row).

    The mask depends only on ``n``, ``fraction`` and ``seed``, never on ranks.

    Parameters
    ----------
    n : int
        Global number of rows.
    fraction : float
        Share of rows held out, ``0 < fraction < 1``; at least one row is held
        out and at least one row is kept.
    seed : int
        Random seed.
    start, stop : int
        This rank's shard.

    Returns
    -------
    ndarray of bool, shape (stop - start,)
    """
    stop = n if stop is None else stop
    n_val = int(np.ceil(fraction * n))
    n_val = min(max(n_val, 1), n - 1)
    rng = np.random.default_rng([seed, _VALIDATION_TAG])
    chosen = rng.permutation(n)[:n_val]
    mine = chosen[(chosen >= start) & (chosen < stop)] - start
    mask = np.zeros(stop - start, dtype=bool)
    mask[mine] = True
    return mask


def global_epoch_plan(
    train_rows: np.ndarray,
    start: int,
    stop: int,
    batch_size: int,
    seed: int,
    epoch: int,
) -> Iterator[tuple[np.ndarray, int]]:
    """Batches of one epoch in ``global`` mode.

    Parameters
    ----------
    train_rows : ndarray of int
        Sorted global indices of all training rows (the same on every rank).
    start, stop : int
        This rank's shard.
    batch_size : int
        Global batch size ``B``.
    seed, epoch : int
        Stream of the permutation.

    Yields
    ------
    local_rows : ndarray of int
        Indices, relative to ``start``, of this rank's rows of the batch (in
        permutation order; possibly empty).
    global_size : int
        Size of the whole global batch.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(train_rows)
    n = perm.shape[0]
    pos = np.flatnonzero((perm >= start) & (perm < stop))
    local = perm[pos] - start
    n_batches = -(-n // batch_size)
    bounds = np.searchsorted(pos, np.arange(n_batches + 1) * batch_size)
    for j in range(n_batches):
        yield local[bounds[j] : bounds[j + 1]], min(batch_size, n - j * batch_size)


#: A local batch is made of this many shuffled blocks (one more when it straddles a block boundary).
BLOCKS_PER_BATCH = 8
#: A batch of more contiguous runs than this is gathered into a buffer instead of used in place.
MAX_RUNS = 2 * BLOCKS_PER_BATCH + 2


#: Blocks smaller than this (bytes of rows) are gathered: below it a run's two matmul calls cost
#: more than copying its rows (measured crossover ~80 KB per block, 100 float32 features).
MIN_RUN_BYTES = 64 * 1024


def runs_pay_off(block: int, row_bytes: int) -> bool:
    """Whether blocks of ``block`` rows of ``row_bytes`` each are multiplied in place rather than gathered."""
    return block > 1 and block * row_bytes >= MIN_RUN_BYTES


def local_block_rows(local_batch: int) -> int:
    """Rows per shuffled block in ``local`` mode (1 means a plain row permutation).

    :data:`BLOCKS_PER_BATCH` blocks per local batch; batches under 16 rows
    (blocks of one row) use a plain row permutation.
    """
    block = int(local_batch) // BLOCKS_PER_BATCH
    return block if block >= 2 else 1


def contiguous_runs(rows: np.ndarray, max_runs: int = MAX_RUNS) -> list[tuple[int, int]] | None:
    """``rows`` as ``[(start, stop), ...]`` runs of consecutive indices; ``None`` if more than ``max_runs``.

    The runs keep the order of ``rows``: stacking ``X[a:b]`` for each run gives ``X[rows]``.
    """
    if rows.shape[0] == 0:
        return None
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    if breaks.shape[0] >= max_runs:
        return None
    starts = np.concatenate(([0], breaks)).tolist()
    stops = np.concatenate((breaks, [rows.shape[0]])).tolist()
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]


def _block_layout(n: int, block: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Start and stop rows of the shuffled blocks of :func:`block_permutation`, in shuffled order.

    Draws the same random numbers as :func:`block_permutation` (a random
    offset, then the block order); blocks cut by row 0 or row ``n`` are
    clipped, and empty ones dropped.
    """
    off = int(rng.integers(block))
    n_blocks = -(-(n + off) // block)
    order = rng.permutation(n_blocks)
    starts = np.maximum(order * block - off, 0)
    stops = np.minimum(order * block - off + block, n)
    keep = stops > starts
    return starts[keep], stops[keep]


def block_permutation(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``0 .. n-1`` that keeps runs of ``block`` consecutive positions together.

    Block boundaries sit at ``off + i * block`` with a random ``off`` in
    ``[0, block)``, so the first and last blocks may be shorter and a row is
    grouped with different neighbours from one call to the next
    (:func:`_block_layout`).
    """
    if block <= 1 or n <= 1:
        return rng.permutation(n)
    starts, stops = _block_layout(n, block, rng)
    lengths = stops - starts
    # each block's rows in order: start of its block + position within it
    first = np.cumsum(lengths) - lengths
    return np.repeat(starts - first, lengths) + np.arange(n, dtype=np.intp)


def local_epoch_plan(
    local_rows: np.ndarray,
    local_batch: int,
    n_steps: int,
    seed: int,
    epoch: int,
    rank: int,
    block: int = 1,
) -> Iterator[np.ndarray]:
    """Batches of one epoch in ``local`` mode: this rank's own shuffle.

    Parameters
    ----------
    local_rows : ndarray of int
        This rank's training rows (relative to its shard start).
    local_batch : int
        Rows per step on this rank (global batch // ranks).
    n_steps : int
        Steps per epoch, agreed by all ranks.
    seed, epoch, rank : int
        Stream of the shuffle.
    block : int
        Rows per shuffled block (:func:`block_permutation`); 1: a plain permutation.

    Yields
    ------
    ndarray of int
        Rows of the step (possibly empty at the end of a short shard).
    """
    rng = np.random.default_rng([seed, epoch, rank + 1])
    n = local_rows.shape[0]
    if block <= 1:
        perm = rng.permutation(local_rows)
    else:
        perm = block_permutation(n, block, rng)
        if not (n and local_rows[0] == 0 and local_rows[-1] == n - 1):  # not simply 0..n-1 (held-out rows)
            perm = local_rows[perm]
    for j in range(n_steps):
        yield perm[j * local_batch : (j + 1) * local_batch]


def local_epoch_runs(
    n: int,
    local_batch: int,
    n_steps: int,
    seed: int,
    epoch: int,
    rank: int,
    block: int,
) -> Iterator[list[tuple[int, int]]]:
    """The batches of :func:`local_epoch_plan` over rows ``0 .. n-1``, as contiguous runs.

    Step ``j`` holds the same rows, in the same order, as
    ``contiguous_runs(list(local_epoch_plan(np.arange(n), ...))[j])``, but no
    per-row permutation is built: the runs come from the block order directly
    (a few microseconds per step instead of a pass over the shard each epoch).
    Adjacent runs that continue each other are merged.

    Parameters
    ----------
    n : int
        This rank's training rows, ``0 .. n-1`` (no held-out rows among them).
    local_batch, n_steps, seed, epoch, rank : int
        As for :func:`local_epoch_plan`.
    block : int
        Rows per shuffled block, at least 2.

    Yields
    ------
    list of (start, stop)
        The runs of the step (empty at the end of a short shard).
    """
    if block < 2:
        raise ValueError("local_epoch_runs needs blocks of at least 2 rows")
    rng = np.random.default_rng([seed, epoch, rank + 1])
    if n <= 1:  # block_permutation draws nothing for these
        rows = rng.permutation(n)
        for j in range(n_steps):
            yield [(int(r), int(r) + 1) for r in rows[j * local_batch : (j + 1) * local_batch]]
        return
    starts_a, stops_a = _block_layout(n, block, rng)
    starts, stops = starts_a.tolist(), stops_a.tolist()
    i, used = 0, 0  # next block, rows of it already taken
    for _ in range(n_steps):
        runs: list[tuple[int, int]] = []
        want = local_batch
        while want and i < len(starts):
            a = starts[i] + used
            take = min(want, stops[i] - a)
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], a + take)
            else:
                runs.append((a, a + take))
            want -= take
            used += take
            if a + take == stops[i]:
                i, used = i + 1, 0
        yield runs

"""Copy-on-write fold arrays: writable per unit, sharing pages with the cached fold until written.

A fold's dense rows (``X[train]``, ``X[test]``) live in a memory file: a
``memfd`` per rank (:func:`materialize`), or a ``/dev/shm`` file mapped by every
rank of a node (:class:`ShmFolds`, the ``fold_copies = "node"`` buffer).  The
cache keeps a read-only shared mapping; each unit gets a *private*
copy-on-write mapping of the same pages (``mmap.ACCESS_COPY``, ``MAP_PRIVATE``):

* it is writable, so scikit-learn's validation with ``force_writeable=True``
  (Ridge, the scalers, PCA, imputers, ...) does not copy it;
* a page the estimator writes is copied for that unit alone, by the kernel: the
  write never reaches the cache, another unit or another rank;
* pages never written cost nothing beyond the one cached fold.

An MPI shared window (``MPI_Win_allocate_shared``) cannot be remapped private,
which is why node-shared folds use a ``/dev/shm`` file here.  Where neither
``memfd_create`` nor ``/dev/shm`` works (not Linux), folds stay read-only as
before (:func:`available`).  ``HPCML_COW_FOLDS=0`` turns copy-on-write off.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from hpcml._faults import hook as fault_hook
from hpcml.comm import idle_barrier, node_comm

if TYPE_CHECKING:  # pragma: no cover
    from mpi4py import MPI

#: Environment variable: ``0``/``false``/``no``/``off`` keeps folds read-only (no copy-on-write views).
ENV_COW = "HPCML_COW_FOLDS"

#: Where node-shared fold files are made.
SHM_DIR = "/dev/shm"
#: Environment variable (tests only): another tmpfs folder for them, so that a test sees what its run left.
ENV_SHM_DIR = "HPCML_SHM_DIR"


def available() -> bool:
    """Whether copy-on-write fold views can be made here (and are not turned off)."""
    if os.environ.get(ENV_COW, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return hasattr(os, "memfd_create") and hasattr(mmap, "MAP_PRIVATE")


def cowable(array: Any) -> bool:
    """Whether ``array`` is a dense NumPy array that copy-on-write views can stand for."""
    return type(array) is np.ndarray and array.ndim >= 1 and array.dtype.kind in "biufc" and array.size > 0


class CowSource:
    """A C-ordered array stored in a memory file at ``offset``; :meth:`view` maps it privately.

    Parameters
    ----------
    fd : int
        File descriptor of the memory file (owned: closed when this object is collected).
    offset : int
        Byte offset of the array in the file.
    shape, dtype
        Of the array.
    """

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.fd = fd
        self.offset = offset
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.array = self._map(mmap.MAP_SHARED, writable=False)
        self._closer = weakref.finalize(self, os.close, fd)

    def _map(self, flags: int, writable: bool) -> np.ndarray:
        start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
        delta = self.offset - start
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable or flags == mmap.MAP_PRIVATE else 0)
        mm = mmap.mmap(self.fd, delta + self.nbytes, flags=flags, prot=prot, offset=start)
        array = np.frombuffer(mm, dtype=self.dtype, count=int(np.prod(self.shape)), offset=delta).reshape(self.shape)
        if not writable and flags != mmap.MAP_PRIVATE:
            array.flags.writeable = False
        return array

    def view(self) -> np.ndarray:
        """A writable private (copy-on-write) mapping of the array, for one unit."""
        return self._map(mmap.MAP_PRIVATE, writable=True)

    def close(self) -> None:
        """Close the file descriptor (existing mappings stay valid)."""
        self._closer()


def _memfd(nbytes: int) -> int:
    fd = os.memfd_create("hpcml-fold", getattr(os, "MFD_CLOEXEC", 0))
    try:
        os.ftruncate(fd, max(nbytes, 1))
    except BaseException:
        os.close(fd)
        raise
    return fd


def materialize(X: np.ndarray, rows: np.ndarray) -> CowSource:
    """``X[rows]`` in a private memory file of this rank (a memfd), for copy-on-write views.

    The file holds the only copy of the rows; :attr:`CowSource.array` is a
    read-only view of it for the cache, :meth:`CowSource.view` a unit's
    writable private one.
    """
    from hpcml.cv.folds import _take_rows

    shape = (len(rows), *X.shape[1:])
    nbytes = int(np.prod(shape)) * X.dtype.itemsize
    fd = _memfd(nbytes)
    try:
        mm = mmap.mmap(fd, max(nbytes, 1), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        out = np.frombuffer(mm, dtype=X.dtype, count=int(np.prod(shape))).reshape(shape)
        _take_rows(np.ascontiguousarray(X) if not X.flags.c_contiguous else X, rows, out)
        del out
        mm.close()
        return CowSource(fd, 0, shape, X.dtype)
    except BaseException:
        os.close(fd)
        raise


#: A unit's test rows built after its fit are kept for the next unit of the fold only when building
#: them took more than this fraction of the fit (cheap fits); otherwise they are freed after scoring.
KEEP_TEST_FRACTION = 0.05


class LazyRows:
    """``X[rows]`` in a memory file built on first use (after a unit's fit), and freed again by :meth:`settle`.

    scikit-learn's ``_fit_and_score`` indexes ``X[test]`` before fitting, so
    its peak is X + train + test rows + the estimator's working memory.  A
    unit only needs the test rows to score, so they are built after the fit and,
    when fits are expensive compared with building them, freed after scoring:
    the peak of a fit is then the train rows + the working memory.  The rows
    are identical either way; only when they exist changes.

    Parameters
    ----------
    build : callable
        ``build()`` makes the rows' :class:`CowSource` (:meth:`of` for ``X[rows]`` in a memfd).
    shape : tuple of int
        Of the rows.
    dtype : numpy.dtype
        Of the rows.
    keep_fraction : float or None
        :data:`KEEP_TEST_FRACTION` unless given; ``None`` keeps the rows until
        the object is dropped (node-shared rows, freed by the next
        :meth:`ShmFolds.load`).
    """

    def __init__(
        self,
        build: Callable[[], CowSource],
        shape: tuple[int, ...],
        dtype: np.dtype,
        keep_fraction: float | None = KEEP_TEST_FRACTION,
    ) -> None:
        self.build = build
        self.keep_fraction = keep_fraction
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._source: CowSource | None = None
        #: seconds the last build took; how many times the rows were built
        self.build_seconds = 0.0
        self.builds = 0

    @classmethod
    def of(cls, X: np.ndarray, rows: np.ndarray, keep_fraction: float | None = KEEP_TEST_FRACTION) -> LazyRows:
        """``X[rows]``, built by :func:`materialize` in a memfd of this rank when first used."""
        return cls(lambda: materialize(X, rows), (len(rows), *X.shape[1:]), X.dtype, keep_fraction)

    @property
    def built(self) -> bool:
        """Whether the rows are in memory now."""
        return self._source is not None

    def source(self) -> CowSource:
        """The rows' :class:`CowSource`, built now if they are not in memory."""
        if self._source is None:
            import time

            start = time.perf_counter()
            self._source = self.build()
            self.build_seconds = time.perf_counter() - start
            self.builds += 1
        return self._source

    @property
    def array(self) -> np.ndarray:
        """A read-only view of the rows (built if needed)."""
        return self.source().array

    def view(self) -> np.ndarray:
        """A unit's writable private (copy-on-write) mapping of the rows (built if needed)."""
        return self.source().view()

    def settle(self, fit_seconds: float) -> bool:
        """After a unit: free the rows unless building them is expensive next to a fit.

        Returns whether they are kept (see :data:`KEEP_TEST_FRACTION`).
        """
        keep = self._source is not None and (
            self.keep_fraction is None or self.build_seconds > self.keep_fraction * fit_seconds
        )
        if not keep:
            self._source = None
        return keep


def _world_rank() -> int:
    """The calling process's rank in ``COMM_WORLD`` (what :mod:`hpcml._faults` names)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def _page_up(nbytes: int) -> int:
    return -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE


class ShmFolds:
    """Node-shared fold rows in a ``/dev/shm`` file: the copy-on-write twin of :class:`hpcml.cv.folds.NodeFolds`.

    Same protocol: :meth:`open` (collective over the run's communicator), then
    :meth:`load` for every split (collective over the node), :meth:`close`.
    :meth:`load` builds the train rows (a slice per rank of the node) and
    returns them as a :class:`CowSource` (``.array`` read-only, ``.view()`` a
    unit's private writable mapping); the test rows come back as
    :class:`LazyRows`: the first rank of the node that finishes a fit of the
    split builds them in the file (the others wait for it, under ``flock``)
    and every rank maps them.  While the node's first fits of a split run, the
    file holds the train rows only; :meth:`load` frees the previous split's
    test rows (``MADV_REMOVE``) before the next split starts.

    File layout: a page of header (the load generation whose test rows are
    built), the train region (largest train part), the test region (largest
    test part).  The file is unlinked as soon as every rank of the node has
    opened it, so nothing is left in ``/dev/shm`` whatever happens to the run.
    """

    def __init__(
        self, fd: int, node: MPI.Intracomm, mm: mmap.mmap, X_dtype: np.dtype, test_offset: int, test_bytes: int
    ) -> None:
        self.fd = fd
        self.node = node
        self.mm = mm
        self.buffer = np.frombuffer(mm, dtype=np.uint8)  # the node's shared writable mapping, to build folds
        self.dtype = X_dtype
        self.train_offset = mmap.PAGESIZE
        self.test_offset = test_offset
        self.test_bytes = test_bytes
        #: loads so far (the same on every rank of the node); the header holds the one whose test rows exist
        self.generation = 0
        self.split: int | None = None
        #: None unless HPCML_INJECT_FAULT names ``test-rows`` on this rank (tests): called holding the lock
        self.fault = fault_hook("test-rows", _world_rank())

    @classmethod
    def open(
        cls, X: np.ndarray, splits: list[tuple[Any, Any]], comm: MPI.Intracomm
    ) -> tuple[ShmFolds | None, str | None]:
        """Create the node's file and map it on its ranks.  Collective over ``comm``.

        Returns ``(None, reason)`` on every rank if any rank failed.
        """
        from mpi4py import MPI

        from hpcml.comm import describe
        from hpcml.cv.folds import split_rows

        row_bytes = X.shape[1] * X.dtype.itemsize
        train_rows = max((split_rows(train).size for train, _ in splits), default=0)
        test_bytes = max((split_rows(test).size for _, test in splits), default=0) * row_bytes
        test_offset = mmap.PAGESIZE + _page_up(train_rows * row_bytes)
        nbytes = test_offset + max(test_bytes, 1)
        node = node_comm(comm)
        path, failure, fd = None, None, -1
        if node.Get_rank() == 0:
            try:
                folder = os.environ.get(ENV_SHM_DIR) or SHM_DIR
                handle, path = tempfile.mkstemp(prefix="hpcml-fold-", dir=folder)
                os.ftruncate(handle, nbytes)
                os.close(handle)
            except Exception as exc:  # noqa: BLE001 - agreed below
                failure, path = f"no node-shared fold file ({describe(exc)})", None
        path = node.bcast(path, root=0)
        if path is not None:
            try:
                fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
                mm = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            except Exception as exc:  # noqa: BLE001 - agreed below
                failure = f"cannot map the node-shared fold file ({describe(exc)})"
        idle_barrier(node)
        if node.Get_rank() == 0 and path is not None:
            os.unlink(path)
        size = comm.Get_size()
        first = comm.allreduce(comm.Get_rank() if failure is not None else size, op=MPI.MIN)
        if first < size:
            if fd >= 0:
                os.close(fd)
            node.Free()
            return None, comm.bcast(failure, root=first)
        return cls(fd, node, mm, X.dtype, test_offset, test_bytes), None

    def _rows(self, offset: int, n: int, width: int) -> np.ndarray:
        """The file's writable shared rows ``[offset, offset + n rows)``."""
        return self.buffer[offset : offset + n * width * self.dtype.itemsize].view(self.dtype).reshape(n, width)

    def load(self, X: np.ndarray, train: np.ndarray, test: np.ndarray, split: int) -> tuple[CowSource, LazyRows]:
        """Build ``X[train]`` in the file, a slice per rank of the node; ``X[test]`` lazily.  Collective (node)."""
        from hpcml.cv.folds import _take_rows

        n_train, width = len(train), X.shape[1]
        rank, size = self.node.Get_rank(), self.node.Get_size()
        lo, hi = n_train * rank // size, n_train * (rank + 1) // size
        idle_barrier(self.node)  # nobody still reads the previous split
        self.generation += 1
        if rank == 0:
            self._free_test_rows()
        _take_rows(X, train[lo:hi], self._rows(self.train_offset, n_train, width)[lo:hi])
        idle_barrier(self.node)
        self.split = split
        train_src = CowSource(os.dup(self.fd), self.train_offset, (n_train, width), X.dtype)
        generation = self.generation

        def build() -> CowSource:
            return self._test_source(X, test, generation)

        return train_src, LazyRows(build, (len(test), width), X.dtype, keep_fraction=None)

    def _free_test_rows(self) -> None:
        """Give the previous split's test rows back to the system (the file's pages; best effort)."""
        remove = getattr(mmap, "MADV_REMOVE", None)
        if remove is not None and self.test_bytes > 0:
            try:
                self.mm.madvise(remove, self.test_offset, _page_up(self.test_bytes))
            except OSError:  # pragma: no cover - tmpfs supports it; otherwise the pages stay
                pass

    def _test_source(self, X: np.ndarray, test: np.ndarray, generation: int) -> CowSource:
        """The test rows of load ``generation``, built by the first rank of the node that asks (under ``flock``)."""
        import fcntl

        from hpcml.cv.folds import _take_rows

        if self.generation != generation:
            raise RuntimeError("the node-shared fold was reloaded: these test rows are gone")
        header = np.frombuffer(self.mm, dtype=np.int64, count=1)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            if self.fault is not None:
                self.fault()
            if int(header[0]) != generation:
                _take_rows(X, test, self._rows(self.test_offset, len(test), X.shape[1]))
                header[0] = generation
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        return CowSource(os.dup(self.fd), self.test_offset, (len(test), X.shape[1]), X.dtype)

    def close(self) -> None:
        """Unmap and close.  Collective over the run's communicator (the node communicator is freed)."""
        if self.node is not None:
            self.node.Free()
            self.node = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.buffer = self.mm = None  # type: ignore[assignment]
        self.split = None


__all__ = [
    "ENV_COW",
    "ENV_SHM_DIR",
    "KEEP_TEST_FRACTION",
    "CowSource",
    "LazyRows",
    "ShmFolds",
    "available",
    "cowable",
    "materialize",
]

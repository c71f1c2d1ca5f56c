"""hpcml.cluster.KMeans: scikit-learn's KMeans, fitted over the ranks of a communicator.

Every rank holds one contiguous shard of the rows: the rows of a whole array
given to every rank (each rank keeps its shard), the rows it was given with
``sharded=True``, or its shard of an :class:`hpcml.data.H5Dataset` (read with
one hyperslab read).  Initialisation and Lloyd iterations are collective
(``_init``, ``_lloyd``); every rank ends with the same ``cluster_centers_``,
``inertia_`` and ``n_iter_``, and ``labels_`` for its own rows.
``predict``, ``transform`` and ``score`` are scikit-learn's and purely local.
"""

from __future__ import annotations

import time
import warnings
import zlib
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans as _SKKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils.extmath import row_norms
from sklearn.utils.sparsefuncs import mean_variance_axis

from hpcml._compat import Interval, StrOptions, _openmp_effective_n_threads, check_sample_weight, validate_data
from hpcml.cluster import _init, _lloyd
from hpcml.cluster._shard import allsum
from hpcml.comm import raise_if_any
from hpcml.sgd.estimators import InvalidData, _BaseSGD, _is_dataset, resolve_sgd_comm
from hpcml.sgd.sampling import shard_range

__all__ = ["KMeans", "InvalidData"]

#: Default number of k-means|| sampling rounds (Bahmani et al. found 5 enough).
DEFAULT_INIT_ROUNDS = 5


class KMeans(_SKKMeans):
    """K-Means clustering over MPI ranks (scikit-learn's ``KMeans(algorithm="lloyd")``).

    Parameters
    ----------
    n_clusters, init, n_init, max_iter, tol, verbose, random_state, copy_x, algorithm
        As scikit-learn's :class:`sklearn.cluster.KMeans`; ``init`` also takes
        ``"k-means||"`` (scalable k-means++, Bahmani et al. 2012, with weighted
        re-clustering of the candidates).  ``algorithm`` must be ``"lloyd"``.
        A callable ``init`` needs the whole data on every rank.
    oversampling_factor : float, default=2.0
        k-means||: expected candidates per round, in units of ``n_clusters``.
    init_max_iter : int or None, default=None
        k-means||: sampling rounds (None: 5; more run while there are fewer
        candidates than clusters).
    comm : None, "world", "self" or mpi4py.MPI.Intracomm, default=None
        The ranks that fit together (None: ``MPI.COMM_WORLD``).  ``fit`` is
        collective over it; ``hpcml.cv`` fits candidates with ``"self"``.

    Attributes
    ----------
    cluster_centers_, inertia_, n_iter_, n_features_in_, feature_names_in_
        As scikit-learn's, identical on every rank.
    labels_ : ndarray of shape (n_local,)
        Labels of this rank's rows (all rows on one rank).
    shard_ : tuple of int
        ``(start, stop)``: the global rows ``labels_`` belongs to.
    n_samples_ : int
        Rows over all ranks.
    timing_ : dict
        ``init_s``, ``lloyd_s``, ``iter_s`` (per iteration of the best run),
        ``comm_s`` and, for k-means||, ``candidates`` and ``rounds``.
    """

    _parameter_constraints: dict = {
        **_SKKMeans._parameter_constraints,
        "init": [StrOptions({"k-means++", "random", "k-means||"}), callable, "array-like"],
        "algorithm": [StrOptions({"lloyd", "elkan"})],
        "oversampling_factor": [Interval(Real, 0, None, closed="neither")],
        "init_max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "comm": "no_validation",
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: Any = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        random_state: Any = None,
        copy_x: bool = True,
        algorithm: str = "lloyd",
        oversampling_factor: float = 2.0,
        init_max_iter: int | None = None,
        comm: Any = None,
    ) -> None:
        super().__init__(
            n_clusters=n_clusters,
            init=init,
            n_init=n_init,
            max_iter=max_iter,
            tol=tol,
            verbose=verbose,
            random_state=random_state,
            copy_x=copy_x,
            algorithm=algorithm,
        )
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.comm = comm

    __sklearn_clone__ = _BaseSGD.__sklearn_clone__

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the communicator handle: ``COMM_SELF`` becomes ``"self"``, any other ``None``."""
        state = dict(super().__getstate__())
        comm = state.get("comm")
        if comm is not None and not isinstance(comm, str):
            from mpi4py import MPI

            state["comm"] = "self" if comm == MPI.COMM_SELF else None
        return state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -------------------------------------------------------------- data setup
    def _local_rows(self, X: Any, sample_weight: Any, sharded: bool, rank: int, size: int) -> dict[str, Any]:
        """The rows of the calling rank (a private writable copy unless ``copy_x=False`` with ``sharded=True``).

        Sparse X becomes CSR (scikit-learn converts it too) and is never
        modified.  No collectives.
        """
        if _is_dataset(X):
            return self._dataset_rows(X, sample_weight, rank, size)
        try:
            check_sparse_structure(X)
            Xa = validate_data(
                self,
                X,
                dtype=[np.float64, np.float32],
                order="C",
                accept_sparse="csr",
                accept_large_sparse=False,
                copy=False,
                ensure_min_samples=0 if sharded else 1,
            )
            wa = local_weights(sample_weight, Xa)
        except ValueError as exc:
            raise InvalidData(str(exc)) from None
        if sp.issparse(Xa) and not Xa.has_canonical_format:
            # duplicate entries mean their sum (scipy); scikit-learn's row norms would count each one
            Xa = Xa.copy()
            Xa.sum_duplicates()
        if sharded:
            n, start, Xl, wl = -1, -1, Xa, wa
        else:
            n = Xa.shape[0]
            start, stop = shard_range(n, rank, size)
            Xl, wl = Xa[start:stop], wa[start:stop]
        if sp.issparse(Xl):  # never modified (scikit-learn does not centre sparse data)
            Xl = sp.csr_matrix(Xl)
        elif self.copy_x or not sharded or not Xl.flags.writeable or not Xl.flags.c_contiguous:
            # the whole array stays as given (a callable init sees it); centring needs a private shard
            Xl = np.array(Xl, order="C", copy=True)
        # the whole arrays must be the same on every rank: their CRC-32 is compared in _agree
        crc = None
        if not sharded and size > 1:
            crc = zlib.crc32(np.ascontiguousarray(wa).view(np.uint8))
            for part in (Xa.data, Xa.indices, Xa.indptr) if sp.issparse(Xa) else (Xa,):
                crc = zlib.crc32(np.ascontiguousarray(part).view(np.uint8), crc)
        out = {"X": Xl, "w": np.ascontiguousarray(wl), "n": n, "start": start, "full": None if sharded else Xa}
        return dict(out, crc=crc)

    def _dataset_rows(self, ds: Any, sample_weight: Any, rank: int, size: int) -> dict[str, Any]:
        if sample_weight is not None:
            raise ValueError(
                "sample_weight must be None when X is an H5Dataset (name the weights dataset: "
                "H5Dataset(path, sample_weight=...))"
            )
        from hpcml.data.h5 import H5Dataset

        ds = H5Dataset(ds.path, X=ds.names["X"], y=None, sample_weight=ds.names.get("sample_weight"))
        info = ds.validate()
        if info.get("sparse"):
            raise InvalidData(f"{ds.path}: X '{ds.names['X']}' is sparse (CSR); hpcml.cluster needs dense X")
        n = int(info["X"][0][0])
        start, stop = shard_range(n, rank, size)
        Xl = np.asarray(ds.read_rows(start, stop, role="X"))
        if Xl.dtype not in (np.float32, np.float64):
            Xl = Xl.astype(np.float64)
        where = f"{ds.path}: rows {start}:{stop}"
        try:
            Xl = check_array(
                Xl, dtype=[np.float64, np.float32], order="C", ensure_min_samples=0, input_name="X", estimator=self
            )
            wl = None
            if ds.names.get("sample_weight") is not None:
                wl = np.asarray(ds.read_rows(start, stop, role="sample_weight"))
            wl = local_weights(wl, Xl)
        except ValueError as exc:
            raise InvalidData(f"{where}: {str(exc).splitlines()[0]}") from None
        for attr in ("feature_names_in_",):
            if hasattr(self, attr):
                delattr(self, attr)
        self.n_features_in_ = Xl.shape[1]
        return {"X": Xl, "w": wl, "n": n, "start": start, "full": None}

    def _random_state(self, comm: Any) -> np.random.RandomState:
        """One random state in the same state on every rank (an unseeded one is drawn on rank 0)."""
        if self.random_state is None:
            seed = np.random.randint(np.iinfo(np.int32).max) if comm.Get_rank() == 0 else None
            return np.random.RandomState(comm.bcast(seed, root=0))
        return check_random_state(self.random_state)

    def _agree(self, comm: Any, local: dict[str, Any], rs: np.random.RandomState, sharded: bool) -> tuple[int, int]:
        """Check that the ranks fit the same problem; return ``(n, start)``.  One ``allgather``."""
        Xl = local["X"]
        state = rs.get_state()
        params = tuple(
            (k, repr(v))
            for k, v in sorted(self.get_params(deep=False).items())
            if k not in ("comm", "verbose", "random_state", "init")
        )
        info = comm.allgather(
            (
                Xl.shape[0],
                Xl.shape[1],
                Xl.dtype.str,
                local["n"],
                params,
                (zlib.crc32(state[1].tobytes()), int(state[2])),
                bool(np.any(local["w"])),
                local.get("crc"),
                sp.issparse(Xl),
            )
        )
        if len({i[4] for i in info}) != 1:
            raise ValueError(
                "KMeans has different parameters on different ranks; every rank of comm must fit the same estimator"
            )
        if len({i[5] for i in info}) != 1:
            raise ValueError("random_state is in a different state on different ranks; give every rank the same seed")
        if len({i[1] for i in info}) != 1:
            raise InvalidData(f"ranks disagree on the number of features: {sorted({i[1] for i in info})}")
        if len({i[2] for i in info}) != 1:
            raise InvalidData(f"ranks disagree on the dtype of X: {sorted({i[2] for i in info})}")
        if len({i[8] for i in info}) != 1:
            raise InvalidData("X is sparse on some ranks and dense on others; give every rank the same kind")
        if not sharded and len({i[3] for i in info}) != 1:
            raise InvalidData("ranks were given data sets of different lengths (give every rank the same arrays)")
        if not sharded and len({i[7] for i in info}) != 1:
            raise InvalidData(
                "X or sample_weight differs between ranks; every rank of comm must pass the same arrays "
                "(or its own rows with sharded=True)"
            )
        counts = [i[0] for i in info]
        n = int(sum(counts))
        if n and not any(i[6] for i in info):
            raise InvalidData("Sample weights must contain at least one non-zero number.")
        if n == 0:
            raise InvalidData(
                "Found array with 0 sample(s) (shape=(0, %d)) while a minimum of 1 is required by KMeans." % Xl.shape[1]
            )
        return n, int(sum(counts[: comm.Get_rank()]))

    def _n_init_for(self) -> int:
        """scikit-learn's ``n_init`` rule ("auto": 1 for k-means++, k-means|| and arrays, 10 otherwise)."""
        if self.n_init != "auto":
            n_init = int(self.n_init)
        elif isinstance(self.init, str) and self.init in ("k-means++", "k-means||"):
            n_init = 1
        elif isinstance(self.init, str) or callable(self.init):
            n_init = 10
        else:
            n_init = 1
        if not isinstance(self.init, str) and not callable(self.init) and n_init != 1:
            warnings.warn(
                "Explicit initial center position passed: performing only one init in "
                f"{self.__class__.__name__} instead of n_init={n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
            n_init = 1
        return n_init

    def _setup(self, comm: Any, X: Any, sample_weight: Any, sharded: bool) -> dict[str, Any]:
        """Validate everything and agree across ranks; centre this rank's rows.  Collective."""
        rank, size = comm.Get_rank(), comm.Get_size()
        err: BaseException | None = None
        local: dict[str, Any] = {}
        try:
            self._validate_params()
            local = self._local_rows(X, sample_weight, sharded, rank, size)
        except Exception as exc:  # noqa: BLE001 - agreed below, raised on every rank
            err = exc
        raise_if_any(comm, err)
        rs = self._random_state(comm)
        n, start = self._agree(comm, local, rs, sharded)
        Xl, k = local["X"], self.n_clusters
        if n < k:
            raise InvalidData(f"n_samples={n} should be >= n_clusters={k}.")
        init = self.init
        try:
            self._n_init = self._n_init_for()
            if not isinstance(init, str) and not callable(init):
                init = check_array(init, dtype=Xl.dtype, copy=True, order="C")
                self._validate_center_shape(Xl, init)
            if callable(init) and local["full"] is None:
                raise ValueError(
                    "a callable init needs the whole data on every rank (not sharded=True or an "
                    "H5Dataset); use 'k-means++', 'k-means||', 'random' or an array"
                )
        except Exception as exc:  # noqa: BLE001 - every rank raises the same
            err = exc
        raise_if_any(comm, err)
        if not isinstance(init, str) and not callable(init) and comm.Get_size() > 1:
            if len(set(comm.allgather(zlib.crc32(init.tobytes())))) != 1:
                raise ValueError("init differs between ranks; every rank of comm must give the same initial centres")
        self._algorithm = self.algorithm
        if self.algorithm == "elkan" and k == 1:
            warnings.warn(
                "algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._algorithm = "lloyd"
        if sp.issparse(Xl):
            self._tol = self._sparse_tol(comm, Xl, local["full"], n)
            return {**local, "n": n, "start": start, "mean": None, "init": init, "rs": rs}
        mean = self._centre(comm, Xl, local["full"], n)
        if not isinstance(init, str) and not callable(init):
            init -= mean
        sq = allsum(
            comm, np.concatenate([Xl.sum(axis=0, dtype=np.float64), np.einsum("ij,ij->j", Xl, Xl, dtype=np.float64)])
        )
        d = Xl.shape[1]
        var = sq[d:] / n - (sq[:d] / n) ** 2
        self._tol = 0 if self.tol == 0 else float(np.mean(var) * self.tol)
        return {**local, "n": n, "start": start, "mean": mean, "init": init, "rs": rs}

    @staticmethod
    def _centre(comm: Any, Xl: np.ndarray, full: np.ndarray | None, n: int) -> np.ndarray:
        """Subtract the column means from this rank's rows in place and return them.

        With the whole array on every rank the mean is scikit-learn's
        ``X.mean(axis=0)`` bit for bit (no collective); otherwise the float64
        sum over the ranks divided by ``n`` (one ``Allreduce``).
        """
        if full is not None:
            mean = full.mean(axis=0)
        else:
            mean = (allsum(comm, Xl.sum(axis=0, dtype=np.float64)) / n).astype(Xl.dtype)
        Xl -= mean
        return mean

    def _sparse_tol(self, comm: Any, Xl: sp.csr_matrix, full: Any, n: int) -> float:
        """scikit-learn's ``_tolerance`` for sparse X: ``tol`` times the mean column variance."""
        if self.tol == 0:
            return 0
        if full is not None:
            return float(np.mean(mean_variance_axis(full, axis=0)[1]) * self.tol)
        sums = np.asarray(Xl.sum(axis=0, dtype=np.float64)).ravel()
        sqs = np.asarray(Xl.multiply(Xl).sum(axis=0, dtype=np.float64)).ravel()
        sq = allsum(comm, np.concatenate([sums, sqs]))
        d = Xl.shape[1]
        return float(np.mean(sq[d:] / n - (sq[:d] / n) ** 2) * self.tol)

    def _init_centers(self, comm: Any, s: dict[str, Any], xsq: np.ndarray | None) -> np.ndarray:
        """Initial centres (centred coordinates), the same on every rank.  Collective."""
        X, w, rs, k, init = s["X"], s["w"], s["rs"], self.n_clusters, s["init"]
        if isinstance(init, str) and init == "k-means++":
            return _init.kmeans_plusplus(comm, X, xsq, w, k, rs, s["start"], s["n"])
        if isinstance(init, str) and init == "random":
            return _init.random_rows(comm, X, w, k, rs, s["start"], s["n"])
        if isinstance(init, str):
            rounds = self.init_max_iter or DEFAULT_INIT_ROUNDS
            centers, info = _init.kmeans_parallel(
                comm, X, xsq, w, k, rs, s["start"], s["n"], float(self.oversampling_factor), rounds
            )
            self.timing_.update(info)
            return centers
        if not callable(init):
            return init
        err: BaseException | None = None
        centers = None
        try:
            full = s["full"] if s["mean"] is None else s["full"] - s["mean"]
            centers = check_array(init(full, k, random_state=rs), dtype=X.dtype, copy=False, order="C")
            self._validate_center_shape(X, centers)
        except Exception as exc:  # noqa: BLE001 - agreed below
            err = exc
        raise_if_any(comm, err)
        return centers

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, *, sharded: bool = False) -> KMeans:
        """Compute k-means clustering over the ranks of ``comm``.  Collective.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or hpcml.data.H5Dataset
            The whole data on every rank (each rank keeps its shard of rows),
            this rank's rows with ``sharded=True``, or a data set each rank reads
            its shard of (its ``sample_weight`` dataset, if named, is used).
            float32 stays float32.
        y : Ignored
        sample_weight : array-like of shape (n_samples,) or (n_local,), optional
            Weights of the rows given (with ``sharded=True``, of this rank's rows).
        sharded : bool, default=False
            ``X`` holds only this rank's rows (a rank may hold none).

        Returns
        -------
        self : KMeans
        """
        comm = resolve_sgd_comm(self.comm)
        t0 = time.perf_counter()
        s = self._setup(comm, X, sample_weight, sharded)
        self._n_threads = _openmp_effective_n_threads()
        self.timing_ = {"init_s": 0.0, "lloyd_s": 0.0}
        Xl, w, k = s["X"], s["w"], self.n_clusters
        whole = s["full"] is not None  # the whole data on every rank: relocate empty clusters as scikit-learn
        needs_norms = isinstance(s["init"], str) and s["init"] in ("k-means++", "k-means||")
        xsq = row_norms(Xl, squared=True) if needs_norms else None
        best: tuple[Any, ...] | None = None
        for _ in range(self._n_init):
            t1 = time.perf_counter()
            centers_init = self._init_centers(comm, s, xsq)
            t2 = time.perf_counter()
            if self.verbose:
                print("Initialization complete")
            labels, inertia, centers, n_iter, timing = _lloyd.lloyd(
                comm, Xl, w, centers_init, self.max_iter, self._tol, s["start"], bool(self.verbose), whole
            )
            self.timing_["init_s"] += t2 - t1
            self.timing_["lloyd_s"] += time.perf_counter() - t2
            if best is None or (inertia < best[1] and not same_clustering(comm, labels, best[0], k)):
                best = (labels, inertia, centers, n_iter, timing)
        assert best is not None
        labels, inertia, centers, n_iter, timing = best
        if s["mean"] is not None:
            if not self.copy_x:
                Xl += s["mean"]
            centers = centers + s["mean"]
        present = allsum(comm, np.bincount(labels, minlength=k).astype(np.int64))
        distinct = int(np.count_nonzero(present))
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = centers
        self._n_features_out = k
        self.labels_ = gather_labels(comm, labels, s["n"]) if whole else labels
        self.inertia_ = float(inertia)
        self.n_iter_ = int(n_iter)
        self.shard_ = (0, s["n"]) if whole else (s["start"], s["start"] + Xl.shape[0])
        self.n_samples_ = s["n"]
        self.timing_.update(iter_s=timing["iter_s"], comm_s=timing["comm_s"], fit_s=time.perf_counter() - t0)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None, *, sharded: bool = False) -> np.ndarray:
        """Fit, then return ``labels_`` (this rank's rows).  Collective."""
        return self.fit(X, sample_weight=sample_weight, sharded=sharded).labels_

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None, *, sharded: bool = False) -> np.ndarray:
        """Fit, then the distances of the rows given to the centres.  Collective.

        All rows for the whole data on every rank; this rank's rows with
        ``sharded=True`` or an H5Dataset.
        """
        self.fit(X, sample_weight=sample_weight, sharded=sharded)
        if _is_dataset(X):
            rows = np.asarray(X.read_rows(*self.shard_, role="X"))
        else:
            rows = self._check_test_data(X)
        return self._transform(rows)


def check_sparse_structure(X: Any) -> None:
    """Refuse a CSR/CSC matrix whose index arrays are inconsistent, with scipy's own message (a ``ValueError``).

    scikit-learn's ``check_array`` does not look at the indices: an index
    outside the columns or a negative one crashes its compiled k-means (a
    segfault) and a decreasing ``indptr`` gives garbage or an accidental error
    deep inside.  scipy's full format check, run on a new matrix object over
    the same arrays (it may re-type or trim the arrays of the matrix it checks,
    never the caller's), names the problem.  Unsorted indices and duplicate
    entries are valid CSR and pass, as in scikit-learn.
    """
    if not (sp.issparse(X) and X.format in ("csr", "csc")):
        return
    view = type(X)((X.data, X.indices, X.indptr), shape=X.shape, copy=False)  # scikit-learn's checks and messages
    try:
        view.check_format(full_check=True)
    except ValueError as exc:
        raise ValueError(f"X is not a valid {X.format.upper()} matrix: {exc}") from None


def local_weights(sample_weight: Any, X: np.ndarray) -> np.ndarray:
    """scikit-learn's ``_check_sample_weight`` for one rank's rows (all-zero or no rows allowed: checked globally)."""
    if sample_weight is not None and not isinstance(sample_weight, Real):
        sample_weight = np.asarray(sample_weight)  # array-likes (scalars are scikit-learn's "every row")
        if sample_weight.ndim == 1 and X.shape[0] in (0, sample_weight.shape[0]) and not np.any(sample_weight):
            return sample_weight.astype(X.dtype)
    if sample_weight is None and X.shape[0] == 0:
        return np.ones(0, dtype=X.dtype)
    return check_sample_weight(sample_weight, X, dtype=X.dtype)


def gather_labels(comm: Any, labels: np.ndarray, n: int) -> np.ndarray:
    """The labels of all ``n`` rows, in global row order, on every rank (one ``Allgatherv``).  Collective."""
    if comm.Get_size() == 1:
        return labels
    from mpi4py import MPI

    counts = np.array(comm.allgather(labels.shape[0]), dtype=np.int64)
    out = np.empty(n, dtype=np.int32)
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    comm.Allgatherv(np.ascontiguousarray(labels, dtype=np.int32), [out, counts, displs, MPI.INT32_T])
    return out


def same_clustering(comm: Any, labels1: np.ndarray, labels2: np.ndarray, k: int) -> bool:
    """scikit-learn's ``_is_same_clustering`` over all ranks (one ``allgather``).  Collective."""
    mapping = np.full(k, -1, dtype=np.int64)
    mapping[labels1] = labels2
    ok = bool(np.array_equal(mapping[labels1], labels2))
    parts = comm.allgather((ok, mapping))
    if not all(p[0] for p in parts):
        return False
    merged = np.full(k, -1, dtype=np.int64)
    for _, m in parts:
        seen = m >= 0
        clash = seen & (merged >= 0) & (merged != m)
        if clash.any():
            return False
        merged[seen] = m[seen]
    return True

"""Multi-rank tests of hpcml.cluster.KMeans against scikit-learn's KMeans(algorithm="lloyd").

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` (N = 1, 2, 4 via
tests/test_mpi_tier.py; N = 3 via tests/launch/test_kmeans_cli.py).  Every test
uses the size of ``COMM_WORLD`` it is given.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from hpcml.cluster import InvalidData, KMeans
from hpcml.data.h5 import H5Dataset, write_dataset
from hpcml.sgd.sampling import shard_range

COMM = MPI.COMM_WORLD
threadpool_limits(1)
RTOL = 1e-9


def blobs(n=1500, d=4, k=5, seed=0, dtype=np.float64):
    X, _ = make_blobs(n, n_features=d, centers=k, cluster_std=2.0, random_state=seed)
    return X.astype(dtype)


def shard(a):
    lo, hi = shard_range(a.shape[0], COMM.rank, COMM.size)
    return a[lo:hi]


def all_labels(est):
    """All rows' labels: ``labels_`` itself for the whole data on every rank, else the ranks' shards gathered."""
    if est.shard_ == (0, est.n_samples_):
        return est.labels_
    return np.concatenate(COMM.allgather(est.labels_))


def assert_same_fit(ours, ref):
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ours.inertia_, ref.inertia_, rtol=RTOL, atol=1e-20)
    np.testing.assert_array_equal(all_labels(ours), ref.labels_)
    same = COMM.allgather((ours.cluster_centers_.tobytes(), ours.inertia_, ours.n_iter_))
    assert all(s == same[0] for s in same)


@pytest.fixture
def shared_dir():
    path = COMM.bcast(tempfile.mkdtemp(prefix="hpcml-kmeans-") if COMM.rank == 0 else None, root=0)
    yield Path(path)
    COMM.Barrier()
    if COMM.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("form", ["whole", "sharded"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_init_array_equals_sklearn(form, seed):
    X = blobs(seed=seed)
    init = X[np.random.RandomState(seed).choice(len(X), 5, replace=False)]
    ref = SKKMeans(5, init=init, n_init=1, algorithm="lloyd", tol=1e-6).fit(X)
    est = KMeans(5, init=init, n_init=1, tol=1e-6, comm=COMM)
    est.fit(shard(X), sharded=True) if form == "sharded" else est.fit(X)
    assert_same_fit(est, ref)
    assert est.n_features_in_ == 4


@pytest.mark.mpi(min_size=1)
def test_tol_zero_and_max_iter_cap_equal_sklearn():
    X = blobs(n=1200, k=8, seed=3)
    init = X[:8]
    for kw in (dict(tol=0.0, max_iter=300), dict(tol=1e-4, max_iter=3), dict(tol=1e-1, max_iter=300)):
        ref = SKKMeans(8, init=init, n_init=1, **kw).fit(X)
        assert_same_fit(KMeans(8, init=init, n_init=1, comm=COMM, **kw).fit(X), ref)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("init", ["k-means++", "random"])
@pytest.mark.parametrize("seed", [0, 5, 11])
def test_random_inits_pick_sklearns_rows(init, seed):
    X = blobs(n=1000, k=6, seed=seed)
    w = np.random.RandomState(seed).uniform(0.5, 2.0, len(X))
    ref = SKKMeans(6, init=init, n_init=2, random_state=seed).fit(X, sample_weight=w)
    est = KMeans(6, init=init, n_init=2, random_state=seed, comm=COMM)
    est.fit(shard(X), sample_weight=shard(w), sharded=True)
    assert_same_fit(est, ref)
    # max_iter=1: one Lloyd step from the initial centres, so these are compared almost directly
    one = SKKMeans(6, init=init, n_init=1, random_state=seed, max_iter=1).fit(X)
    ours = KMeans(6, init=init, n_init=1, random_state=seed, max_iter=1, comm=COMM).fit(X)
    assert_same_fit(ours, one)


@pytest.mark.mpi(min_size=1)
def test_kmeans_plusplus_with_numpy_random_state():
    X = blobs(n=800, k=4, seed=4)
    ref = SKKMeans(4, random_state=np.random.RandomState(3)).fit(X)
    assert_same_fit(KMeans(4, random_state=np.random.RandomState(3), comm=COMM).fit(X), ref)


@pytest.mark.mpi(min_size=1)
def test_empty_cluster_relocation_equals_sklearn():
    X = blobs(n=900, k=3, seed=6)
    init = np.vstack([X[:3], [[1e3] * 4]])  # the far centre gets no row in the first iteration
    ref = SKKMeans(4, init=init, n_init=1).fit(X)
    assert_same_fit(KMeans(4, init=init, n_init=1, comm=COMM).fit(X), ref)


@pytest.mark.mpi(min_size=1)
def test_kmeans_parallel_is_rank_count_invariant_and_good():
    X = blobs(n=3000, d=6, k=8, seed=7)
    world = KMeans(8, init="k-means||", random_state=0, comm=COMM).fit(X)
    serial = KMeans(8, init="k-means||", random_state=0, comm="self").fit(X)
    np.testing.assert_allclose(world.cluster_centers_, serial.cluster_centers_, rtol=RTOL, atol=1e-12)
    assert world.n_iter_ == serial.n_iter_
    assert world.timing_["rounds"] == 5 and world.timing_["candidates"] >= 8
    ref = SKKMeans(8, random_state=0, n_init=5).fit(X)
    assert world.inertia_ <= ref.inertia_ * 1.01


@pytest.mark.mpi(min_size=1)
def test_h5_dataset_float32_and_weights(shared_dir):
    X = blobs(n=1100, k=5, seed=8, dtype=np.float32)
    w = np.random.RandomState(0).uniform(0.1, 3.0, len(X))
    path = shared_dir / "b.h5"
    if COMM.rank == 0:
        write_dataset(path, X, np.zeros(len(X)), sample_weight=w)
    COMM.Barrier()
    est = KMeans(5, init=X[:5], n_init=1, comm=COMM).fit(H5Dataset(path, sample_weight="sample_weight"))
    ref = SKKMeans(5, init=X[:5], n_init=1).fit(X, sample_weight=w.astype(np.float32))
    assert est.cluster_centers_.dtype == np.float32 == ref.cluster_centers_.dtype
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(est.inertia_, ref.inertia_, rtol=1e-4)
    assert (all_labels(est) == ref.labels_).mean() > 0.999
    assert est.shard_ == shard_range(len(X), COMM.rank, COMM.size)


@pytest.mark.mpi(min_size=1)
def test_predict_transform_score_fit_predict_are_sklearns():
    X = blobs(n=700, k=3, seed=9)
    ref = SKKMeans(3, init=X[:3], n_init=1).fit(X)
    est = KMeans(3, init=X[:3], n_init=1, comm=COMM)
    lab = est.fit_predict(X)
    np.testing.assert_array_equal(lab, ref.labels_)  # the whole data on every rank: every row's label
    assert est.shard_ == (0, len(X))
    np.testing.assert_array_equal(est.predict(X), ref.predict(X))
    np.testing.assert_allclose(est.transform(X), ref.transform(X), rtol=RTOL)
    np.testing.assert_allclose(est.score(X), ref.score(X), rtol=RTOL)
    np.testing.assert_allclose(
        KMeans(3, init=X[:3], n_init=1, comm=COMM).fit_transform(X), ref.transform(X), rtol=RTOL, atol=1e-12
    )
    sharded = KMeans(3, init=X[:3], n_init=1, comm=COMM)
    np.testing.assert_allclose(
        sharded.fit_transform(shard(X), sharded=True), shard(ref.transform(X)), rtol=RTOL, atol=1e-12
    )
    np.testing.assert_array_equal(sharded.labels_, shard(ref.labels_))


@pytest.mark.mpi(min_size=2)
def test_nan_on_one_rank_raises_on_every_rank():
    X = shard(blobs(n=400))
    if COMM.rank == COMM.size - 1:
        X = X.copy()
        X[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN") as info:
        KMeans(3, comm=COMM).fit(X, sharded=True)
    assert isinstance(info.value, InvalidData)
    with pytest.raises(ValueError, match="contains infinity"):
        KMeans(3, comm=COMM).fit(np.where(np.arange(400)[:, None] == 399, np.inf, blobs(n=400)))


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("which", ["X", "sample_weight"])
def test_whole_arrays_that_differ_between_ranks_are_refused_on_every_rank(which):
    # was: every rank kept its shard of its own array, and the model mixed the ranks' data (exit 0)
    X, w = blobs(n=300), np.ones(300)
    if COMM.rank == COMM.size - 1:
        if which == "X":
            X[299, 3] += 1e-9  # in the last rank's own shard: only the whole-array check can see it
        else:
            w[0] = 2.0  # outside the last rank's shard
    with pytest.raises(InvalidData, match=r"^X or sample_weight differs between ranks; every rank of comm must"):
        KMeans(3, random_state=0, n_init=1, comm=COMM).fit(X, sample_weight=w)
    np.testing.assert_allclose(  # the same arrays everywhere still fit, as scikit-learn
        KMeans(3, random_state=0, n_init=1, comm=COMM).fit(blobs(n=300)).cluster_centers_,
        SKKMeans(3, random_state=0, n_init=1, algorithm="lloyd").fit(blobs(n=300)).cluster_centers_,
        rtol=RTOL,
    )


@pytest.mark.mpi(min_size=1)
def test_fewer_rows_than_clusters_is_sklearns_error():
    X = blobs(n=5)
    with pytest.raises(ValueError, match=r"n_samples=5 should be >= n_clusters=6\.") as ref:
        SKKMeans(6).fit(X)
    with pytest.raises(ValueError, match=r"n_samples=5 should be >= n_clusters=6\.") as ours:
        KMeans(6, comm=COMM).fit(shard(X), sharded=True)
    assert str(ours.value) == str(ref.value)


@pytest.mark.mpi(min_size=2)
def test_rank_with_zero_rows():
    X = blobs(n=600, k=3, seed=10)
    mine = X if COMM.rank == 1 else X[:0]
    ref = SKKMeans(3, random_state=2).fit(X)
    est = KMeans(3, random_state=2, comm=COMM).fit(mine, sharded=True)
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=RTOL)
    np.testing.assert_allclose(est.inertia_, ref.inertia_, rtol=RTOL)
    assert est.n_iter_ == ref.n_iter_
    assert est.labels_.shape == (len(mine),)


@pytest.mark.mpi(min_size=1)
def test_one_cluster():
    X = blobs(n=300, seed=11)
    ref = SKKMeans(1, random_state=0).fit(X)
    assert_same_fit(KMeans(1, random_state=0, comm=COMM).fit(X), ref)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("init", ["k-means++", "random", "k-means||"])
def test_duplicates_and_more_clusters_than_distinct_points(init):
    X = np.repeat(np.array([[0.0, 1.0], [5.0, 5.0], [9.0, -2.0]]), 40, axis=0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        est = KMeans(5, init=init, random_state=0, comm=COMM).fit(X)
    msgs = [str(r.message) for r in rec if issubclass(r.category, ConvergenceWarning)]
    assert msgs == [
        "Number of distinct clusters (3) found smaller than n_clusters (5). Possibly due to duplicate points in X."
    ]
    assert 0.0 <= est.inertia_ < 1e-20  # the rows sit on their centres (up to the rounding of centring)
    if init != "k-means||":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = SKKMeans(5, init=init, random_state=0).fit(X)
        assert_same_fit(est, ref)
    # duplicates but enough distinct points: exact as well
    Y = np.vstack([X, blobs(n=200, d=2, k=3, seed=1)])
    ref = SKKMeans(4, random_state=1).fit(Y)
    assert_same_fit(KMeans(4, random_state=1, comm=COMM).fit(Y), ref)


@pytest.mark.mpi(min_size=1)
def test_bad_parameters_raise_sklearns_errors_everywhere():
    X = blobs(n=100)
    for kw in (dict(n_clusters=0), dict(algorithm="auto"), dict(init="kmeans||"), dict(oversampling_factor=0)):
        with pytest.raises(ValueError, match="parameter of KMeans must be"):
            KMeans(comm=COMM, **kw).fit(X)
    with pytest.raises(ValueError, match="does not match the number of clusters"):
        KMeans(3, init=X[:2], n_init=1, comm=COMM).fit(X)
    with pytest.raises(ValueError, match="callable init needs the whole data"):
        KMeans(3, init=lambda X, k, random_state: X[:k], comm=COMM).fit(shard(X), sharded=True)


@pytest.mark.mpi(min_size=1)
def test_callable_init_with_whole_data_equals_sklearn():
    X = blobs(n=500, k=3, seed=12)

    def pick(A, k, random_state):
        return A[random_state.choice(len(A), k, replace=False)]

    ref = SKKMeans(3, init=pick, n_init=2, random_state=4).fit(X)
    assert_same_fit(KMeans(3, init=pick, n_init=2, random_state=4, comm=COMM).fit(X), ref)


@pytest.mark.mpi(min_size=2)
def test_different_seeds_on_ranks_is_an_error():
    X = blobs(n=100)
    with pytest.raises(ValueError, match="random_state is in a different state on different ranks"):
        KMeans(3, random_state=COMM.rank, comm=COMM).fit(X)
    with pytest.raises(ValueError, match="init differs between ranks"):
        KMeans(3, init=X[COMM.rank : COMM.rank + 3], n_init=1, comm=COMM).fit(X)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("seed", [0, 3, 8])
@pytest.mark.parametrize("k", [1, 7, 30])
def test_kmeans_plusplus_centres_are_sklearns_rows(seed, k):
    from sklearn.cluster import kmeans_plusplus

    from hpcml.cluster import _init

    X = blobs(n=900, d=3, k=6, seed=seed)
    w = np.random.RandomState(seed + 1).uniform(0.0, 2.0, len(X))
    ref, idx = kmeans_plusplus(X, k, sample_weight=w, random_state=np.random.RandomState(seed))
    lo, hi = shard_range(len(X), COMM.rank, COMM.size)
    Xl = X[lo:hi]
    ours = _init.kmeans_plusplus(
        COMM, Xl, np.einsum("ij,ij->i", Xl, Xl), w[lo:hi], k, np.random.RandomState(seed), lo, len(X)
    )
    np.testing.assert_array_equal(ours, ref)  # the same rows, bit for bit
    assert len(set(idx.tolist())) == k


@pytest.mark.mpi(min_size=1)
def test_inside_hpcml_search_units_fit_alone_and_match_sklearn():
    from sklearn.model_selection import GridSearchCV

    import hpcml

    X = blobs(n=600, k=4, seed=13)
    grid = {"n_clusters": [2, 3, 4], "init": ["k-means++", "random"]}
    ours = hpcml.GridSearchCV(KMeans(random_state=0, n_init=2), grid, cv=3, comm=COMM).fit(X)
    ref = GridSearchCV(SKKMeans(random_state=0, n_init=2), grid, cv=3).fit(X)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], rtol=RTOL)
    assert ours.best_params_ == ref.best_params_
    assert ours.best_estimator_.comm is None  # the user's value again after the refit with comm="self"
    np.testing.assert_allclose(ours.best_estimator_.cluster_centers_, ref.best_estimator_.cluster_centers_, rtol=RTOL)
    assert len(ours.best_estimator_.labels_) == len(X)


@pytest.mark.mpi(min_size=1)
def test_dataframe_feature_names_and_copy_x_false_restore_the_data():
    import pandas as pd

    X = blobs(n=500, k=3, seed=14)
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)])
    ref = SKKMeans(3, random_state=1).fit(df)
    est = KMeans(3, random_state=1, comm=COMM).fit(df)
    assert_same_fit(est, ref)
    assert est.feature_names_in_.tolist() == ["f0", "f1", "f2", "f3"] == ref.feature_names_in_.tolist()
    np.testing.assert_array_equal(est.predict(df), ref.predict(df))
    mine = shard(X).copy()
    before = mine.copy()
    KMeans(3, random_state=1, copy_x=False, comm=COMM).fit(mine, sharded=True)
    np.testing.assert_allclose(mine, before, rtol=1e-12, atol=1e-12)  # centred in place, then restored


def sparse_blobs(n=700, d=6, k=4, seed=0, dtype=np.float64):
    """Non-negative blobs with about half the entries zero, as CSR."""
    import scipy.sparse as sp

    X = blobs(n=n, d=d, k=k, seed=seed, dtype=dtype)
    X[X < np.median(X)] = 0
    return sp.csr_matrix(X)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("form", ["whole", "sharded"])
@pytest.mark.parametrize("init", ["array", "k-means++", "random"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_equals_sklearn_sparse(form, init, dtype):
    X = sparse_blobs(seed=21, dtype=dtype)
    w = np.random.RandomState(2).uniform(0.5, 2.0, X.shape[0])
    start = X[:4].toarray() if init == "array" else init
    kw = dict(init=start, n_init=1 if init == "array" else 2, random_state=3, tol=1e-6)
    ref = SKKMeans(4, **kw).fit(X, sample_weight=w)
    est = KMeans(4, comm=COMM, **kw)
    est.fit(shard(X), sample_weight=shard(w), sharded=True) if form == "sharded" else est.fit(X, sample_weight=w)
    rtol = RTOL if dtype == np.float64 else 1e-5
    assert est.cluster_centers_.dtype == dtype == ref.cluster_centers_.dtype
    assert est.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(est.inertia_, ref.inertia_, rtol=rtol)
    np.testing.assert_array_equal(all_labels(est), ref.labels_)
    np.testing.assert_array_equal(est.predict(X), ref.predict(X))
    np.testing.assert_allclose(est.transform(X), ref.transform(X), rtol=rtol, atol=1e-6)
    np.testing.assert_allclose(est.score(X), ref.score(X), rtol=rtol)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("fmt", ["csc", "coo"])
def test_sparse_formats_and_relocation_equal_sklearn(fmt):
    X = sparse_blobs(n=500, seed=22)
    init = np.vstack([X[:3].toarray(), np.full((1, X.shape[1]), 1e3)])  # the far centre starts empty
    ref = SKKMeans(4, init=init, n_init=1).fit(X.asformat(fmt))
    est = KMeans(4, init=init, n_init=1, comm=COMM).fit(X.asformat(fmt))
    assert_same_fit(est, ref)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("sparse", [False, True])
def test_elkan_gives_lloyds_fit_and_round_trips(sparse):
    from sklearn.base import clone

    X = sparse_blobs(seed=23) if sparse else blobs(seed=23)
    ref = SKKMeans(4, algorithm="elkan", random_state=5).fit(X)
    est = KMeans(4, algorithm="elkan", random_state=5, comm=COMM).fit(X)
    assert est.get_params()["algorithm"] == clone(est).algorithm == "elkan" == est._algorithm
    assert est.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=1e-7)
    np.testing.assert_array_equal(est.labels_, ref.labels_)
    with pytest.warns(RuntimeWarning, match=r"^algorithm='elkan' doesn't make sense for a single cluster"):
        one = KMeans(1, algorithm="elkan", comm=COMM).fit(X)
    assert one._algorithm == "lloyd"


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("n_rows", [1, 3, 4, 5])
def test_tiny_whole_data_with_ranks_of_zero_or_one_row_is_sklearns_fit(n_rows):
    # at COMM.size >= n_rows some ranks hold one row or none; labels_ covers every row on every rank
    X = np.array([[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [1.0, 1.0], [3.0, 2.5]])[:n_rows]
    k = min(2, n_rows)
    init = np.array([[0.5, 0.5], [30.0, 30.0]])[:k]  # the second centre is empty in the first iteration
    w = np.array([3.0, 1.0, 1.0, 3.0, 0.5])[:n_rows]
    ref = SKKMeans(k, init=init, n_init=1).fit(X, sample_weight=w)
    est = KMeans(k, init=init, n_init=1, comm=COMM).fit(X, sample_weight=w)
    assert est.labels_.shape == (n_rows,)
    assert_same_fit(est, ref)


@pytest.mark.mpi(min_size=2)
def test_sparse_on_some_ranks_dense_on_others_is_refused_everywhere():
    X = shard(sparse_blobs(n=300, seed=24))
    mine = X if COMM.rank == 0 else X.toarray()
    with pytest.raises(InvalidData, match=r"^X is sparse on some ranks and dense on others"):
        KMeans(3, random_state=0, comm=COMM).fit(mine, sharded=True)


@pytest.mark.mpi(min_size=2)
def test_sparse_rank_with_zero_rows_equals_sklearn():
    X = sparse_blobs(n=400, seed=25)
    mine = X if COMM.rank == 1 else X[:0]
    ref = SKKMeans(4, random_state=6, n_init=2).fit(X)
    est = KMeans(4, random_state=6, n_init=2, comm=COMM).fit(mine, sharded=True)
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(est.inertia_, ref.inertia_, rtol=RTOL)
    assert est.n_iter_ == ref.n_iter_
    assert est.labels_.shape == (mine.shape[0],)
    if COMM.rank == 1:
        np.testing.assert_array_equal(est.labels_, ref.labels_)


@pytest.mark.mpi(min_size=1)
def test_scalar_and_array_like_sample_weight_equal_sklearn():
    # a scalar weight raised IndexError; an object with __array__ only raised TypeError (np.shape)
    from sklearn.utils.estimator_checks import _NotAnArray

    X = blobs(n=300, seed=26)
    ref = SKKMeans(3, random_state=0).fit(X, sample_weight=2.0)
    assert_same_fit(KMeans(3, random_state=0, comm=COMM).fit(X, sample_weight=2.0), ref)
    w = np.random.RandomState(1).uniform(0.5, 2.0, len(X))
    ref = SKKMeans(3, random_state=0).fit(X, sample_weight=w)
    assert_same_fit(KMeans(3, random_state=0, comm=COMM).fit(X, sample_weight=_NotAnArray(w)), ref)


def corrupt_csr(case):
    """A 300 x 6 CSR matrix (from :func:`sparse_blobs`) with one defect ``case`` in its arrays."""
    X = sparse_blobs(n=300, seed=27)
    if case == "nan":
        X.data[7] = np.nan
    elif case == "inf":
        X.data[7] = np.inf
    elif case == "indptr-start":
        X.indptr = X.indptr.copy()
        X.indptr[0] = 1
    elif case == "indptr-end":
        X.indptr = X.indptr.copy()
        X.indptr[-1] += 5
    elif case == "indptr-decreasing":
        X.indptr = X.indptr.copy()
        X.indptr[10], X.indptr[11] = X.indptr[11], X.indptr[10]
    elif case == "index-too-large":
        X.indices[5] = X.shape[1] + 1
    elif case == "index-negative":
        X.indices[5] = -1
    elif case == "int64-indices":  # refused by scikit-learn's KMeans (accept_large_sparse=False)
        X.indices, X.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    return X


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("case", ["nan", "inf", "indptr-start", "indptr-end", "int64-indices"])
def test_bad_sparse_x_is_sklearns_error_on_every_rank(case):
    X = corrupt_csr(case)
    with pytest.raises(ValueError) as theirs:
        SKKMeans(4, random_state=0, n_init=1).fit(corrupt_csr(case))
    with pytest.raises(ValueError) as ours:
        KMeans(4, random_state=0, n_init=1, comm=COMM).fit(X)
    assert str(ours.value) == str(theirs.value)
    assert COMM.allgather(str(ours.value)) == [str(theirs.value)] * COMM.size


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("index-too-large", "X is not a valid CSR matrix: indices must be < 6"),
        ("index-negative", "X is not a valid CSR matrix: indices must be >= 0"),
        ("indptr-decreasing", "X is not a valid CSR matrix: indptr must be a non-decreasing sequence"),
    ],
)
@pytest.mark.parametrize("form", ["whole", "sharded"])
def test_inconsistent_sparse_indices_are_one_clear_error_on_every_rank(case, message, form):
    # was: a segfault (an index outside the columns), heap corruption (a negative index) or a fit on garbage
    # with no error (a decreasing indptr); scikit-learn's own KMeans crashes on the first two (not run here)
    X = corrupt_csr(case)
    arrays = [a.copy() for a in (X.data, X.indices, X.indptr)]
    if form == "sharded":  # only the last rank's rows are bad: every rank raises the same error
        good = sparse_blobs(n=300, seed=27)
        X = X if COMM.rank == COMM.size - 1 else shard(good)
    with pytest.raises(InvalidData) as info:
        KMeans(4, random_state=0, n_init=1, comm=COMM).fit(X, sharded=form == "sharded")
    assert str(info.value) == message
    if form == "whole":  # the check never re-types or trims the caller's arrays
        for before, after in zip(arrays, (X.data, X.indices, X.indptr)):
            assert before.dtype == after.dtype and np.array_equal(before, after, equal_nan=True)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("case", ["unsorted-indices", "duplicate-entries"])
def test_valid_but_unusual_csr_equals_sklearn(case):
    X = sparse_blobs(n=300, seed=28)
    if case == "unsorted-indices":
        for row in range(X.shape[0]):
            lo, hi = X.indptr[row], X.indptr[row + 1]
            X.indices[lo:hi], X.data[lo:hi] = X.indices[lo:hi][::-1].copy(), X.data[lo:hi][::-1].copy()
        X.has_sorted_indices = False
    else:  # row 0's first two entries in one column (scipy sums them)
        lo = X.indptr[0]
        assert X.indptr[1] - lo >= 2
        X.indices[lo + 1] = X.indices[lo]
        X.has_sorted_indices = X.has_canonical_format = False
    canonical = X.copy()
    canonical.sum_duplicates()  # duplicates mean their sum (scipy); scikit-learn's row norms count each entry
    ref = SKKMeans(4, random_state=0, n_init=1).fit(canonical)
    assert_same_fit(KMeans(4, random_state=0, n_init=1, comm=COMM).fit(X), ref)

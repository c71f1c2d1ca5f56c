"""Multi-rank tests of hpcml.sgd; run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` (N = 1, 2, 4).

Every test uses the size of ``COMM_WORLD`` it is given, so each passes at any N.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI
from sklearn import linear_model as lm
from sklearn.datasets import load_breast_cancer, load_digits, make_classification, make_regression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hpcml.comm import idle_barrier
from hpcml.data.h5 import H5Dataset, write_dataset
from hpcml.sgd import GradientExchange, InvalidData, SGDClassifier, SGDRegressor
from hpcml.sgd.sampling import shard_range

_spec = importlib.util.spec_from_file_location(
    "sgd_reference", Path(__file__).resolve().parent.parent / "unit" / "test_sgd_reference.py"
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

COMM = MPI.COMM_WORLD
# N ranks may share fewer cores: BLAS threads would only fight each other.
threadpool_limits(1)
#: Few steps (an Allreduce per step is slow when ranks oversubscribe the cores) but sklearn-level accuracy.
CLF = dict(batch_size=128, eta0=0.5, alpha=1e-3, max_iter=20, tol=None)


def shared_scores(*jobs):
    """Run reference fits spread over the ranks (others sleep, not spin) and share the scores."""
    mine = {i: job() for i, job in enumerate(jobs) if i % COMM.size == COMM.rank}
    idle_barrier(COMM)
    merged = {}
    for part in COMM.allgather(mine):
        merged.update(part)
    return [merged[i] for i in range(len(jobs))]


def same_on_all_ranks(arr):
    arrs = COMM.allgather(np.asarray(arr))
    return all(np.array_equal(arrs[0], a) for a in arrs[1:])


@pytest.fixture
def shared_dir():
    path = COMM.bcast(tempfile.mkdtemp(prefix="hpcml-sgd-") if COMM.rank == 0 else None, root=0)
    yield Path(path)
    COMM.Barrier()
    if COMM.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("i", range(len(ref.REF_CASES)))
def test_global_sampling_is_rank_count_invariant(i):
    case = ref.REF_CASES[i]
    X, y = ref.make_case(case)
    world = ref.fit_hpcml(case, X, y, comm=COMM)
    serial = ref.fit_hpcml(case, X, y, comm="self")
    W, b, _ = ref.reference_for(case, X, y)
    assert np.allclose(world.coef_, serial.coef_, rtol=1e-10, atol=1e-12)
    assert np.allclose(world.intercept_, serial.intercept_, rtol=1e-10, atol=1e-12)
    assert np.allclose(np.atleast_2d(world.coef_), W, rtol=1e-10, atol=1e-12)
    assert np.allclose(world.intercept_, b, rtol=1e-10, atol=1e-12)
    assert same_on_all_ranks(world.coef_)
    assert world.timing_["ranks"] == COMM.size
    if COMM.size > 1:
        # the exchange really ran: one Allreduce per step
        assert world.timing_["allreduce_calls"] == world.t_ > 0


@pytest.mark.mpi(min_size=1)
def test_rank_invariance_with_early_stopping_and_schedule():
    X, y = make_classification(900, 10, n_informative=6, n_classes=3, random_state=2)
    kw = dict(
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=2,
        tol=1e-2,
        max_iter=30,
        learning_rate="cosine",
        warmup_steps=10,
        momentum=0.8,
        batch_size=50,
        eta0=0.5,
    )
    world = SGDClassifier(comm=COMM, **kw).fit(X, y)
    serial = SGDClassifier(comm="self", **kw).fit(X, y)
    assert world.n_iter_ == serial.n_iter_ < 30
    assert np.allclose(world.coef_, serial.coef_, rtol=1e-10, atol=1e-12)
    assert np.allclose(world.validation_loss_curve_, serial.validation_loss_curve_, rtol=1e-10)
    assert COMM.allgather(world.n_iter_) == [world.n_iter_] * COMM.size


def _standardized(X, y):
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0, stratify=y, test_size=0.3)
    sc = StandardScaler().fit(Xtr)
    return sc.transform(Xtr), sc.transform(Xte), ytr, yte


@pytest.mark.mpi(min_size=1)
@pytest.mark.parametrize("name", ["digits", "breast_cancer", "make_classification"])
def test_accuracy_matches_sklearn_at_this_rank_count(name):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
    elif name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
    else:
        X, y = make_classification(4000, 20, n_informative=10, random_state=0)
    Xtr, Xte, ytr, yte = _standardized(X, y)
    ours = SGDClassifier(comm=COMM, **CLF).fit(Xtr, ytr).score(Xte, yte)
    sk, lr = shared_scores(
        lambda: lm.SGDClassifier(loss="log_loss", random_state=0).fit(Xtr, ytr).score(Xte, yte),
        lambda: lm.LogisticRegression(max_iter=2000).fit(Xtr, ytr).score(Xte, yte),
    )
    assert ours >= sk - 0.01 and ours >= lr - 0.01, (COMM.size, ours, sk, lr)
    if name == "make_classification":
        # local sampling (batches depend on the rank count) is also close, and ranks agree
        local = SGDClassifier(comm=COMM, sampling="local", **CLF).fit(Xtr, ytr)
        assert local.score(Xte, yte) >= lr - 0.01, (COMM.size, local.score(Xte, yte), lr)
        assert same_on_all_ranks(local.coef_)
        assert local.history_[0]["samples"] == len(ytr)


@pytest.mark.mpi(min_size=1)
def test_regression_r2_matches_sklearn_at_this_rank_count():
    X, y = make_regression(3000, 20, noise=20.0, random_state=0)
    y = (y - y.mean()) / y.std()
    Xtr, Xte, ytr, yte = train_test_split(X, y, random_state=0)
    ours = SGDRegressor(comm=COMM, batch_size=128, eta0=0.1, max_iter=10, tol=None).fit(Xtr, ytr)
    (ref_r2,) = shared_scores(lambda: lm.SGDRegressor(random_state=0).fit(Xtr, ytr).score(Xte, yte))
    assert ours.score(Xte, yte) >= ref_r2 - 0.01
    assert same_on_all_ranks(ours.coef_)


@pytest.mark.mpi(min_size=1)
def test_h5_each_rank_reads_only_its_shard(shared_dir, monkeypatch):
    import hpcml.sgd._io as io

    X, y = make_classification(1003, 7, random_state=4)
    path = shared_dir / "train.h5"
    if COMM.rank == 0:
        write_dataset(path, X, y)
    COMM.Barrier()
    reads = []
    real = io.read_rows

    def spy(ds, start, stop):
        reads.append((start, stop))
        return real(ds, start, stop)

    monkeypatch.setattr(io, "read_rows", spy)
    est = SGDClassifier(comm=COMM, max_iter=3, tol=None).fit(H5Dataset(path))
    assert reads == [shard_range(1003, COMM.rank, COMM.size)]
    start, stop = reads[0]
    assert stop - start <= 1003 // COMM.size + 1
    serial = SGDClassifier(comm="self", max_iter=3, tol=None).fit(X, y)
    assert np.allclose(est.coef_, serial.coef_, rtol=1e-10, atol=1e-12)


@pytest.mark.mpi(min_size=1)
def test_classes_are_agreed_across_ranks_with_sharded_input():
    rank, size = COMM.rank, COMM.size
    rng = np.random.default_rng(rank)
    # each rank sees only two labels of its own; the union has size + 1 classes
    labels = np.array([f"c{rank}", f"c{rank + 1}"])
    yl = labels[rng.integers(0, 2, size=40)]
    yl[:2] = labels
    Xl = rng.normal(size=(40, 3)) + np.array([int(v[1:]) for v in yl])[:, None]
    est = SGDClassifier(comm=COMM, max_iter=2).fit(Xl, yl, sharded=True)
    expected = sorted(f"c{i}" for i in range(size + 1))
    assert est.classes_.tolist() == expected
    assert same_on_all_ranks(est.classes_)
    k = len(expected)
    assert est.coef_.shape == ((1 if k == 2 else k), 3)
    assert same_on_all_ranks(est.coef_)


@pytest.mark.mpi(min_size=1)
def test_bad_data_on_one_rank_raises_on_every_rank():
    rng = np.random.default_rng(COMM.rank)
    Xl = rng.normal(size=(20, 3))
    yl = rng.integers(0, 2, size=20)
    if COMM.rank == COMM.size - 1:
        Xl[5, 0] = np.inf
    with pytest.raises(InvalidData):
        SGDClassifier(comm=COMM).fit(Xl, yl, sharded=True)
    # the communicator is still usable afterwards (nobody hangs in a collective)
    assert COMM.allreduce(1) == COMM.size


@pytest.mark.mpi(min_size=1)
def test_gradient_exchange_sums_in_place():
    ex = GradientExchange(COMM, 4, 3, n_extra=2)
    assert ex.buf.size == 4 * 3 + 3 + 2 and ex.buf.flags.c_contiguous
    ex.gW[...] = COMM.rank + 1
    ex.gb[...] = 1.0
    ex.extra[...] = (COMM.rank, 2.0)
    buf_id = id(ex.buf)
    ex.allreduce()
    n = COMM.size
    assert np.all(ex.gW == n * (n + 1) / 2)
    assert np.all(ex.gb == n)
    assert ex.extra.tolist() == [n * (n - 1) / 2, 2.0 * n]
    assert id(ex.buf) == buf_id and ex.gW.base is ex.buf
    assert ex.calls == 1 and ex.comm_time >= 0.0


@pytest.mark.mpi(min_size=1)
def test_weighted_h5_fit_is_rank_count_invariant(shared_dir):
    X, y = make_classification(300, 5, random_state=5)
    w = np.random.default_rng(2).uniform(0.0, 2.0, size=len(y))
    path = shared_dir / "w.h5"
    if COMM.rank == 0:
        write_dataset(path, X, y, sample_weight=w)
    COMM.Barrier()
    kw = dict(max_iter=3, tol=None, batch_size=40)
    world = SGDClassifier(comm=COMM, **kw).fit(H5Dataset(str(path), sample_weight="sample_weight"))
    serial = SGDClassifier(comm="self", **kw).fit(X, y, sample_weight=w)
    unweighted = SGDClassifier(comm="self", **kw).fit(X, y)
    assert np.allclose(world.coef_, serial.coef_, rtol=1e-10, atol=1e-12)
    assert not np.allclose(world.coef_, unweighted.coef_)


@pytest.mark.mpi(min_size=2)
def test_different_params_on_ranks_raise_instead_of_hanging():
    X, y = make_classification(200, 4, random_state=0)
    est = SGDClassifier(comm=COMM, max_iter=2, batch_size=32 + COMM.rank)
    with pytest.raises(ValueError, match="batch_size"):
        est.fit(X, y)
    assert COMM.allreduce(1) == COMM.size


@pytest.mark.mpi(min_size=2)
def test_sharded_fit_with_an_empty_rank():
    X, y = make_classification(200, 4, random_state=0)
    parts = np.array_split(np.arange(200), COMM.size - 1)
    mine = np.array([], dtype=int) if COMM.rank == 0 else parts[COMM.rank - 1]
    kw = dict(max_iter=2, tol=None, batch_size=32)
    world = SGDClassifier(comm=COMM, **kw).fit(X[mine], y[mine], sharded=True)
    serial = SGDClassifier(comm="self", **kw).fit(X, y)
    assert np.allclose(world.coef_, serial.coef_, rtol=1e-10, atol=1e-12)


@pytest.mark.mpi(min_size=1)
def test_world_communicator_inside_hpcml_search_fits_serially():
    import hpcml

    X, y = make_classification(200, 4, random_state=0)
    grid = {"alpha": [1e-4, 1e-2]}
    kw = dict(max_iter=3, tol=None)
    a = hpcml.GridSearchCV(SGDClassifier(comm=COMM, **kw), grid, cv=3, comm=COMM).fit(X, y)
    b = hpcml.GridSearchCV(SGDClassifier(comm="self", **kw), grid, cv=3, comm=COMM).fit(X, y)
    np.testing.assert_array_equal(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"])


@pytest.mark.mpi
def test_random_state_instance_is_accepted_like_sklearn():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    a_rs, b_rs = np.random.RandomState(0), np.random.RandomState(0)
    a = SGDClassifier(random_state=a_rs, max_iter=5, tol=None).fit(X, y)
    b = SGDClassifier(random_state=b_rs, max_iter=5, tol=None).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    coefs = MPI.COMM_WORLD.allgather(a.coef_)
    for other in coefs:
        np.testing.assert_array_equal(other, coefs[0])
    ref = np.random.RandomState(0)
    ref.randint(np.iinfo(np.int32).max)
    assert a_rs.randint(10**6) == ref.randint(10**6)  # the user's instance advanced, on every rank

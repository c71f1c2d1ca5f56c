"""How objects and errors travel between ranks (hpcml.comm), on one process; the refit helpers.

The multi-rank behaviour is tested under mpiexec in tests/mpi and tests/launch/test_faults.py.
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.datasets import load_breast_cancer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from hpcml.comm import (
    HOST,
    ByValue,
    Origin,
    PackedException,
    agree,
    bcast_object,
    describe,
    is_agreed,
    mark_agreed,
    mark_origin,
    origin_of,
    resolve_comm,
)
from hpcml.cv.engine import comm_params, refit_alone, restore_comm_params, user_estimator
from hpcml.cv.fitting import FitRaised
from hpcml.errors import RemoteError, SerializationError


class TwoArgError(Exception):
    """pickle.dumps works, pickle.loads does not: __init__ does not take self.args back."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


def _travel(exc: BaseException, rank: int = 3) -> BaseException:
    """What another rank gets: the packed exception pickled, unpickled and unpacked."""
    return pickle.loads(pickle.dumps(PackedException(exc, rank, "node7"))).unpack()


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001
        return caught


def test_packed_exception_keeps_type_message_and_attributes():
    got = _travel(_raised(KeyError("missing")))
    assert type(got) is KeyError and got.args == ("missing",)
    origin = origin_of(got)
    assert (origin.rank, origin.host, origin.agreed) == (3, "node7", False)
    assert "KeyError" in origin.traceback and "_raised" in origin.traceback
    assert not hasattr(got, "hpcml_rank") and not hasattr(got, "remote_traceback")  # one typed record


def test_packed_exception_rebuilds_what_pickle_cannot():
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(TwoArgError(42, "cannot fit")))
    got = _travel(TwoArgError(42, "cannot fit"))
    assert type(got) is TwoArgError and str(got) == "42: cannot fit" and got.code == 42


def test_packed_exception_nested_in_fit_raised():
    got = _travel(FitRaised(TwoArgError(42, "cannot fit"), "Traceback: ..."))
    assert type(got) is FitRaised and got.tb == "Traceback: ..."
    assert type(got.original) is TwoArgError and got.original.code == 42


def test_packed_exception_local_class_and_lambda_via_cloudpickle():
    class LocalError(Exception):
        pass

    got = _travel(LocalError("here", lambda: 5))
    assert type(got).__name__ == "LocalError" and got.args[0] == "here" and got.args[1]() == 5


def test_packed_exception_drops_attributes_that_cannot_travel():
    exc = TwoArgError(1, "x")
    exc.lock = threading.Lock()
    got = _travel(exc)
    assert type(got) is TwoArgError and got.code == 1 and not hasattr(got, "lock")


def test_packed_exception_falls_back_to_remote_error():
    packed = PackedException(ValueError("boom"), 2, "n1")
    packed.data = b"not a pickle"  # e.g. a class the receiving rank cannot import
    got = packed.unpack()
    assert isinstance(got, RemoteError) and got.rank == 2 and got.host == "n1"
    assert got.message == "ValueError: boom" and "ValueError" in got.traceback


def test_remote_error_pickles():
    error = RemoteError(1, "h", "KeyError: 'x'", "Traceback ...")
    mark_agreed(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.rank, copy.host, copy.message, copy.traceback, str(copy)) == (
        1,
        "h",
        "KeyError: 'x'",
        "Traceback ...",
        str(error),
    )
    assert is_agreed(copy) and origin_of(copy) == Origin(agreed=True)


def test_serialization_error_is_a_pickling_error_and_travels():
    error = SerializationError("cannot send x")
    assert isinstance(error, pickle.PicklingError)
    assert type(_travel(error)) is SerializationError


def test_by_value_sends_lambdas():
    double = lambda z: 2 * z  # noqa: E731
    with pytest.raises(Exception):  # noqa: B017 - whatever plain pickle raises
        pickle.dumps(double)
    assert pickle.loads(pickle.dumps(ByValue(double)))(21) == 42
    with pytest.raises(TypeError):
        ByValue(threading.Lock())


def test_bcast_object_on_one_rank():
    assert bcast_object(MPI.COMM_SELF, [1, lambda: 2])[1]() == 2
    with pytest.raises(SerializationError, match="cannot send the lock.*cloudpickle failed"):
        bcast_object(MPI.COMM_SELF, threading.Lock(), what="the lock")


def _explode():
    raise ValueError("cannot rebuild")


class Unloadable:
    def __reduce__(self):
        return (_explode, ())


def test_bcast_object_unpickling_failure_after_sending_is_not_retried():
    with pytest.raises(SerializationError, match="cannot unpickle the thing on rank 0: ValueError: cannot rebuild"):
        bcast_object(MPI.COMM_SELF, Unloadable(), what="the thing")


def test_resolve_comm_strings():
    assert resolve_comm() is MPI.COMM_WORLD
    assert resolve_comm(None) is MPI.COMM_WORLD
    assert resolve_comm("world") is MPI.COMM_WORLD
    assert resolve_comm("self") is MPI.COMM_SELF
    assert resolve_comm(MPI.COMM_SELF) is MPI.COMM_SELF
    with pytest.raises(ValueError, match="'world', 'self'"):
        resolve_comm("SELF")
    with pytest.raises(TypeError, match="intracommunicator"):
        resolve_comm(3)


def test_describe():
    assert describe(TwoArgError(1, "x")) == "TwoArgError: 1: x"
    assert HOST


def test_refit_alone_fits_with_comm_self_and_restore_gives_the_users_values_back():
    from hpcml.sgd import SGDClassifier

    X, y = load_breast_cancer(return_X_y=True)
    base = Pipeline([("scale", StandardScaler()), ("clf", SGDClassifier(random_state=0, comm="world"))])
    params = {"clf__alpha": 1e-3}
    fitted, seconds = refit_alone(base, params, X, y, {})
    assert seconds >= 0 and fitted.get_params()["clf__comm"] == "self"
    user = comm_params(user_estimator(base, params))
    assert user == {"clf__comm": "world"}
    restore_comm_params(fitted, user)
    assert fitted.get_params()["clf__comm"] == "world" and fitted.get_params()["clf__alpha"] == 1e-3
    assert base.get_params()["clf__comm"] == "world"  # the user's estimator is untouched
    ref = Pipeline([("scale", StandardScaler()), ("clf", SGDClassifier(random_state=0, alpha=1e-3, comm="self"))])
    np.testing.assert_array_equal(fitted.predict(X), ref.fit(X, y).predict(X))


def test_refit_alone_serialises_comms_set_by_the_candidate():
    from hpcml.sgd import SGDClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    base = Pipeline([("clf", SGDClassifier(random_state=0, comm="self"))])
    # the best candidate replaces the step by one with the default comm (COMM_WORLD)
    fitted, _ = refit_alone(base, {"clf": SGDClassifier(random_state=0)}, X, y, {})
    assert fitted.get_params()["clf__comm"] == "self"
    restore_comm_params(fitted, comm_params(user_estimator(base, {"clf": SGDClassifier(random_state=0)})))
    assert fitted.get_params()["clf__comm"] is None


def test_origin_reads_the_attributes_older_code_sets():
    # runner.py / sgd CLI still set exc.agreed and exc.remote_traceback: merged into the typed record
    error = ValueError("x")
    error.agreed = True
    error.remote_traceback = "Traceback (legacy)"
    assert origin_of(error) == Origin(traceback="Traceback (legacy)", agreed=True)
    mark_origin(error, 2, "n2", "Traceback (new)")
    assert origin_of(error) == Origin(2, "n2", "Traceback (legacy)", True)  # the first traceback is kept
    fresh = KeyError("k")
    assert origin_of(fresh) == Origin() and not is_agreed(fresh)


def test_agree_on_one_rank_returns_or_raises_the_marked_error():
    comm = MPI.COMM_SELF
    assert agree(comm, lambda a, b=0: a + b, 2, b=3) == 5
    assert agree(comm, None) is None
    with pytest.raises(ZeroDivisionError) as got:
        agree(comm, lambda: 1 / 0)
    origin = origin_of(got.value)
    assert (origin.rank, origin.host, origin.agreed) == (0, HOST, True)
    assert "ZeroDivisionError" in origin.traceback

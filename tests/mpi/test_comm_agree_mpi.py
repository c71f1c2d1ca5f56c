"""hpcml.comm.agree under mpiexec: every rank returns, or every rank raises the first failure."""

from __future__ import annotations

import pytest
from mpi4py import MPI

from hpcml.comm import HOST, agree, origin_of

COMM = MPI.COMM_WORLD


class CodedError(Exception):
    def __init__(self, code, detail):  # does not take self.args back: rebuilt without __init__
        super().__init__(f"{code}: {detail}")
        self.code = code


@pytest.mark.mpi
def test_agree_returns_each_ranks_own_result():
    rank = COMM.Get_rank()
    assert agree(COMM, lambda: rank * 10) == rank * 10
    # ranks with nothing to do take part with work=None
    assert agree(COMM, (lambda: "read") if rank == 0 else None) == ("read" if rank == 0 else None)


@pytest.mark.mpi
def test_agree_raises_the_lowest_failing_ranks_error_everywhere():
    rank, size = COMM.Get_rank(), COMM.Get_size()
    failing = [size - 1] if size == 1 else [1, size - 1]  # two ranks fail; the lower one wins

    def work():
        if rank in failing:
            raise CodedError(rank, f"rank {rank} failed")
        return rank

    with pytest.raises(CodedError) as got:
        agree(COMM, work)
    first = failing[0]
    assert type(got.value) is CodedError
    assert str(got.value) == f"{first}: rank {first} failed" and got.value.code == first
    origin = origin_of(got.value)
    assert origin.rank == first and origin.agreed
    assert origin.host == COMM.bcast(HOST, root=first)
    assert "CodedError" in origin.traceback
    # the ranks are still in step: a collective after the agreement completes
    assert COMM.allreduce(1) == size

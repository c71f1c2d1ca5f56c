"""pytest-mpi: `mpiexec -n N python -m pytest --with-mpi tests/mpi` (N >= 2)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from hpcml.data.h5 import H5Dataset, write_dataset
from hpcml.data.shared import load_arrays


@pytest.fixture
def dataset(tmp_path_factory):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    path = None
    if comm.Get_rank() == 0:
        rng = np.random.default_rng(0)
        path = str(tmp_path_factory.mktemp("data") / "d.h5")
        write_dataset(path, rng.standard_normal((1001, 9)), rng.integers(0, 2, 1001))
    return H5Dataset(comm.bcast(path, root=0))


@pytest.mark.mpi(min_size=2)
def test_shared_equals_per_rank_and_one_copy(dataset):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    shared, info = load_arrays(dataset, comm)
    local, pinfo = load_arrays(dataset, comm, shared=False)
    assert info["method"] == "shared-window" and pinfo["method"] == "per-rank"
    assert np.array_equal(shared["X"], local["X"]) and np.array_equal(shared["y"], local["y"])
    assert not shared["X"].flags.writeable
    digest = hashlib.sha256(shared["X"].tobytes() + shared["y"].tobytes()).hexdigest()
    assert len(set(comm.allgather(digest))) == 1
    # one copy per node: only node leaders allocated, and the copies add up to the node count
    assert comm.allreduce(1 if info["local_bytes"] else 0) == info["nodes"] == info["copies"]
    shared.close()
    assert shared["X"] is None


@pytest.mark.mpi(min_size=2)
def test_missing_file_is_agreed_data_error(tmp_path):
    from mpi4py import MPI

    from hpcml.errors import DataError

    with pytest.raises(DataError, match="data file not found"):
        load_arrays(H5Dataset(str(tmp_path / "absent.h5")), MPI.COMM_WORLD)

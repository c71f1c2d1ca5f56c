"""load_arrays under `mpiexec -n 4`: one node-shared copy, identical bytes, fallback, clean exit."""

from __future__ import annotations

import json

import numpy as np
from helpers import run_mpi

from hpcml.data.h5 import write_dataset

SCRIPT = r"""
import hashlib, json, sys
from mpi4py import MPI
import numpy as np
from hpcml.data import H5Dataset, load_arrays
import hpcml.data.shared as shared

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
path, mode = sys.argv[1], sys.argv[2]
ds = H5Dataset(path, groups="groups", sample_weight="sample_weight")

def digest(arrays):
    h = hashlib.sha256()
    for role in ("X", "y", "groups", "sample_weight"):
        h.update(np.ascontiguousarray(arrays[role]).tobytes())
    return h.hexdigest()

report = {}
arrays, info = load_arrays(ds, comm)
per_rank, pinfo = load_arrays(ds, comm, shared=False)
report["info"] = info
report["per_rank_info"] = pinfo
report["equal"] = all(np.array_equal(arrays[r], per_rank[r]) for r in arrays)
report["dtypes_equal"] = all(arrays[r].dtype == per_rank[r].dtype for r in arrays)
report["digests"] = comm.gather(digest(arrays), root=0)
report["writeable"] = comm.allreduce(int(any(a.flags.writeable for a in arrays.values())))
try:
    arrays["X"][0, 0] = 1.0
    report["write_refused"] = False
except ValueError:
    report["write_refused"] = True
report["write_refused"] = comm.allreduce(int(report["write_refused"])) == comm.Get_size()

# One copy per node: a byte written through the window by the node's reader is
# seen by every other rank in its own X.
win = arrays.window
buf, _ = win.Shared_query(0)
raw = np.frombuffer(buf, dtype=arrays["X"].dtype, count=1)
original = float(arrays["X"][0, 0])
win.Lock_all(MPI.MODE_NOCHECK)
comm.Barrier()
if arrays.node.Get_rank() == 0:
    raw.flags.writeable = True
    raw[0] = 12345.0
win.Sync()
comm.Barrier()
win.Sync()
report["sentinel_seen"] = comm.allreduce(int(arrays["X"][0, 0] == 12345.0))
comm.Barrier()
if arrays.node.Get_rank() == 0:
    raw[0] = original
win.Sync()
comm.Barrier()
win.Unlock_all()
del raw, buf

# Collective fallback: the (collective) allocation fails on rank 1 only; every rank must read per-rank.
real = shared._allocate_window
def flaky(node, nbytes):
    win = real(node, nbytes)
    if rank == 1:
        raise RuntimeError("simulated: no shared windows here")
    return win
shared._allocate_window = flaky
fallback, finfo = load_arrays(ds, comm)
shared._allocate_window = real
report["fallback_info"] = finfo
report["fallback_equal"] = all(np.array_equal(fallback[r], per_rank[r]) for r in fallback)

sparse_arrays, sinfo = load_arrays(H5Dataset(sys.argv[3]), comm)
report["sparse_info"] = sinfo
report["sparse_nnz"] = int(sparse_arrays["X"].nnz)

if mode == "close":
    arrays.close()
    report["closed"] = arrays.window is None and arrays["X"] is None
if rank == 0:
    print(json.dumps(report))
"""


def _setup(tmp_path):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((3001, 17)).astype(np.float32)
    y = rng.integers(0, 3, 3001)
    write_dataset(tmp_path / "d.h5", X, y, groups=np.arange(3001) // 7, sample_weight=rng.random(3001))
    write_dataset(tmp_path / "s.h5", sp.random(100, 20, density=0.1, format="csr", random_state=0), np.zeros(100))
    (tmp_path / "load.py").write_text(SCRIPT)
    return X


def _check(report, X, n):
    info = report["info"]
    assert info["method"] == "shared-window", info
    assert info["nodes"] == 1 and info["copies"] == 1 and info["ranks_on_node"] == n
    assert info["local_bytes"] == info["bytes"] >= X.nbytes  # rank 0 holds the node's only copy
    assert report["per_rank_info"]["method"] == "per-rank" and report["per_rank_info"]["copies"] == n
    assert report["equal"] and report["dtypes_equal"]
    assert len(set(report["digests"])) == 1 and len(report["digests"]) == n
    assert report["writeable"] == 0 and report["write_refused"]
    assert report["sentinel_seen"] == n
    assert report["fallback_info"]["method"] == "per-rank"
    assert "simulated: no shared windows here" in report["fallback_info"]["reason"]
    assert report["fallback_equal"]
    assert report["sparse_info"]["method"] == "per-rank" and "sparse" in report["sparse_info"]["reason"]
    assert report["sparse_nnz"] == 200


def test_shared_window_load_with_close(tmp_path):
    X = _setup(tmp_path)
    res = run_mpi(4, [str(tmp_path / "load.py"), str(tmp_path / "d.h5"), "close", str(tmp_path / "s.h5")], timeout=40)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    _check(report, X, 4)
    assert report["closed"]


def test_shared_window_load_without_close_exits_cleanly(tmp_path):
    X = _setup(tmp_path)
    res = run_mpi(
        3, [str(tmp_path / "load.py"), str(tmp_path / "d.h5"), "keep", str(tmp_path / "s.h5")], timeout=40
    )  # a hang at MPI_Finalize would time out here
    assert res.returncode == 0, res.stderr
    _check(json.loads(res.stdout), X, 3)


def test_env_forces_per_rank_and_nan_y_is_one_error_line(tmp_path):
    X = np.ones((6, 2))
    write_dataset(tmp_path / "ok.h5", X, np.arange(6))
    write_dataset(tmp_path / "nan.h5", X, np.array([0, 1, np.nan, 1, 0, 1]))
    script = tmp_path / "cv_load.py"
    script.write_text(
        "import sys, json\n"
        "from mpi4py import MPI\n"
        "from hpcml.comm import run_guarded\n"
        "from hpcml.data import H5Dataset, load_arrays\n"
        "def main():\n"
        "    arrays, info = load_arrays(H5Dataset(sys.argv[1]), MPI.COMM_WORLD)\n"
        "    if MPI.COMM_WORLD.rank == 0:\n"
        "        print(json.dumps(info))\n"
        "    return 0\n"
        "run_guarded(main)\n"
    )
    res = run_mpi(2, [str(script), str(tmp_path / "ok.h5")], timeout=60, env={"HPCML_SHARED_MEMORY": "0"})
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["method"] == "per-rank" and "HPCML_SHARED_MEMORY" in info["reason"]
    res = run_mpi(2, [str(script), str(tmp_path / "nan.h5")], timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"hpcml: error: {tmp_path / 'nan.h5'}: y 'y' has 1 NaN/inf value(s) (first at row 2)"
    ]

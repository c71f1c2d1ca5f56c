"""Every ``HPCML_*`` environment variable, by name, in one place (numpy-free, no side effects).

Python code reads the variables through these constants; the Slurm recipes in
``slurm/`` read theirs in shell (listed here so that one file names them all).

=============================  ==========================================================================
Read by hpcml (Python)
=============================  ==========================================================================
``HPCML_FOLD_COPIES``          ``auto`` / ``rank`` / ``node``: how ``hpcml.cv`` materialises fold rows
                               (:mod:`hpcml.cv.folds`)
``HPCML_DISPATCH``             ``auto`` / ``flat`` / ``hierarchical``: how rank 0 hands out units; wins over
                               ``[run] dispatch`` (:mod:`hpcml.cv.hierarchy`)
``HPCML_SHARED_MEMORY``        ``0`` turns off node-shared loading of X and y (:mod:`hpcml.data.shared`)
``HPCML_INJECT_FAULT``         ``POINT:RANK[:COUNT][:kill]``: raise (or die of SIGKILL) at a named point,
                               for fault tests only (:mod:`hpcml._faults`)
``HPCML_SHM_DIR``              tests only: the tmpfs folder of node-shared fold files instead of
                               ``/dev/shm`` (:mod:`hpcml.cv.cow`), so that a test sees what its run left
``HPCML_READY_FILE``           tests only: when set, every process creates ``<value>.<pid>`` once its
                               stop-signal handlers are installed (:mod:`hpcml.signals`), so that a test
                               waits for that state instead of sleeping before it sends a signal
``HPCML_PREFIX_CACHE_BYTES``   per-rank byte budget of the pipeline-prefix cache (:mod:`hpcml.cv.prefix`)
``HPCML_COW_FOLDS``            ``0`` turns off copy-on-write fold views (:mod:`hpcml.cv.cow`)
``HPCML_DATA_LOAD``            ``auto`` / ``read`` / ``broadcast``: how node leaders get the data
                               (:mod:`hpcml.data.shared`)
``HPCML_STARTUP_FILES``        ``1``: count the files each rank opens while starting (:mod:`hpcml.startup`)
``HPCML_STAGE_ENV``,           ``python -m hpcml.stage`` and the recipes: the environment to stage once per
``HPCML_STAGE_DIR``,           node, where to unpack it, whether to keep it (:mod:`hpcml.stage`)
``HPCML_STAGE_KEEP``
=============================  ==========================================================================

=============================  ==========================================================================
Read by the Slurm recipes (shell)
=============================  ==========================================================================
``HPCML_PYTHON``               Python of the job (default ``python3``)
``HPCML_LAUNCHER``             ``srun`` or ``mpiexec``
``HPCML_MPIEXEC``              the ``mpiexec`` to use with ``HPCML_LAUNCHER=mpiexec``
``HPCML_SRUN_MPI``             ``srun --mpi=`` plugin
``HPCML_MAX_RESTARTS``         cv-long.sbatch: most jobs in a resubmission chain
``HPCML_RESTART``              cv-long.sbatch: this job's place in the chain (set by the chain)
``HPCML_PREV_UNITS``           cv-long.sbatch: units journaled when the previous job ended (set by the chain)
``HPCML_NO_PROGRESS``          cv-long.sbatch: jobs without a new unit before the chain gives up
``HPCML_SIGNAL_DELAY``         cv-long.sbatch: seconds to wait for the run after the warning signal
``HPCML_SBATCH_OPTS``          cv-long.sbatch: extra options of the successor's ``sbatch``
``HPCML_SLURM_SCRIPT``         cv-long.sbatch: the script the successor runs
``HPCML_ARRAY_THROTTLE``       array.sbatch: most array tasks at once
``HPCML_SLURM_DIR``,           slurm/local-cluster.sh: state folder, port, CPUs and start-up timeout of
``HPCML_SLURM_PORT``,          the local test cluster
``HPCML_SLURM_CPUS``,
``HPCML_SLURM_TIMEOUT``
=============================  ==========================================================================
"""

from __future__ import annotations

FOLD_COPIES = "HPCML_FOLD_COPIES"
SHARED_MEMORY = "HPCML_SHARED_MEMORY"
INJECT_FAULT = "HPCML_INJECT_FAULT"
READY_FILE = "HPCML_READY_FILE"
DISPATCH = "HPCML_DISPATCH"

#: The variables read by Python code (the recipes' are listed in the module docstring).
PYTHON_VARIABLES = (FOLD_COPIES, SHARED_MEMORY, INJECT_FAULT, READY_FILE, DISPATCH)

#: Variables whose value is one of a few words (compared stripped and lower-cased, as their readers do).
CHOICES = {
    FOLD_COPIES: ("auto", "rank", "node"),
    DISPATCH: ("auto", "flat", "hierarchical"),
    "HPCML_DATA_LOAD": ("auto", "read", "broadcast"),
    "HPCML_COW_FOLDS": ("0", "1", "false", "true", "no", "yes", "off", "on"),
}


def check_values(environ: dict[str, str] | None = None) -> None:
    """Refuse a malformed value of the variables above before anything runs (a usage error, exit 2).

    The readers raise deep inside a run (a traceback per rank) or ignore the
    value; the command-line entry points call this first.  Unset or empty
    variables are fine.

    Parameters
    ----------
    environ : dict, optional
        The environment to check (default ``os.environ``).

    Raises
    ------
    hpcml.errors.UsageError
        Naming the variable, its value and what it accepts.
    """
    import os

    from hpcml.errors import UsageError

    environ = os.environ if environ is None else environ
    for name, allowed in CHOICES.items():
        value = environ.get(name, "").strip().lower()
        if value and value not in allowed:
            raise UsageError(f"{name}={environ[name]!r}: expected one of {', '.join(allowed)}")
    budget = environ.get("HPCML_PREFIX_CACHE_BYTES", "").strip()
    if budget:
        try:
            ok = float(budget) >= 0
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"HPCML_PREFIX_CACHE_BYTES={budget!r}: expected a number of bytes >= 0")

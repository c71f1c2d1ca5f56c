"""Stage the Python environment once per node to node-local storage (against the import storm).

Run by the sbatch recipes when ``HPCML_STAGE_ENV`` is set, on the batch node only::

    PYTHON=$("$PYTHON" -m hpcml.stage)            # stage, print the staged interpreter
    "$PYTHON" -m hpcml.stage --clean               # remove the staged copies (at the end)

Thousands of interpreters importing NumPy, SciPy and scikit-learn from a parallel file
system open and stat the same ~4,000 files each, and start-up takes minutes. This packs the
environment once (a tar of the venv or conda env, plus hpcml's source when it is an
editable install), sends it to every node of the allocation with ``sbcast`` (Slurm's tree
fan-out: one copy per node), unpacks it there with one task per node, checks that the staged
interpreter imports hpcml on every node, and prints its path. Every rank then imports from
node-local storage. Only the standard library is imported here, so the batch node's own
start-up stays small.

The base interpreter a venv points at (``pyvenv.cfg`` ``home``) and its standard library are
not copied: on most clusters they are on the node image. Where they come from a shared file
system too, stage a self-contained environment (a conda-pack'ed env, or a venv made with
``--copies`` from a relocatable Python) by naming its directory in ``HPCML_STAGE_ENV``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

#: ``HPCML_STAGE_ENV`` values that mean "stage the running interpreter's environment".
_SELF = {"1", "yes", "true", "auto"}


def environment(value: str | None) -> Path:
    """The environment directory to stage: ``sys.prefix`` or the directory named."""
    env = Path(sys.prefix if value is None or value.lower() in _SELF else value).resolve()
    if not (env / "bin" / "python").exists():
        raise ValueError(f"HPCML_STAGE_ENV: {env} has no bin/python (name a venv or conda env directory)")
    return env


def destination(job_id: str) -> Path:
    """The node-local folder the environment is unpacked into (same path on every node)."""
    parent = os.environ.get("HPCML_STAGE_DIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(parent) / f"hpcml-env-{job_id}"


def _no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name.split("/") else info


def pack(env: Path, dest: Path, tarball: Path) -> Path:
    """Write ``tarball`` holding ``env`` (and hpcml's source if it lives outside ``env``).

    Returns the path the staged interpreter will have once unpacked under ``dest``.
    """
    import hpcml

    source = Path(hpcml.__path__[0]).resolve()
    with tarfile.open(tarball, "w") as tar:
        tar.add(env, arcname=env.name, filter=_no_cache)
        if env not in source.parents:
            # Editable install: the source goes to dest/src, put on sys.path by a .pth file
            # that sorts before setuptools' editable hook (its finder comes after path entries).
            tar.add(source, arcname="src/hpcml", filter=_no_cache)
            site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
            with tempfile.NamedTemporaryFile("w", suffix=".pth", delete=False) as pth:
                pth.write(f"{dest / 'src'}\n")
            tar.add(pth.name, arcname=f"{env.name}/{site.relative_to(env)}/00-hpcml-stage.pth")
            os.unlink(pth.name)
    return dest / env.name / "bin" / "python"


def _per_node(nodes: int, *command: str) -> None:
    """Run ``command`` once on every node of the allocation (``srun``, one task per node)."""
    launch = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--cpus-per-task=1"]
    subprocess.run([*launch, "--mpi=none", *command], check=True, stdout=sys.stderr)


def stage(env: Path, job_id: str, nodes: int) -> Path:
    """Pack, broadcast and unpack ``env`` on every node; return the staged interpreter."""
    t0 = time.monotonic()
    dest = destination(job_id)
    with tempfile.TemporaryDirectory(prefix="hpcml-stage-") as tmp:
        tarball = Path(tmp) / "env.tar"
        python = pack(env, dest, tarball)
        if shutil.which("sbcast"):
            # One transfer per node along Slurm's tree; --force replaces a leftover of this job id.
            subprocess.run(["sbcast", "--force", "--compress", str(tarball), f"{dest}.tar"], check=True)
            _per_node(nodes, "sh", "-c", f"mkdir -p '{dest}' && tar -C '{dest}' -xf '{dest}.tar' && rm -f '{dest}.tar'")
        else:  # each node reads the tarball from the (shared) temporary folder once
            _per_node(nodes, "sh", "-c", f"mkdir -p '{dest}' && tar -C '{dest}' -xf '{tarball}'")
    check = "import hpcml, socket, sys; print('hpcml-stage:', socket.gethostname(), sys.prefix, hpcml.__path__[0])"
    _per_node(nodes, str(python), "-c", check)
    print(f"hpcml-stage: staged {env} to {dest} on {nodes} node(s) in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return python


def main(argv: list[str] | None = None) -> int:
    """Command line: stage (print the staged interpreter) or ``--clean``."""
    parser = argparse.ArgumentParser(prog="python -m hpcml.stage", description=__doc__.splitlines()[0])
    parser.add_argument("--env", help="environment directory (default: HPCML_STAGE_ENV, else this interpreter's)")
    parser.add_argument("--clean", action="store_true", help="remove the staged copies from every node")
    args = parser.parse_args(argv)
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        print("hpcml: error: hpcml.stage needs a Slurm allocation (SLURM_JOB_ID is not set)", file=sys.stderr)
        return 2
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    try:
        if args.clean:
            _per_node(nodes, "rm", "-rf", str(destination(job_id)))
            return 0
        print(stage(environment(args.env or os.environ.get("HPCML_STAGE_ENV")), job_id, nodes))
    except ValueError as exc:
        print(f"hpcml: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"hpcml: error: staging failed: {' '.join(map(str, exc.cmd))} exited {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

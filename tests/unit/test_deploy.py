"""The container and Kubernetes recipes in deploy/, checked statically.

No container daemon or image registry is reachable where the tests run, so the images are not
built here (docs/deploy.md says so). What can be checked is: the MPIJob manifest validates against
the MPIJob v2beta1 schema (and the schema itself rejects broken manifests), the manifest's pieces
agree with the image (user, ssh port, sshd config path, rank count), its command is the one the docs
give, and both images install hpcml the way CI and the README do.
"""

from __future__ import annotations

import copy
import json
import re
import shlex

import pytest
import yaml
from helpers import ROOT
from jsonschema import Draft202012Validator

DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "k8s" / "mpijob.yaml"
SCHEMA = DEPLOY / "k8s" / "mpijob-v2beta1.schema.json"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
APPTAINER = DEPLOY / "apptainer" / "hpcml.def"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _container(manifest: dict, role: str) -> dict:
    (container,) = manifest["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]["containers"]
    return container


def _readme_extras() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(r'pip install -e "\.\[([^\]]*)\]" && mpiexec', readme).group(1)


def test_manifest_validates_against_the_mpijob_schema(manifest: dict, validator: Draft202012Validator) -> None:
    errors = sorted(validator.iter_errors(manifest), key=str)
    assert errors == [], "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "mpiImplementation"), "mpich"),  # enum is case-sensitive
        (("spec", "launcherCreationPolicy"), "WhenReady"),
        (("spec", "slotsPerWorker"), 0),
        (("spec", "runPolicy", "cleanPodPolicy"), "Always"),
        (("spec", "slotPerWorker"), 8),  # a misspelt field
        (("spec", "mpiReplicaSpecs", "Launcher", "replicas"), 2),
        (("apiVersion",), "kubeflow.org/v1"),
    ],
)
def test_schema_rejects_broken_manifests(manifest: dict, validator: Draft202012Validator, path, value) -> None:
    broken = copy.deepcopy(manifest)
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert not validator.is_valid(broken), f"{'.'.join(path)} = {value!r} was accepted"


def test_schema_requires_a_launcher(manifest: dict, validator: Draft202012Validator) -> None:
    broken = copy.deepcopy(manifest)
    del broken["spec"]["mpiReplicaSpecs"]["Launcher"]
    assert not validator.is_valid(broken)


def test_manifest_command_is_the_documented_one(manifest: dict) -> None:
    launcher = _container(manifest, "Launcher")
    command = shlex.join(launcher["command"] + launcher["args"])
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert command in docs, f"docs/deploy.md does not give the manifest's command: {command}"
    argv = launcher["args"]
    assert argv[argv.index("-m") + 1] == "hpcml.cv"
    # -n ranks = worker pods x slots per worker (the launcher does not run ranks).
    spec = manifest["spec"]
    assert spec["runLauncherAsWorker"] is False
    assert int(argv[argv.index("-n") + 1]) == spec["slotsPerWorker"] * spec["mpiReplicaSpecs"]["Worker"]["replicas"]


def test_manifest_agrees_with_the_image(manifest: dict) -> None:
    spec = manifest["spec"]
    assert spec["mpiImplementation"] == "MPICH"  # the image's MPI (the `mpich` extra)
    assert spec["launcherCreationPolicy"] == "WaitForWorkersReady"
    dockerfile = DOCKERFILE.read_text()
    user = re.search(r"^USER (\S+)$", dockerfile, re.M).group(1)
    assert user != "root"
    assert spec["sshAuthMountPath"] == f"/home/{user}/.ssh"
    worker = _container(manifest, "Worker")
    sshd_config = worker["args"][worker["args"].index("-f") + 1]
    assert f"deploy/docker/sshd_config {sshd_config}" in dockerfile
    port = int(re.search(r"^Port (\d+)$", (DEPLOY / "docker" / "sshd_config").read_text(), re.M).group(1))
    assert worker["readinessProbe"]["tcpSocket"]["port"] == port
    assert f"Port {port}" in dockerfile  # the client side (ssh_config) uses the same port
    for role in ("Launcher", "Worker"):
        security = manifest["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]["securityContext"]
        assert security["runAsUser"] == int(re.search(r"--uid (\d+)", dockerfile).group(1))


def test_workers_get_a_memory_backed_dev_shm(manifest: dict) -> None:
    pod = manifest["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _container(manifest, "Worker")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_dockerfile_installs_like_ci_and_the_readme() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r"python3 -m venv (\S+)", dockerfile)
    install = re.search(r'pip install --no-cache-dir "/src\[([^\]]*)\]"', dockerfile)
    assert install and install.group(1) == _readme_extras()
    assert (ROOT / ".ci" / "run").read_text().count(f'pip install -e ".[{_readme_extras()},test]"') == 1
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+) \S+$", dockerfile, re.M):
        assert (ROOT / source).exists(), f"COPY source {source} missing"
    assert re.search(r"^FROM \S+bookworm", dockerfile, re.M), "Debian base image"


def test_apptainer_definition_installs_like_ci() -> None:
    definition = APPTAINER.read_text()
    sections = set(re.findall(r"^%(\w+)", definition, re.M))
    assert {"arguments", "files", "post", "environment", "runscript", "test"} <= sections
    default = re.search(r"^\s+HPCML_EXTRAS=(\S*)$", definition, re.M).group(1)
    assert default == _readme_extras()
    assert '"/src[{{ HPCML_EXTRAS }}]"' in definition
    assert re.search(r"^Bootstrap: docker\nFrom: \S+bookworm$", definition, re.M)

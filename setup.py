"""hpcml: MPI-native cross-validation, hyperparameter search and synchronous SGD."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "hpcml" / "_version.py").read_text()).group(1)

#: Runtime requirements; environment.yml must list each of them (tests/test_packaging.py).
INSTALL_REQUIRES = [
    "mpi4py>=3.1",
    "numpy>=1.23",
    "scipy>=1.9",
    "scikit-learn>=1.4",
    "h5py>=3.7",
    "threadpoolctl>=3.1",
    # Objects plain pickle cannot send between ranks (lambdas in a grid, local classes).
    "cloudpickle>=2",
    "tomli>=1.1; python_version < '3.11'",
]

EXTRAS_REQUIRE = {
    # MPI for laptops and CI; on a cluster keep the system MPI and skip this extra.
    "mpich": ["mpich"],
    "test": ["pytest>=7", "pytest-mpi>=0.6", "pytest-timeout>=2", "psutil>=5", "matplotlib>=3.5", "pandas>=1.5", "pyyaml>=6", "jsonschema>=4.18"],
    "plot": ["matplotlib>=3.5"],
    # bench_kmeans.py's peers: dask-ml on a LocalCluster, daal4py (shipped in scikit-learn-intelex, x86-64 wheels).
    "bench": ["matplotlib>=3.5", "psutil>=5", "dask[distributed]>=2024.1", "dask-ml>=2024.4",
              "scikit-learn-intelex>=2025.0; platform_machine == 'x86_64'"],
    "dev": ["ruff==0.17.6"],  # the version CI lints and formats with (.ci/run)
}

setup(
    name="hpcml",
    version=VERSION,
    description="MPI-native cross-validation, hyperparameter search and synchronous SGD for scikit-learn",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["hpcml", "hpcml.*"]),
    package_data={"hpcml": ["py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: System :: Distributed Computing",
    ],
)

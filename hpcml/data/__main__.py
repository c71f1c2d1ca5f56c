"""``python -m hpcml.data``: convert, synth, info (see :mod:`hpcml.data.cli`)."""

from hpcml.comm import run_guarded
from hpcml.data.cli import main

if __name__ == "__main__":
    run_guarded(main)

"""Single source of hpcml's version string."""

__version__ = "0.1.0"

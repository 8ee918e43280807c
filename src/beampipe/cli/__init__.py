"""The ``beampipe`` command (``beampipe.cli:app``): :mod:`beampipe.cli.run` runs a pipeline in
the foreground; :mod:`beampipe.cli.manage` holds the clients of the pipeline manager."""

from beampipe.cli import run  # registers validate, run and record first, for --help

# isort: split
from beampipe.cli import manage
from beampipe.cli.app import app

__all__ = ["app", "manage", "run"]

"""``python -m beampipe`` is the ``beampipe`` command."""

from beampipe.cli import app

app(prog_name="beampipe")

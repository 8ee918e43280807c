"""A scientist's worker module with a typo in an import (for use-own-module-import-error.yaml)."""

from beampipe import Wroker


class Deglitch(Wroker):
    """Removes single-point glitches from mu(E)."""

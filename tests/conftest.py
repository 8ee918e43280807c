"""Shared fixtures: running the ``beampipe`` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "xas-p65"


def beampipe(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run ``python -m beampipe ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "beampipe", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def run_beampipe():
    return beampipe

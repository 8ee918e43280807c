"""Shared fixtures: running the ``beampipe`` command as a user would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).parent / "configs"
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


def nxcheck(path: Path, *args: str) -> tuple[int, str]:
    """Run nexusformat's ``nxcheck``; (total number of errors, output without colours)."""
    exe = Path(sys.executable).with_name("nxcheck")
    command = [str(exe)] if exe.exists() else [shutil.which("nxcheck") or "nxcheck"]
    done = subprocess.run([*command, *args, str(path)], capture_output=True, text=True, timeout=300)
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    m = re.search(r"Total number of errors: (\d+)", text)
    assert m, f"no error count in nxcheck output:\n{text}"
    return int(m[1]), text


@pytest.fixture
def testnodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bp_testnodes`` (see tests/configs) importable from a temporary directory."""
    shutil.copy(CONFIGS / "bp_testnodes.py", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("bp_testnodes", None)
    yield
    sys.modules.pop("bp_testnodes", None)

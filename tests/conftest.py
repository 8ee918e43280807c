"""Shared fixtures: running the ``beampipe`` command as a user would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
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


NODES = Path(__file__).parent / "nodes"


class Recorder:
    """A launcher observer that keeps what it is told."""

    def __init__(self) -> None:
        self.stream_ends: list[tuple[str, int, dict]] = []
        self.failures: list[str] = []

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        pass

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        self.stream_ends.append((node, replica, report))

    def failure(self, text: str) -> None:
        self.failures.append(text)


def run_pipeline(folder: Path, text: str, **launcher: object):
    """Write ``text`` as ``folder/pipeline.yaml`` next to a copy of ``tests/nodes/flownodes.py``
    and run it with the local launcher; ``(RunResult, Recorder)``. The caller puts ``folder``
    on ``sys.path`` (``monkeypatch.syspath_prepend``) so the pipeline validates in-process."""
    from beampipe.config import load_pipeline
    from beampipe.manager import LocalLauncher

    shutil.copy(NODES / "flownodes.py", folder)
    path = folder / "pipeline.yaml"
    path.write_text(text)
    sys.modules.pop("flownodes", None)
    recorder = Recorder()
    result = LocalLauncher(load_pipeline(path), recorder, **launcher).run()
    return result, recorder


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory and on ``sys.path``, for :func:`run_pipeline`."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def rows(path: Path) -> list[dict]:
    """The objects of a JSON-lines file (what ``flownodes.Collect`` and the dead-letter file
    hold)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


WRITE_TIMES = ("@file_time", "@file_update_time")
"""Root attributes of a NeXus file that say when it was written (NXroot)."""


def hdf5_content(path: Path) -> dict[str, object]:
    """Every dataset's value and every attribute of the file, external links followed, by
    path (``path@attr`` for attributes), except the :data:`WRITE_TIMES`: what two runs that
    wrote the same results have in common."""
    out: dict[str, object] = {}

    def walk(group: h5py.Group, prefix: str) -> None:
        for key, value in group.attrs.items():
            out[f"{prefix}@{key}"] = value
        for name in group:
            item = group[name]
            if isinstance(item, h5py.Group):
                walk(item, f"{prefix}/{name}")
            else:
                out[f"{prefix}/{name}"] = item[()]
                for key, value in item.attrs.items():
                    out[f"{prefix}/{name}@{key}"] = value

    with h5py.File(path, "r") as f:
        walk(f, "")
    for key in WRITE_TIMES:
        out.pop(key, None)
    return out

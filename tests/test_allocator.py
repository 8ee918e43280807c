"""Node processes get glibc's allocator settings for large buffers (``launch/allocator.py``),
unless the launcher's environment sets them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import NODES, Recorder

from beampipe.config import load_pipeline
from beampipe.launch import Launcher
from beampipe.launch.allocator import LARGE_BUFFERS

ENVNODE = '''
import os
import beampipe


class Env(beampipe.Worker):
    """Passes messages on with the allocator variables of its process as metadata."""

    def process(self, msg):
        names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
        return beampipe.Message(metadata={k: os.environ.get(k) for k in names})
'''

PIPELINE = """
name: allocator
nodes:
  source: {use: flownodes:Counter, params: {n: 3}}
  env: {use: envnode:Env}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections:
  - source.out -> env.in
  - env.out -> sink.in
"""


def environments(folder: Path) -> list[dict]:
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "envnode.py").write_text(ENVNODE)
    (folder / "pipeline.yaml").write_text(PIPELINE)
    for module in ("flownodes", "envnode"):
        sys.modules.pop(module, None)
    result = Launcher(
        load_pipeline(folder / "pipeline.yaml"), Recorder(), rundir=folder / "run"
    ).run()
    assert result.exit_code == 0, result.errors
    lines = (folder / "out.jsonl").read_text().splitlines()
    return [json.loads(line)["meta"] for line in lines]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in LARGE_BUFFERS:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_node_processes_keep_large_buffers_in_the_heap(folder):
    metas = environments(folder)
    assert len(metas) == 3
    assert all(m == LARGE_BUFFERS for m in metas)
    assert int(LARGE_BUFFERS["MALLOC_MMAP_THRESHOLD_"]) >= 72 * 2**20  # an EIGER 16M frame


def test_a_setting_of_the_launchers_environment_is_kept(folder, monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    metas = environments(folder)
    assert {m["MALLOC_MMAP_THRESHOLD_"] for m in metas} == {"131072"}
    assert {m["MALLOC_TRIM_THRESHOLD_"] for m in metas} == {LARGE_BUFFERS["MALLOC_TRIM_THRESHOLD_"]}

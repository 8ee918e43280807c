"""A replica dropped after the other replicas passed a stream's end: its messages are sent again
through the others, and the stream still ends once downstream, after them, in one NeXus entry
(issue 16, "a stream stays one entry"); and a replica killed as its source finishes fails no
run that wrote everything (issue 16, "correct end-of-run verdicts")."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
from io import StringIO
from pathlib import Path

import h5py
import numpy as np
from conftest import NODES, Recorder
from rich.console import Console

from beampipe.cli.console import ConsoleObserver
from beampipe.config import load_pipeline
from beampipe.launch import Launcher

PIPELINE = """
name: split
nodes:
  source:
    use: flownodes:Counter
    params: {{n: {n}, streams: 2, hold_after: 100, hold_until: "go-{{stream}}"}}
  work:
    use: flownodes:Tag
    replicas: 3
{restart}
  nexus:
    use: nexus_writer
    params: {{path: out.nxs}}
connections:
  - source.out -> work.in
  - work.out -> nexus.points
"""
ON_FAILURE = "    restart: on-failure\n    max_restarts: 2\n    restart_delay: 0.1"


class StopThenKill(Recorder):
    """Drives the fault: SIGSTOP of ``work`` replica 1 once the sink has messages (then the
    source goes on with stream s0, so the stopped replica holds messages of it); SIGKILL of it
    once replicas 0 and 2 have ended s0 downstream. The source holds stream s1 at id 100 until
    the launcher has dropped the replica."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Launcher | None = None
        self.stopped = self.killed = False

    def pid(self) -> int:
        return self.launcher.replicas[b"work#1"].process.pid

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        sink = self.launcher.metrics.get(("nexus", 0))
        if self.stopped or sink is None or sink.messages_in < 30:
            return
        os.kill(self.pid(), signal.SIGSTOP)
        self.stopped = True
        Path("go-s0").touch()

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        super().stream_end(node, replica, report)
        ended = {(n, r) for n, r, rep in self.stream_ends if rep["stream"] == "s0"}
        if self.killed or not {("work", 0), ("work", 2)} <= ended:
            return
        os.kill(self.pid(), signal.SIGKILL)
        self.killed = True

    def failure(self, text: str) -> None:
        super().failure(text)
        if "not restarted" in text:
            Path("go-s1").touch()


def run(folder: Path, text: str) -> tuple:
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(text)
    sys.modules.pop("flownodes", None)
    observer = StopThenKill()
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), observer)
    observer.launcher = launcher
    return launcher.run(), observer


def recovery_line(folder: Path, result) -> str:
    """The ``recovery:`` line ``beampipe run`` prints for ``result``."""
    out = StringIO()
    console = ConsoleObserver(load_pipeline(folder / "pipeline.yaml"), Console(file=out))
    console.recovery(result.metrics)
    return " ".join(out.getvalue().split())


def entries(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{entry: (ids, x)}`` of the file's entries."""
    with h5py.File(path) as f:
        return {name: (f[name]["points/id"][()], f[name]["points/x"][()]) for name in f}


def check_one_entry_per_stream(path: Path, n: int, streams: tuple[str, ...] = ("s0", "s1")):
    """One entry per stream, each with ids 1..n exactly once and x = id**2."""
    got = entries(path)
    assert sorted(got) == list(streams), f"entries {sorted(got)}"
    for name, (ids, x) in got.items():
        assert sorted(ids.tolist()) == list(range(1, n + 1)), name  # every id exactly once
        np.testing.assert_array_equal(x, ids.astype(float) ** 2)


def test_replica_stopped_then_killed_without_restart_keeps_each_stream_one_entry(folder):
    """restart: never; replica 1 SIGSTOPped holding messages of s0, killed once replicas 0 and
    2 ended s0: its messages go to them, and s0 ends at the sink after them."""
    n = 1000
    result, observer = run(folder, PIPELINE.format(n=n, restart=""))
    assert observer.killed
    assert result.exit_code == 0, result.errors
    check_one_entry_per_stream(folder / "out.nxs", n)
    assert result.metrics["source"].resent > 0
    assert result.metrics["nexus"].late == 0
    assert "not restarted (restart: never)" in observer.failures[0]
    assert f"{result.metrics['source'].resent} messages sent again" in recovery_line(folder, result)


def test_replica_dropped_after_max_restarts_keeps_each_stream_one_entry(folder, monkeypatch):
    """restart: on-failure, max_restarts: 2; replica 1 SIGSTOPped holding messages of s0,
    killed once replicas 0 and 2 ended s0, and each restarted process killed after one
    message (fault injection): it is dropped, and s0 still ends once at the sink."""
    faults = [
        {"node": "work", "replica": 1, "incarnation": k, "fault": "kill", "after": 1}
        for k in (1, 2)
    ]
    monkeypatch.setenv("BEAMPIPE_FAULTS", json.dumps(faults))
    n = 1000
    result, observer = run(folder, PIPELINE.format(n=n, restart=ON_FAILURE))
    assert observer.killed
    assert result.exit_code == 0, result.errors
    check_one_entry_per_stream(folder / "out.nxs", n)
    assert result.metrics["work"].restarts == 2
    assert result.metrics["nexus"].late == 0
    dropped = [f for f in observer.failures if "not restarted" in f]
    assert len(dropped) == 1, observer.failures
    assert "not restarted again (restarted 2 times, max_restarts: 2)" in dropped[0]
    assert "restart: never" not in dropped[0]
    assert "recovery: 2 restarts (work: 2)" in recovery_line(folder, result)


FINISHING = """
name: finishing
nodes:
  source: {use: flownodes:Counter, params: {n: 6000}}
  work: {use: flownodes:Tag, replicas: 3}
  nexus: {use: nexus_writer, params: {path: out.nxs}}
connections:
  - source.out -> work.in
  - work.out -> nexus.points
"""


class KillAtSourceEnd(Recorder):
    """SIGKILL of ``work`` replica 1 as soon as the source has ended its stream."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Launcher | None = None
        self.killed = False

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        super().stream_end(node, replica, report)
        if node == "source" and not self.killed:
            os.kill(self.launcher.replicas[b"work#1"].process.pid, signal.SIGKILL)
            self.killed = True


def test_replica_killed_as_the_source_finishes_fails_no_run_that_wrote_everything(folder):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(FINISHING)
    sys.modules.pop("flownodes", None)
    observer = KillAtSourceEnd()
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), observer)
    observer.launcher = launcher
    result = launcher.run()
    assert observer.killed
    check_one_entry_per_stream(folder / "out.nxs", 6000, ("s0",))
    assert result.exit_code == 0, result.errors


class KillWhenSiblingsExited(Recorder):
    """SIGKILL of ``work`` replica 1 (sleeping in ``on_finish``) once replicas 0 and 2 have
    finished and exited."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Launcher | None = None
        self.killed = threading.Event()
        self.watching = False

    def stream_end(self, node: str, replica: int, report: dict) -> None:
        super().stream_end(node, replica, report)
        ended = {(n, r) for n, r, _ in self.stream_ends}
        if self.watching or not {("work", 0), ("work", 2)} <= ended:
            return
        self.watching = True
        reps = self.launcher.replicas
        others = [reps[b"work#0"].process, reps[b"work#2"].process]
        victim = reps[b"work#1"].process
        threading.Thread(target=self._kill, args=(others, victim), daemon=True).start()

    def _kill(self, others: list, victim) -> None:
        for proc in others:
            proc.wait(60)
        os.kill(victim.pid, signal.SIGKILL)
        self.killed.set()


def test_replica_killed_after_its_siblings_finished_fails_no_run_that_wrote_everything(folder):
    """restart: never; the upstream port told FINISHED only once everything was acknowledged,
    so a replica that dies after its siblings finished held nothing: it is dropped, and the
    run ends with exit 0 and every id written."""
    shutil.copy(NODES / "flownodes.py", folder)
    text = FINISHING.replace(
        "{use: flownodes:Tag, replicas: 3}",
        "{use: flownodes:Tag, replicas: 3, params: {slow_replica: 1, finish_delay: 60}}",
    )
    (folder / "pipeline.yaml").write_text(text)
    sys.modules.pop("flownodes", None)
    observer = KillWhenSiblingsExited()
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), observer)
    observer.launcher = launcher
    result = launcher.run()
    assert observer.killed.is_set()
    check_one_entry_per_stream(folder / "out.nxs", 6000, ("s0",))
    assert result.exit_code == 0, result.errors
    assert len(observer.failures) == 1
    assert "not restarted (restart: never): it had acknowledged everything" in observer.failures[0]

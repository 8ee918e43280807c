"""Hung replicas (issue 16): a worker replica stopped with SIGSTOP while it holds messages is
found by the launcher after its ``hang_timeout``, reported in the console, the RunStatus and
/metrics, and restarted, dropped or waited for as its restart policy allows."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import NODES, Recorder
from prometheus_client import generate_latest
from rich.console import Console

from beampipe.cli.console import ConsoleObserver
from beampipe.config import PipelineError, load_pipeline, parse_pipeline
from beampipe.launch import Launcher
from beampipe.launch.status import RunStatus
from beampipe.viewer.prometheus import RunCollector, registry

N = 3000

PIPELINE = """
name: hangs
nodes:
  source:
    use: flownodes:Counter
    params: {{n: {n}, hold_after: 300, hold_until: go}}
  work:
    use: flownodes:Tag
    replicas: {replicas}
    hang_timeout: 4
    restart: {restart}
    restart_delay: 0.1
  nexus:
    use: nexus_writer
    params: {{path: out.nxs}}
    ordered: true
connections:
  - source.out -> work.in
  - work.out -> nexus.points
"""


def metrics_text(status: RunStatus) -> str:
    """What /metrics shows for ``status``."""
    return generate_latest(registry(RunCollector("hangs", lambda: status, dict))).decode()


class Stopper:
    """Stops replica ``replica`` of ``work`` (SIGSTOP) once the sink has 200 messages (the
    source waits after id 300), then lets the source go on; once the launcher reports it hung,
    keeps the RunStatus and /metrics of that moment and, if ``resume``, lets the process go on
    (SIGCONT). :meth:`release` leaves no process stopped."""

    def __init__(self, replica: int, resume: bool) -> None:
        self.replica = replica
        self.resume = resume
        self.launcher: Launcher | None = None
        self.pid: int | None = None
        self.stopped_at = 0.0
        self.reported_after: float | None = None
        self.status: RunStatus | None = None
        self.metrics = ""

    def progress(self) -> None:
        sink = self.launcher.metrics.get(("nexus", 0))
        if self.pid is not None or sink is None or sink.messages_in < 200:
            return
        self.pid = self.launcher.replicas[f"work#{self.replica}".encode()].process.pid
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped_at = time.monotonic()
        Path("go").touch()

    def failure(self, text: str) -> None:
        if self.pid is None or self.reported_after is not None or "hung" not in text:
            return
        self.reported_after = time.monotonic() - self.stopped_at
        self.status = self.launcher.run_status()
        self.metrics = metrics_text(self.status)
        if self.resume:
            os.kill(self.pid, signal.SIGCONT)

    def release(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):  # killed by the launcher, as it should be
            os.kill(self.pid, signal.SIGCONT)


class StoppingRecorder(Recorder):
    def __init__(self, stopper: Stopper) -> None:
        super().__init__()
        self.stopper = stopper

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        self.stopper.progress()

    def failure(self, text: str) -> None:
        super().failure(text)
        self.stopper.failure(text)


class StoppingConsole(ConsoleObserver):
    """The terminal display of ``beampipe run``, written to a string, with a :class:`Stopper`."""

    def __init__(self, pipeline, stopper: Stopper) -> None:
        self.out = io.StringIO()
        super().__init__(pipeline, Console(file=self.out, width=200, force_terminal=False))
        self.stopper = stopper

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        super().progress(node, replica, streams)
        self.stopper.progress()

    def failure(self, text: str) -> None:
        super().failure(text)
        self.stopper.failure(text)


def launch(folder, text: str, stopper: Stopper, console: bool = False):
    (folder / "flownodes.py").write_text((NODES / "flownodes.py").read_text())
    (folder / "pipeline.yaml").write_text(text)
    pipeline = load_pipeline(folder / "pipeline.yaml")
    observer = StoppingConsole(pipeline, stopper) if console else StoppingRecorder(stopper)
    launcher = Launcher(pipeline, observer)
    stopper.launcher = launcher
    try:
        result = launcher.run()
    finally:
        stopper.release()
    return result, observer


def ids_written(folder) -> list[int]:
    with h5py.File(folder / "out.nxs") as f:
        ids = f["s0/points/id"][()]
        np.testing.assert_array_equal(f["s0/points/x"][()], ids.astype(float) ** 2)
        assert list(f) == ["s0"]
    return ids.tolist()


@pytest.mark.parametrize(
    ("restart", "restarts", "action", "outcome"),
    [
        ("on-failure", 1, "restarting it", "killed and restarted"),
        ("never", 0, "not restarted (restart: never)", "killed and dropped"),
    ],
)
def test_a_stopped_replica_is_reported_replaced_and_every_id_written_once(
    folder, restart, restarts, action, outcome
):
    """Restarted (restart: on-failure), or dropped with its messages redelivered to the other
    two replicas (restart: never): the ordered sink writes every id once, in order."""
    stopper = Stopper(replica=1, resume=False)
    text = PIPELINE.format(n=N, replicas=3, restart=restart)
    result, recorder = launch(folder, text, stopper)
    assert result.exit_code == 0, result.errors
    assert stopper.pid is not None and stopper.reported_after is not None
    assert ids_written(folder) == list(range(1, N + 1))  # in order, each once
    assert result.metrics["work"].restarts == restarts
    assert result.metrics["source"].resent > 0  # its unacknowledged messages, sent again
    (report,) = [f for f in recorder.failures if "hung" in f]
    assert report.startswith("node 'work' replica 1 (pid ")
    assert "hung (no report for " in report and f"and was killed; {action}" in report
    (hang,) = result.hangs
    assert hang.startswith("node 'work' replica 1 hung (no report for ")
    assert outcome in hang
    status = stopper.status
    assert status.hangs == (hang,)
    (work1,) = [r for r in status.of("work") if r.replica == 1]
    assert work1.hangs == 1 and status.to_dict()["hangs"] == [hang]
    assert 'beampipe_replica_hangs_total{node="work",pipeline="hangs",replica="1"} 1.0' in (
        stopper.metrics
    )


def test_a_stopped_single_replica_is_reported_waited_for_and_named_in_the_verdict(folder):
    stopper = Stopper(replica=0, resume=True)
    text = PIPELINE.format(n=N, replicas=1, restart="never")
    result, observer = launch(folder, text, stopper, console=True)
    assert result.exit_code == 0, result.errors
    assert ids_written(folder) == list(range(1, N + 1))
    status = stopper.status
    (work,) = status.of("work")
    assert work.state == "hung" and work.hung >= 4 and work.to_dict()["state"] == "hung"
    assert "unacknowledged messages" in status.hangs[0]
    assert "): still hung after " in status.to_dict()["hangs"][0]
    assert 'beampipe_hung_replicas{node="work",pipeline="hangs"} 1.0' in stopper.metrics
    assert 'beampipe_replica_hung{node="work",pipeline="hangs",replica="0"} 1.0' in (
        stopper.metrics
    )
    (hang,) = result.hangs
    assert hang.startswith("node 'work' hung (no report for ") and "it resumed after" in hang
    warned = observer.hangs(result.hangs)
    observer.summary(result.exit_code, result.wall_time, [], warned)
    shown = observer.out.getvalue()
    assert "node 'work' (pid " in shown and "hung: no report for " in shown
    assert "waiting for it (restart: never, and no other replica can take its messages)" in shown
    assert f"warning: {hang}" in shown
    assert "finished with warnings (1 above)" in shown


UNWATCHED = """
name: hangs
nodes:
  source:
    use: flownodes:Counter
    params: {n: 3000, hold_after: 300, hold_until: go}
  work:
    use: flownodes:Tag
    replicas: 3
    hang_timeout: 0
  nexus:
    use: nexus_writer
    params: {path: out.nxs}
    ordered: true
    reorder_timeout: 3
connections:
  - source.out -> work.in
  - work.out -> nexus.points
"""


class PastTheGap(Stopper):
    """Resumes the stopped replica only once the sink has more messages than it could have
    without the ordered port going past the stopped one's ids (its window: 64 messages
    waiting there, 128 in the other replicas' windows; or after 60 s, when the test fails)."""

    def __init__(self) -> None:
        super().__init__(replica=1, resume=False)
        self.passed = False

    def progress(self) -> None:
        super().progress()
        if self.pid is None or self.resume:
            return
        sink = self.launcher.metrics["nexus", 0]
        self.passed = sink.messages_in >= 2000
        if self.passed or time.monotonic() - self.stopped_at > 60:
            self.resume = True
            os.kill(self.pid, signal.SIGCONT)


def test_an_ordered_port_goes_past_a_hung_replica_after_its_reorder_timeout(folder):
    """Hang detection off: the ordered sink lets the other replicas' messages go on after its
    reorder_timeout instead of stalling the pipeline while the replica is stopped; the stopped
    one's, once it resumes, come late: every id is written once."""
    stopper = PastTheGap()
    result, _ = launch(folder, UNWATCHED, stopper)
    assert result.exit_code == 0, result.errors
    assert stopper.passed  # while the replica was stopped
    ids = ids_written(folder)
    assert sorted(ids) == list(range(1, 3001)) and ids != sorted(ids)
    nexus = result.metrics["nexus"]
    assert nexus.out_of_order > 0 and nexus.late > 0 and nexus.held == 0
    assert result.hangs == []


def test_the_timeouts_are_off_or_in_their_range_and_errors_name_file_and_line(folder):
    (folder / "flownodes.py").write_text((NODES / "flownodes.py").read_text())
    good = PIPELINE.format(n=10, replicas=1, restart="never").replace(
        "hang_timeout: 4", "hang_timeout: null\n    reorder_timeout: 0"
    )
    work = parse_pipeline(good, "ok.yaml").nodes["work"]
    assert (work.hang_timeout, work.reorder_timeout) == (0.0, 0.0)
    defaults = parse_pipeline(good, "ok.yaml").nodes["nexus"]
    assert (defaults.hang_timeout, defaults.reorder_timeout) == (10.0, 30.0)
    for bad in ("hang_timeout: 1", "hang_timeout: 1e9", "hang_timeout: -2"):
        text = PIPELINE.format(n=10, replicas=1, restart="never").replace("hang_timeout: 4", bad)
        with pytest.raises(PipelineError) as info:
            parse_pipeline(text, "bad.yaml")
        assert str(info.value).startswith("bad.yaml:10: node 'work': hang_timeout: ")

"""Crash recovery: a killed process is restarted, its unacknowledged messages are sent again,
and the sink's output equals an undisturbed run's (issue 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import msgpack
import numpy as np
import zmq
from conftest import NODES, Recorder, run_pipeline

from beampipe.config import load_pipeline
from beampipe.launch import Launcher

PIPELINE = """
name: recovery
nodes:
  source:
    use: flownodes:Counter
    params: {{n: 2000}}
  work:
    use: flownodes:Tag
    replicas: 3
    restart: on-failure
    restart_delay: 0.1
  nexus:
    use: nexus_writer
    params: {{path: {out}}}
    ordered: true
    restart: on-failure
    restart_delay: 0.1
connections:
  - source.out -> work.in
  - work.out -> nexus.points
"""


def points(path) -> tuple[np.ndarray, np.ndarray]:
    """(id, x) of the one stream's points, as the file holds them."""
    with h5py.File(path) as f:
        group = f["s0/points"]
        return group["id"][()], group["x"][()]


def kill(monkeypatch, node: str, replica: int, after: int) -> None:
    faults = [{"node": node, "replica": replica, "fault": "kill", "after": after}]
    monkeypatch.setenv("BEAMPIPE_FAULTS", json.dumps(faults))


def test_killed_worker_replica_is_restarted_and_nothing_is_lost_or_doubled(folder, monkeypatch):
    expected, _ = run_pipeline(folder, PIPELINE.format(out="calm.nxs"))
    assert expected.exit_code == 0, expected.errors
    kill(monkeypatch, "work", 1, 300)
    result, recorder = run_pipeline(folder, PIPELINE.format(out="killed.nxs"))
    assert result.exit_code == 0, result.errors
    ids, x = points(folder / "killed.nxs")
    calm_ids, calm_x = points(folder / "calm.nxs")
    assert ids.tolist() == list(range(1, 2001))
    np.testing.assert_array_equal(ids, calm_ids)
    np.testing.assert_array_equal(x, calm_x)
    work = result.metrics["work"]
    assert work.restarts >= 1  # once seen as 2 under heavy load: see the issue notes
    assert result.metrics["source"].resent > 0  # the killed replica's unacknowledged messages
    assert [f for f in recorder.failures if "restarting" in f] and len(recorder.failures) == 1
    assert "SIGKILL" in recorder.failures[0]


def test_killed_replica_without_restart_has_its_messages_redelivered_to_the_others(
    folder, monkeypatch
):
    """restart: never, and 2 of 3 replicas left: what the dead one had not acknowledged goes
    to them; the output equals the undisturbed run's."""
    text = PIPELINE.replace("replicas: 3\n    restart: on-failure", "replicas: 3")
    expected, _ = run_pipeline(folder, text.format(out="calm.nxs"))
    assert expected.exit_code == 0, expected.errors
    kill(monkeypatch, "work", 1, 300)
    result, recorder = run_pipeline(folder, text.format(out="killed.nxs"))
    assert result.exit_code == 0, result.errors
    ids, x = points(folder / "killed.nxs")
    np.testing.assert_array_equal(ids, np.arange(1, 2001))
    np.testing.assert_array_equal(x, points(folder / "calm.nxs")[1])
    assert result.metrics["work"].restarts == 0
    assert result.metrics["source"].resent > 0  # sent again, to replicas 0 and 2
    assert len(recorder.failures) == 1 and "not restarted" in recorder.failures[0]
    assert "SIGKILL" in recorder.failures[0]


def test_killed_sink_resumes_its_file_and_writes_every_message_once(folder, monkeypatch):
    kill(monkeypatch, "nexus", 0, 700)
    result, recorder = run_pipeline(folder, PIPELINE.format(out="killed.nxs"))
    assert result.exit_code == 0, result.errors
    assert result.metrics["nexus"].restarts == 1
    assert "node 'nexus'" in recorder.failures[0] and "SIGKILL" in recorder.failures[0]
    ids, x = points(folder / "killed.nxs")
    assert sorted(ids.tolist()) == list(range(1, 2001))  # each once
    np.testing.assert_array_equal(x, ids.astype(float) ** 2)
    with h5py.File(folder / "killed.nxs") as f:
        assert list(f) == ["s0"]  # the stream went on in its entry, no second entry


STATEFUL = """
name: stateful
nodes:
  source: {{use: flownodes:Counter, params: {{n: 2000}}}}
  total: {{use: "flownodes:{worker}", restart: on-failure, restart_delay: 0.1}}
  sink: {{use: flownodes:Collect, params: {{path: {out}}}}}
connections:
  - source.out -> total.in
  - total.out -> sink.in
"""


def totals(path) -> dict[int, float]:
    return {r["id"]: r["total"] for r in map(json.loads, path.read_text().splitlines())}


def test_stateful_worker_restored_from_its_snapshot_gives_the_undisturbed_results(
    folder, monkeypatch
):
    expected = {i: sum(float(k * k) for k in range(1, i + 1)) for i in range(1, 2001)}
    kill(monkeypatch, "total", 0, 700)
    result, _ = run_pipeline(folder, STATEFUL.format(worker="RunningSum", out="sums.jsonl"))
    assert result.exit_code == 0, result.errors
    assert result.metrics["total"].restarts == 1
    got = totals(folder / "sums.jsonl")
    assert got == expected  # every id once, each total as if nothing had happened
    assert (folder / "sums.jsonl").read_text().count("\n") == 2000

    # Without snapshot()/restore() the restarted process starts from zero: the test can fail.
    result, _ = run_pipeline(folder, STATEFUL.format(worker="ForgetfulSum", out="lost.jsonl"))
    assert result.exit_code != 0 or totals(folder / "lost.jsonl") != expected


class Intruder(Recorder):
    """Once the sink has messages, a process that is no peer talks to the source's output
    port: a HELLO of no connection, a malformed HELLO, an ACK and a CREDIT without HELLO. It
    holds the run's credentials (one without them is refused before it can say anything:
    tests/test_security.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher = None
        self.sent = False

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        sink = self.launcher.metrics.get(("sink", 0))
        if self.sent or sink is None or sink.messages_in < 50:
            return
        endpoint = self.launcher.replicas[b"source#0"].endpoints["out"]
        ctx = zmq.Context.instance()
        rogue = ctx.socket(zmq.DEALER)
        rogue.setsockopt(zmq.LINGER, 2000)
        self.launcher.credentials.client(rogue)
        rogue.connect(endpoint)
        hello = {"target": "nowhere.in", "replica": 0, "credit": 8, "bytes": 1 << 20}
        rogue.send_multipart([b"H", msgpack.packb(hello)])
        rogue.send_multipart([b"H", b"\xc1not msgpack"])
        rogue.send_multipart([b"A", b"12"])
        rogue.send_multipart([b"C", b"4 4096"])
        rogue.close()
        self.sent = True
        Path("released").touch()  # the source goes on (hold_until)


def test_frames_from_an_unknown_peer_are_dropped_counted_and_the_run_goes_on(folder):
    shutil.copy(NODES / "flownodes.py", folder)
    (folder / "pipeline.yaml").write_text(
        STATEFUL.format(worker="RunningSum", out="sums.jsonl").replace(
            "{n: 2000}", "{n: 3000, hold_after: 100, hold_until: released}"
        )
    )
    observer = Intruder()
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), observer)
    observer.launcher = launcher
    result = launcher.run()
    assert result.exit_code == 0, result.errors
    assert observer.sent
    assert result.metrics["source"].rejected_frames == 4
    assert len(totals(folder / "sums.jsonl")) == 3000  # nothing lost


def test_a_source_that_raises_has_what_it_sent_processed_before_the_run_fails(folder):
    """generate() raising (restart: never): the source ends its open stream, everything it
    sent is processed and written, then the run fails naming the source and its error."""
    text = PIPELINE.replace("{{n: 2000}}", "{{n: 2000, fail_after: 1200}}")
    result, recorder = run_pipeline(folder, text.format(out="cut.nxs"))
    assert result.exit_code == 1
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.startswith("node 'source': RuntimeError: detector connection lost after id 1200")
    assert "everything it had sent was processed" in error
    ids, x = points(folder / "cut.nxs")
    assert ids.tolist() == list(range(1, 1201))
    np.testing.assert_array_equal(x, ids.astype(float) ** 2)
    assert ("nexus", 0) in {(node, r) for node, r, report in recorder.stream_ends}
    assert result.metrics["nexus"].messages_in == 1200

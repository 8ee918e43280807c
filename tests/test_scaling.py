"""Scaling a worker while the pipeline runs (``Launcher.scale``): every message once."""

from __future__ import annotations

from collections import Counter as Tally
from pathlib import Path

import pytest
from conftest import NODES, Recorder, rows

from beampipe.config import load_pipeline
from beampipe.launch import Launcher

N, STREAMS = 1500, 3

PIPELINE = f"""\
nodes:
  src: {{use: flownodes:Counter, params: {{n: {N}, streams: {STREAMS}}}}}
  work: {{use: flownodes:Tag, params: {{delay: 0.001}}}}
  sink: {{use: flownodes:Collect, params: {{path: out.jsonl}}}}
connections:
  - src -> work
  - work.out -> sink.in
"""

EVENTS = """\
nodes:
  a: {use: flownodes:Counter, params: {n: 10}}
  b: {use: flownodes:Counter, params: {n: 10}}
  join: {use: flownodes:Join}
connections: [a -> join.a, b -> join.b]
"""


class Scaler(Recorder):
    """Scales ``work`` from 1 to 3 replicas once the sink has 500 messages, and back to 1
    once both new replicas processed messages (decided on the progress reports)."""

    def __init__(self) -> None:
        super().__init__()
        self.launcher: Launcher | None = None
        self.steps: list[int] = []

    def progress(self, node: str, replica: int, streams: dict[str, int]) -> None:
        launcher = self.launcher
        assert launcher is not None
        metrics = launcher.metrics
        sink = metrics.get(("sink", 0))
        if not self.steps and sink is not None and sink.messages_in >= 500:
            launcher.scale("work", 3)
            self.steps.append(3)
        elif self.steps == [3] and all(
            (m := metrics.get(("work", r))) is not None and m.messages_in > 20 for r in (1, 2)
        ):
            launcher.scale("work", 1)
            self.steps.append(1)


def _run(folder: Path) -> tuple[object, Scaler, Launcher]:
    (folder / "flownodes.py").write_text((NODES / "flownodes.py").read_text())
    (folder / "pipeline.yaml").write_text(PIPELINE)
    observer = Scaler()
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), observer, window=4)
    observer.launcher = launcher
    return launcher.run(), observer, launcher


def test_scale_up_and_down_mid_stream_delivers_every_message_once(folder: Path) -> None:
    result, observer, launcher = _run(folder)
    assert result.exit_code == 0, result.errors
    assert observer.steps == [3, 1], "the run ended before both scalings happened"
    got = rows(folder / "out.jsonl")
    keys = Tally((r["stream"], r["id"]) for r in got)
    expected = {(f"s{s}", i) for s in range(STREAMS) for i in range(1, N + 1)}
    assert set(keys) == expected
    assert max(keys.values()) == 1  # exactly once
    assert all(r["x"] == r["id"] ** 2 for r in got)
    assert {r["meta"]["replica"] for r in got} == {0, 1, 2}
    # The removed replicas are gone; their counts stay in the node's totals.
    assert sorted(r.replica for r in launcher.replicas.values() if r.node == "work") == [0]
    assert result.metrics["work"].messages_in == STREAMS * N
    assert result.metrics["sink"].late == 0
    ends = [(report["stream"], report["messages"]) for node, _, report in observer.stream_ends]
    sink_ends = [
        e for (node, _, _), e in zip(observer.stream_ends, ends, strict=True) if node == "sink"
    ]
    assert sorted(sink_ends) == [(f"s{s}", N) for s in range(STREAMS)]


@pytest.mark.parametrize(
    ("text", "node", "replicas", "problem"),
    [
        (PIPELINE, "src", 2, "is a source"),
        (PIPELINE, "nope", 2, "no node 'nope'"),
        (PIPELINE, "work", 0, "replicas must be from 1 to 256, not 0"),
        (PIPELINE, "work", 10000, "replicas must be from 1 to 256, not 10000"),
        (
            PIPELINE.replace("- src -> work", "- {connect: src -> work, routing: by_key, key: id}"),
            "work",
            2,
            "fed by key",
        ),
        (EVENTS, "join", 2, "joins its input ports 'a', 'b' into events: with 2 replicas, on "),
    ],
)
def test_scale_refuses_what_it_cannot_do_without_loss(
    folder, text, node, replicas, problem
) -> None:
    (folder / "flownodes.py").write_text((NODES / "flownodes.py").read_text())
    (folder / "pipeline.yaml").write_text(text)
    launcher = Launcher(load_pipeline(folder / "pipeline.yaml"), Recorder())
    with pytest.raises(ValueError, match=problem):
        launcher.scale(node, replicas)


def _pump(port, channels, until) -> None:
    """Move control frames (HELLO, CREDIT, ACK, BYE) to ``port`` until ``until()``."""
    for _ in range(1000):
        if until():
            return
        while port.socket.poll(10):
            port.handle(port.socket.recv_multipart())
        for ch in channels:
            ch.flush_acks()
    raise AssertionError("the pipe did not get there")


def test_a_replica_joining_a_running_port_gets_the_ends_and_starts_it_missed() -> None:
    import zmq

    from beampipe.message import EndOfStream, Message, StreamStart, encode
    from beampipe.transport import InputChannel, OutputPort, Route

    ctx = zmq.Context()
    try:
        port = OutputPort.bind(ctx, "out", "inproc://scaling-join", [Route("b.in", 1)])

        def channel(replica: int) -> InputChannel:
            return InputChannel.connect(
                ctx,
                port="in",
                target="b.in",
                replica=replica,
                upstream="a#0.out",
                endpoint="inproc://scaling-join",
                window=8,
                byte_window=1 << 20,
            )

        def send(item) -> None:
            assert port.try_send(item, encode(item))

        first = channel(0)
        _pump(port, [first], lambda: port.connected)
        for item in (StreamStart("s1", {}), Message(stream="s1", id=1), EndOfStream("s1", 1)):
            send(item)
        send(StreamStart("s2", {"n": 2}))
        second = channel(1)
        _pump(port, [first, second], lambda: len(port.peers) == 2)
        got = [second.receive(), second.receive()]
        assert [(type(i).__name__, i.stream) for i in got] == [
            ("EndOfStream", "s1"),
            ("StreamStart", "s2"),
        ]
        assert got[1].metadata == {"n": 2}
        # Both replicas now take messages; the removed one gets FINISHED and nothing more.
        port.retire("b.in", 1)
        assert second.receive() is None and second.finished
        for i in range(2, 6):
            send(Message(stream="s2", id=i))
        assert [first.receive().stream for _ in range(4)] == ["s1", "s1", "s1", "s2"]
        assert [first.receive().id for _ in range(4)] == [2, 3, 4, 5]
        for n in range(1, second.received + 1):
            second.complete(n, second.epoch)
        _pump(port, [first, second], lambda: len(port.peers) == 1)
    finally:
        ctx.destroy(linger=0)

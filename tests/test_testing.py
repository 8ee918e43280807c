"""``beampipe.testing``: the harness drives a node by the runtime's rules (stream hooks and
markers, inheritance, ports, events, a source's bursts and gaps, dead letters and warnings)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import rows, run_pipeline
from pydantic import ValidationError

import beampipe
from beampipe import EndOfStream, Event, Message, StreamStart
from beampipe.testing import Harness, run


class Hooks(beampipe.Worker):
    """Records its hook calls; ``x`` doubled goes out on ``out``, its sign on ``sign``."""

    outputs = ("out", "sign")

    class Params(beampipe.Params):
        factor: float = 2.0

    def __init__(self, params: beampipe.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.calls: list[tuple] = []

    def on_stream_start(self, stream, metadata):
        self.calls.append(("start", stream, metadata))

    def process(self, msg):
        self.calls.append(("process", msg.stream, msg.id, msg.port))
        x = float(msg.data["x"])
        return {
            "out": Message(data={"x": self.params.factor * x}),
            "sign": Message(data={"s": np.sign(x)}, metadata={"of": msg.id}),
        }

    def on_stream_end(self, stream):
        self.calls.append(("end", stream))
        return Message(data={"done": 1.0}, stream=stream, id=99)

    def on_finish(self):
        self.calls.append(("finish",))

    def close(self):
        self.calls.append(("close",))


def point(stream: str, i: int, x: float, **fields) -> Message:
    return Message(data={"x": x}, stream=stream, id=i, **fields)


def test_stream_hooks_markers_inheritance_and_ports() -> None:
    stamped = point("a", 1, 3.0, timestamps=[["src", 10.0]])
    items = [StreamStart("a", {"n": 2}), stamped, point("b", 1, -1.0), EndOfStream("a", 1)]
    results = run(Hooks, items, params={"factor": 10})
    node = results.node
    assert node.calls == [
        ("start", "a", {"n": 2}),
        ("process", "a", 1, "in"),
        ("start", "b", {}),  # opened by its first message
        ("process", "b", 1, "in"),
        ("end", "a"),
        ("end", "b"),  # still open at the end of the run
        ("finish",),
        ("close",),
    ]
    out = results.items()
    kinds = "StreamStart Message StreamStart Message Message EndOfStream Message EndOfStream"
    assert [type(i).__name__ for i in out] == kinds.split()
    assert out[0] == StreamStart("a", {"n": 2}) and out[2] == StreamStart("b", {})
    assert out[5] == EndOfStream("a", 1) and out[7] == EndOfStream("b", 1)
    first = out[1]
    assert (first.stream, first.id, float(first.data["x"])) == ("a", 1, 30.0)
    assert first.timestamps[0] == ["src", 10.0] and first.timestamps[1][0] == "Hooks"
    assert first.lineage != 0
    sent = [(m.stream, m.id) for m in results.messages()]
    assert sent == [("a", 1), ("b", 1), ("a", 99), ("b", 99)]
    signs = results.messages("sign")
    assert [(m.stream, m.id, float(m.data["s"]), m.metadata) for m in signs] == [
        ("a", 1, 1.0, {"of": 1}),
        ("b", 1, -1.0, {"of": 1}),
    ]
    assert isinstance(results.items("sign")[0], StreamStart)  # markers go on every port
    assert list(results.streams) == ["a", "b"]
    assert [m.id for m in results.streams["a"]] == [1, 99]
    assert results.dead_letters == [] and results.warnings == {}


def test_the_harness_step_by_step_and_what_each_call_did() -> None:
    node = Hooks(Hooks.Params(), name="h")
    harness = Harness(node, replica=2, restarts=1)
    assert (node.replica, node.restarts) == (2, 1)
    first = harness.feed([point("s", 1, 1.0)])
    assert [type(i).__name__ for i in first.items()] == ["StreamStart", "Message"]
    second = harness.feed([point("s", 2, 2.0, port="in")])
    assert [float(m.data["x"]) for m in second.messages()] == [4.0]
    assert node.calls[-1] == ("process", "s", 2, "in")
    last = harness.finish()
    assert [type(i).__name__ for i in last.items()] == ["Message", "EndOfStream"]
    assert node.calls[-2:] == [("finish",), ("close",)]
    assert len(harness.results.messages()) == 3
    with pytest.raises(ValueError, match=r"h has no input port 'b' \(its input ports: in\)"):
        harness.feed([point("s", 3, 1.0, port="b")])
    with pytest.raises(TypeError, match="not a dict"):
        harness.feed([{"x": 1}])


class Join(beampipe.Worker):
    inputs = ("a", "b")
    events = True

    def process(self, event: Event) -> Message:
        x = sum(float(m.data["x"]) for m in event.messages.values())
        return Message(data={"x": x}, metadata={"missing": list(event.missing)})


@pytest.mark.parametrize("incomplete", ["deliver", "drop"])
def test_events_are_formed_by_the_runtimes_event_builder(incomplete: str) -> None:
    items = [
        point("s", 1, 1.0, port="a"),
        point("s", 2, 2.0, port="b"),
        point("s", 1, 10.0, port="b"),
        EndOfStream("s", 2),
    ]
    results = run(Join, items, events={"incomplete": incomplete})
    got = [(m.id, float(m.data["x"]), m.metadata["missing"]) for m in results.messages()]
    assert got == [(1, 11.0, [])] + ([(2, 2.0, ["a"])] if incomplete == "deliver" else [])


def test_an_event_port_nothing_comes_in_on_is_not_waited_for() -> None:
    """As in a pipeline that leaves port ``b`` unconnected: every event goes on at once and
    complete, none is held until the stream ends (and, under ``drop``, dropped)."""
    items = [point("s", 1, 1.0, port="a"), point("s", 2, 2.0, port="a"), EndOfStream("s", 2)]
    results = run(Join, items, events={"incomplete": "drop"})
    got = [(m.id, float(m.data["x"]), m.metadata["missing"]) for m in results.messages()]
    assert got == [(1, 1.0, []), (2, 2.0, [])]
    assert results.dead_letters == [] and results.warnings == {}
    step = Harness(Join, ports=["a"])
    assert [m.id for m in step.feed(items[:1]).messages()] == [1]  # at once, not at the end
    with pytest.raises(ValueError, match=r"input port 'b' is not connected \(connected: a;"):
        step.feed([point("s", 3, 3.0, port="b")])
    both = Harness(Join)  # every port it declares connected: the part of 'b' is waited for
    assert both.feed(items[:1]).messages() == []
    (late,) = both.feed(items[2:]).messages()
    assert (late.id, late.metadata["missing"]) == (1, ["b"])


def test_the_harness_forms_the_events_a_pipeline_forms_with_a_port_unconnected(
    folder: Path,
) -> None:
    text = """\
nodes:
  a: {use: flownodes:Counter, params: {n: 5}}
  join: {use: flownodes:Join, events: {timeout: 600, incomplete: drop}}
  sink: {use: flownodes:Collect, params: {path: out.jsonl}}
connections: [a -> join.a, join -> sink.in]
"""
    result, _ = run_pipeline(folder, text)
    assert result.exit_code == 0, result.errors
    m = result.metrics["join"]
    assert (m.messages_in, m.incomplete_events, m.dropped_events) == (5, 0, 0)
    piped = [(r["id"], r["x"], r["meta"]["missing"]) for r in rows(folder / "out.jsonl")]
    import flownodes  # what run_pipeline copied into the folder

    counted = run(flownodes.Counter, params={"n": 5}).items()
    for msg in counted:
        if isinstance(msg, Message):
            msg.port = "a"
    joined = run(flownodes.Join, counted, events={"incomplete": "drop"}).messages()
    assert [(m.id, float(m.data["x"]), m.metadata["missing"]) for m in joined] == sorted(piped)
    assert sorted(piped) == [(i, float(i * i), []) for i in range(1, 6)]


class Picky(beampipe.Worker):
    """Drops negative x; warns on zero; logs on 1; sends what it keeps (NaN for x = 2)."""

    outputs = ()

    def __init__(self, params, name=""):
        super().__init__(params, name)
        self.seen: dict[str, list] = {}

    def process(self, msg):
        x = float(msg.data["x"])
        if x < 0:
            self.dead_letter(msg, ValueError(f"negative x {x}"))
        elif x == 0:
            warnings.warn("x is zero", RuntimeWarning, stacklevel=1)
        elif x == 1:
            logging.getLogger("picky").warning("x is one")

    def on_stream_end(self, stream):
        self.seen[stream] = self.stream_warnings(stream)


def test_dead_letters_warnings_and_stream_warnings_are_collected() -> None:
    items = [point("s", i, x) for i, x in enumerate([-1.0, 0.0, 0.0, 1.0, -2.0], 1)]
    with pytest.warns(RuntimeWarning, match="x is zero") as shown:  # the first is shown too
        results = run(Picky, [*items, EndOfStream("s", 5)])
    assert len(shown) == 1
    assert [(m.id, str(why)) for m, why in results.dead_letters] == [
        (1, "negative x -1.0"),
        (5, "negative x -2.0"),
    ]
    texts = {text.split(" (")[0]: count for text, count in results.warnings.items()}
    assert texts == {
        "inputs dropped: ValueError: negative x -1.0": 2,
        "RuntimeWarning: x is zero": 2,
        "WARNING picky: x is one": 1,
    }
    seen = {w["text"].split(" (")[0]: w["count"] for w in results.node.seen["s"]}
    assert seen == texts
    assert results.node.dead_letters == []  # in a pipeline the runtime takes them


def test_a_warning_filter_in_force_still_applies() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="x is zero"):
            run(Picky, [point("s", 1, 0.0)])


def test_non_finite_values_sent_are_counted_and_ride_on_the_end_marker() -> None:
    @beampipe.worker
    def inverse(msg):
        return Message(data={"y": 1 / msg.data["x"]})

    with np.errstate(divide="ignore"):
        results = run(inverse, [point("s", 1, 0.0), point("s", 2, 2.0), EndOfStream("s", 2)])
    assert results.warnings == {"NaN or infinite values in 'y'": 1}
    end = results.items()[-1]
    assert end.warnings == [["inverse", "NaN or infinite values in 'y'", 1]]
    assert run(inverse, [point("s", 1, 2.0)], check_finite=False).warnings == {}


class Scan(beampipe.Source):
    """Two streams: ids 1-3 (id 2 skipped) in a burst; then ``fail`` raises after id 1."""

    class Params(beampipe.Params):
        fail: bool = False

    def __init__(self, params, name=""):
        super().__init__(params, name)
        self.ended: list[str] = []

    def generate(self):
        yield StreamStart("a", {"n": 3})
        yield None  # waiting for data
        yield [point("a", 1, 1.0), point("a", 3, 3.0)]
        yield EndOfStream("a", 3, "b")
        yield point("b", 1, 1.0)
        if self.params.fail:
            raise RuntimeError("detector gone")
        yield EndOfStream("b", 1)

    def on_stream_end(self, stream):
        self.ended.append(stream)


def test_a_source_runs_through_the_source_loop() -> None:
    results = run(Scan)
    assert [(type(i).__name__, i.stream) for i in results.items()] == [
        ("StreamStart", "a"),
        ("Message", "a"),
        ("Message", "a"),
        ("EndOfStream", "a"),
        ("StreamStart", "b"),
        ("Message", "b"),
        ("EndOfStream", "b"),
    ]
    assert results.items()[3] == EndOfStream("a", 3, "b")
    assert all(m.timestamps[-1][0] == "Scan" for m in results.messages())
    ((missing, why),) = results.dead_letters
    assert (missing.stream, missing.id, missing.data) == ("a", 2, {})
    assert why == "the stream ended with id 3 without it"
    assert results.node.ended == ["a", "b"]


def test_a_failing_source_ends_its_streams_and_raises_its_error() -> None:
    node = Scan(Scan.Params(fail=True))
    harness = Harness(node)
    with pytest.raises(RuntimeError, match="detector gone"):
        harness.generate()
    assert node.ended == ["a", "b"]
    assert harness.results.items()[-1] == EndOfStream("b", 1)
    with pytest.raises(TypeError, match="Scan is a source: it takes no items"):
        run(Scan, [point("a", 1, 1.0)])
    with pytest.raises(TypeError, match="is a source: it takes no input"):
        harness.feed([])


def test_errors_propagate_as_raised_and_the_node_is_closed() -> None:
    class Fails(Hooks):
        def on_stream_end(self, stream):
            raise KeyError(f"no {stream}")

    with pytest.raises(KeyError, match="no s") as raised:
        run(Fails, [point("s", 1, 1.0), EndOfStream("s", 1)])
    assert raised.type is KeyError
    node = Fails(Hooks.Params())
    with pytest.raises(KeyError, match="'x'"):
        run(node, [Message(data={"x": 1.0}, stream="s", id=1), Message(stream="s", id=2)])
    assert node.calls[-1] == ("close",)
    with pytest.raises(ValidationError):
        run(Hooks, [], params={"factr": 3})
    with pytest.raises(TypeError, match="params go with a node class"):
        run(node, [], params={"factor": 3})
    with pytest.raises(TypeError, match=r"is not a beampipe\.Worker or beampipe\.Source"):
        run(object, [])

"""What a worker returns (or a source yields) is checked where it enters the runtime: an unknown
output port, a tuple or another type, a negative or duplicate id, data or metadata the wire
format cannot carry are errors naming node, stream, id and port, handled under the node's
``on_error`` (runtime/emitter.py, runtime/source.py, docs/reliability.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import NODES, beampipe, rows, run_pipeline

import beampipe as sdk
from beampipe import EndOfStream, Message, StreamStart
from beampipe.testing import Harness, run

N = 100

CAUSES = {
    "tuple": "process() returned a tuple: return a Message, a list of Messages or a dict "
    "{output port: Message or list}",
    "port": "process() returned a dict naming output port 'outt', which node 'work' does not "
    "have (its output ports: 'out')",
    "negative": "process() returned a message with id -5 (stream 's0', port 'out'): ids are "
    "1, 2, 3, ...",
    "duplicate": "process() returned two messages with id 40 of stream 's0' for port 'out'",
    "object": "message (stream 's0', id 50, port 'out') cannot be sent: data 'x': object "
    "arrays cannot be sent",
    "metadata": "message (stream 's0', id 60, port 'out') cannot be sent: metadata['gain']"
    "['value'] is a numpy.int64",
    "set": "process() returned a set: return a Message",
}
"""What the error says for each kind of bad result of ``badresults.Bad`` (see BAD there)."""
BAD_IDS = {"tuple": 10, "port": 20, "negative": 30, "duplicate": 40, "object": 50}
BAD_IDS |= {"metadata": 60, "set": 70}


def pipeline(work: str, source: str = f"flownodes:Counter, params: {{n: {N}}}") -> str:
    return f"""\
nodes:
  src: {{use: {source}}}
  work: {{use: badresults:Bad, {work}}}
  sink: {{use: flownodes:Collect, params: {{path: out.jsonl}}}}
connections:
  - src -> work
  - work.out -> sink.in
"""


def with_nodes(folder: Path) -> Path:
    """``badresults.py`` (and ``flownodes.py``) next to the pipeline file."""
    for name in ("badresults.py", "flownodes.py"):
        shutil.copy(NODES / name, folder)
    return folder


def stream(n: int = N) -> list:
    points = [Message(data={"x": float(i)}, stream="s0", id=i) for i in range(1, n + 1)]
    return [StreamStart("s0", {}), *points, EndOfStream("s0", n)]


# -- a worker's results, in the test harness (on_error: fail_fast) ---------------------------


@pytest.mark.parametrize("kind", sorted(CAUSES))
def test_each_bad_result_is_refused_naming_its_cause(kind: str) -> None:
    with_bad = {"only": kind}
    with pytest.raises(sdk.ResultError) as raised:
        run(_bad_class(), stream(), params=with_bad, name="work")
    assert CAUSES[kind] in str(raised.value)


def test_nothing_of_a_refused_result_is_sent() -> None:
    """The duplicate comes second: the first message is not sent either."""
    harness = Harness(_bad_class(), {"only": "duplicate"}, name="work")
    with pytest.raises(sdk.ResultError):
        harness.feed(stream()[:41])
    assert [m.id for m in harness.results.messages()] == list(range(1, 40))


def test_what_a_worker_may_return_still_goes_out() -> None:
    class Fine(sdk.Worker):
        outputs = ("out", "log")

        def process(self, msg):
            if msg.id == 1:
                return None
            if msg.id == 2:
                return [Message(data={"x": 1.0}), Message(data={"x": 2.0}, stream="own", id=7)]
            if msg.id == 3:
                return {"out": Message(), "log": [Message(metadata={"n": np.float64(2.5)})]}
            if msg.id == 4:
                return (Message(id=i, stream="gen") for i in (1, 2))
            return Message(data={"s": b"bytes", "u": np.array(["text"])})

    results = run(Fine, stream(5))
    got = [(p, m.stream, m.id) for p, m in results.sent if isinstance(m, Message)]
    assert got == [
        ("out", "s0", 2),
        ("out", "own", 7),
        ("out", "s0", 3),
        ("log", "s0", 3),
        ("out", "gen", 1),
        ("out", "gen", 2),
        ("out", "s0", 5),
    ]


def test_a_hook_result_is_checked_and_names_the_hook() -> None:
    class EndsBadly(sdk.Worker):
        def process(self, msg):
            return None

        def on_stream_end(self, stream):
            return (Message(stream=stream, id=1),)

    with pytest.raises(sdk.ResultError, match=r"on_stream_end\(\) returned a tuple"):
        run(EndsBadly, stream(2))

    class NoId(EndsBadly):
        def on_stream_end(self, stream):
            return Message(stream=stream)

    with pytest.raises(sdk.ResultError, match=r"on_stream_end\(\) returned a message with id 0"):
        run(NoId, stream(2))


def test_a_reducer_result_is_checked() -> None:
    class Total(sdk.Reducer):
        def start(self, group, metadata):
            return 0.0

        def reduce(self, state, msg):
            return state + float(msg.data["x"])

        def result(self, group, state, final):
            return (Message(data={"total": state}),)

    with pytest.raises(sdk.ResultError, match=r"^result\(\) returned a tuple: return a Message"):
        run(Total, stream(3))


# -- a worker's results in a pipeline --------------------------------------------------------


def test_bad_results_under_skip_are_counted_and_the_other_ids_written(folder: Path) -> None:
    """A real ``beampipe run``: each bad result skips its input, which goes to the dead-letter
    file naming node, stream, id and cause; the run ends with exit status 0, every other id
    written once, and the skips shown."""
    with_nodes(folder)
    (folder / "pipeline.yaml").write_text(pipeline("on_error: skip, replicas: 2"))
    done = beampipe("run", "pipeline.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    got = sorted(r["id"] for r in rows(folder / "out.jsonl"))
    assert got == [i for i in range(1, N + 1) if i not in BAD_IDS.values()]
    dead = {d["id"]: d for d in rows(folder / "pipeline.dead-letters.jsonl")}
    assert sorted(dead) == sorted(BAD_IDS.values())
    for kind, msg_id in BAD_IDS.items():
        assert (dead[msg_id]["node"], dead[msg_id]["stream"]) == ("work", "s0")
        assert dead[msg_id]["error"].startswith("ResultError: "), dead[msg_id]
        assert CAUSES[kind] in dead[msg_id]["error"]
    shown = " ".join(done.stdout.split() + done.stderr.split())
    assert "7 messages skipped after errors" in shown, shown
    assert "process() returned a tuple" in shown


@pytest.mark.parametrize("kind", sorted(CAUSES))
def test_a_bad_result_under_fail_fast_fails_the_run_naming_it(folder: Path, kind: str) -> None:
    with_nodes(folder)
    result, _ = run_pipeline(folder, pipeline(f"params: {{only: {kind}}}"))
    assert result.exit_code == 1
    where = f"node 'work', stream 's0', message id {BAD_IDS[kind]}: ResultError: "
    assert any(where in e and CAUSES[kind] in e for e in result.errors), result.errors
    assert not (folder / "pipeline.dead-letters.jsonl").exists()


def test_a_fail_fast_result_error_exits_1_from_the_command_line(folder: Path) -> None:
    with_nodes(folder)
    (folder / "pipeline.yaml").write_text(pipeline("params: {only: tuple}"))
    done = beampipe("run", "pipeline.yaml", cwd=folder)
    assert done.returncode == 1
    err = " ".join(done.stderr.split())
    assert f"node 'work', stream 's0', message id 10: ResultError: {CAUSES['tuple']}" in err


# -- a source's items ------------------------------------------------------------------------

SOURCE_CAUSES = {
    "negative": "generate() yielded a message with id -10 (stream 's0', port 'out'): ids are "
    "1, 2, 3, ...",
    "port": "generate() yielded a message for output port 'outt', which node 'src' does not "
    "have (its output ports: 'out')",
    "metadata": "message (stream 's0', id 30, port 'out') cannot be sent: metadata['when'] is "
    "a set",
    "object": "message (stream 's0', id 40, port 'out') cannot be sent: data 'x': object arrays",
    "stream": "generate() yielded a message without a stream (id 50, port 'out')",
}
SOURCE_BAD_IDS = {"negative": 10, "port": 20, "metadata": 30, "object": 40, "stream": 50}


@pytest.mark.parametrize("kind", sorted(SOURCE_CAUSES))
def test_a_source_item_that_cannot_be_sent_is_refused(kind: str) -> None:
    with pytest.raises(sdk.ResultError) as raised:
        run(_bad_source_class(), params={"only": kind}, name="src")
    assert SOURCE_CAUSES[kind] in str(raised.value)


def test_a_stream_header_that_cannot_be_sent_stops_the_source() -> None:
    class Header(sdk.Source):
        def generate(self):
            yield StreamStart("s0", {"angles": np.arange(3)})

    text = r"the start of stream 's0' \(port 'out'\) cannot be sent: metadata\['angles'\] is a "
    with pytest.raises(sdk.ResultError, match=text + r"numpy\.ndarray: metadata holds str"):
        run(Header)


def test_bad_source_items_under_skip_are_counted(folder: Path) -> None:
    """A skipped item with an id is not reported missing as well; the ids of the items
    without a valid stream or id (10 and 50) are."""
    source = f"badresults:BadSource, params: {{n: {N}}}, on_error: skip"
    result, _ = run_pipeline(with_nodes(folder), pipeline("params: {only: none}", source))
    assert result.exit_code == 0, result.errors
    got = sorted(r["id"] for r in rows(folder / "out.jsonl"))
    assert got == [i for i in range(1, N + 1) if i not in SOURCE_BAD_IDS.values()]
    assert (result.metrics["src"].skipped, result.metrics["src"].missing) == (5, 2)
    dead = rows(folder / "pipeline.dead-letters.jsonl")
    errors = [d["error"] for d in dead if d["node"] == "src"]
    for kind, cause in SOURCE_CAUSES.items():
        assert any(cause in e for e in errors), (kind, errors)
    assert sorted(d["id"] for d in dead if d["error"].startswith("missing")) == [10, 50]


def test_a_bad_source_item_under_fail_fast_fails_the_run(folder: Path) -> None:
    source = f"badresults:BadSource, params: {{n: {N}, only: object}}"
    result, _ = run_pipeline(with_nodes(folder), pipeline("params: {only: none}", source))
    assert result.exit_code == 1
    where = "node 'src', stream 's0', message id 40: ResultError: "
    assert any(where in e and SOURCE_CAUSES["object"] in e for e in result.errors), result.errors


def _bad_class() -> type[sdk.Worker]:
    import badresults

    return badresults.Bad


def _bad_source_class() -> type[sdk.Source]:
    import badresults

    return badresults.BadSource


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(NODES))

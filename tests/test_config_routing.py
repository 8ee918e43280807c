"""Routing, ordering, events and reducer options of a pipeline file, and key expressions."""

from __future__ import annotations

import pytest

from beampipe import Message
from beampipe.config import PipelineError, parse_pipeline
from beampipe.message.key import KeyExpressionError, compile_key, replica_of

HEAD = """\
nodes:
  scan: {use: bp_testnodes:Replay}
  mu: {use: bp_testnodes:Scale, replicas: 3}
connections:
"""


pytestmark = pytest.mark.usefixtures("testnodes")


def problem(text: str) -> PipelineError:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, path="p.yaml")
    assert len(info.value.errors) == 1, str(info.value)
    return info.value


def test_connection_mapping_sets_routing_and_key() -> None:
    pipeline = parse_pipeline(
        HEAD + "  - {connect: scan -> mu, routing: by_key, key: id // 10}\n", path="p.yaml"
    )
    (conn,) = pipeline.connections
    assert (conn.source_port, conn.target_port) == ("out", "in")
    assert (conn.routing, conn.key, conn.line) == ("by_key", "id // 10", 5)
    assert pipeline.to_dict()["connections"][0]["routing"] == "by_key"


def test_string_connection_is_round_robin() -> None:
    (conn,) = parse_pipeline(HEAD + "  - scan -> mu\n").connections
    assert (conn.routing, conn.key) == ("round_robin", None)


@pytest.mark.parametrize(
    ("entry", "line", "words"),
    [
        ("{connect: scan -> mu, routing: by_key}", 5, ["by_key needs a 'key:'"]),
        ("{connect: scan -> mu, routing: random}", 5, ["routing", "'round_robin'", "random"]),
        ("{connect: scan -> mu, key: id}", 5, ["only used with 'routing: by_key'"]),
        ("{connect: scan -> mu, routing: by_key, key: 'open(1)'}", 5, ["'open(1)' is not allowed"]),
        ("{connect: scan -> mu, routing: by_key, key: 'id //'}", 5, ["not an expression"]),
        ("{connect: scan => mu}", 5, ["malformed connection"]),
        ("{connect: scan -> mu, rooting: by_key}", 5, ["'rooting'", "did you mean 'routing'"]),
    ],
)
def test_bad_connection_options(entry: str, line: int, words: list[str]) -> None:
    err = problem(HEAD + f"  - {entry}\n")
    assert err.line == line
    for word in words:
        assert word in err.problem, str(err)


def test_multiline_mapping_names_the_key_line() -> None:
    err = problem(HEAD + "  - connect: scan -> mu\n    routing: by_key\n    key: id.real\n")
    assert err.line == 7 and "'id.real' is not allowed" in err.problem


def test_ordered_and_events_options() -> None:
    pipeline = parse_pipeline(
        HEAD.replace("replicas: 3}", "ordered: [in], reorder_buffer: 8}") + "  - scan -> mu\n"
    )
    spec = pipeline.nodes["mu"]
    assert spec.is_ordered("in") and not spec.is_ordered("other")
    assert spec.reorder_buffer == 8
    err = problem(HEAD.replace("replicas: 3}", "ordered: [out]}") + "  - scan -> mu\n")
    assert (err.line, err.node) == (3, "mu") and "unknown input port 'out'" in err.problem
    err = problem(HEAD.replace("replicas: 3}", "events: {timeout: 1}}") + "  - scan -> mu\n")
    assert "does not form events" in err.problem


def test_ordered_on_a_source_is_an_error() -> None:
    err = problem(HEAD.replace("Replay}", "Replay, ordered: true}") + "  - scan -> mu\n")
    assert err.node == "scan" and "needs input ports" in err.problem


@pytest.mark.parametrize(
    ("text", "msg", "expected"),
    [
        ("id // 10", Message(id=25), 2),
        ("id % 3 + 1", Message(id=5), 3),
        ("-id", Message(id=5), -5),
        ("stream", Message(stream="s1"), "s1"),
        ("sample", Message(metadata={"sample": "Fe"}), "Fe"),
        ("metadata['pos'][1]", Message(metadata={"pos": [4, 7]}), 7),
    ],
)
def test_key_expressions(text: str, msg: Message, expected: object) -> None:
    assert compile_key(text)(msg) == expected


def test_key_errors_name_the_message() -> None:
    with pytest.raises(KeyExpressionError, match=r"'s' id 4: no 'sample'"):
        compile_key("sample")(Message(stream="s", id=4))
    with pytest.raises(KeyExpressionError, match="'s' id 4: integer division"):
        compile_key("id // step")(Message(stream="s", id=4, metadata={"step": 0}))
    for bad in ("__import__('os')", "id.real", "[id]", "lambda: 1", "id if id else 1"):
        with pytest.raises(KeyExpressionError, match="not allowed"):
            compile_key(bad)


def test_replica_of_is_stable_and_spreads() -> None:
    assert [replica_of(k, 3) for k in range(6)] == [0, 1, 2, 0, 1, 2]
    names = [replica_of(f"scan{i}", 4) for i in range(40)]
    assert names == [replica_of(f"scan{i}", 4) for i in range(40)]
    assert set(names) == {0, 1, 2, 3}


def test_a_reducer_runs_as_one_replica() -> None:
    text = HEAD.replace("Scale, replicas: 3}", "Fold,\n       replicas: 2}") + "  - scan -> mu\n"
    err = problem(text)
    assert (err.line, err.node) == (4, "mu") and "is a reducer" in err.problem


def test_a_source_runs_as_one_replica() -> None:
    text = HEAD.replace("Replay}", "Replay,\n         replicas: 2}") + "  - scan -> mu\n"
    err = problem(text)
    assert (err.line, err.node) == (3, "scan")
    assert "is a source" in err.problem and "(replicas: 2 is not possible)" in err.problem
    parse_pipeline(HEAD.replace("Replay}", "Replay, replicas: 1}") + "  - scan -> mu\n")

"""The routing into a node of several replicas that joins two or more input ports into events:
the parts of an event must reach the same replica, or ``validate`` refuses the pipeline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import beampipe

from beampipe.config import PipelineError, parse_pipeline

HEAD = """\
nodes:
  det: {use: bp_testnodes:Replay}
  counters: {use: bp_testnodes:Replay}
  norm: {use: USE, replicas: REPLICAS}
connections:
"""

pytestmark = pytest.mark.usefixtures("testnodes")


def pipeline(connections: list[str], use: str = "bp_testnodes:Normalise", replicas: int = 2):
    head = HEAD.replace("USE", use).replace("REPLICAS", str(replicas))
    return head + "".join(f"  - {c}\n" for c in connections)


def problems(text: str) -> list[PipelineError]:
    with pytest.raises(PipelineError) as info:
        parse_pipeline(text, path="p.yaml")
    return info.value.errors


def test_round_robin_into_two_event_ports_of_two_replicas_is_refused() -> None:
    errors = problems(pipeline(["det -> norm.image", "counters -> norm.i0"]))
    assert [(e.file, e.line, e.node) for e in errors] == [
        ("p.yaml", 6, "norm"),
        ("p.yaml", 7, "norm"),
    ]
    first = errors[0].problem
    assert first.startswith("connection 'det.out -> norm.image': bp_testnodes:Normalise joins")
    assert "input ports 'image' and 'i0' into events" in first
    assert "replicas: 2; routing round_robin" in first and "never meet" in first
    assert "Route every connection into 'norm' by the same key ('routing: by_key, key: id'" in first
    assert first.endswith("or run it as replicas: 1")
    assert errors[1].problem.startswith("connection 'counters.out -> norm.i0'")


def test_only_the_connections_that_do_not_follow_the_key_are_named() -> None:
    keyed = "{connect: det -> norm.image, routing: by_key, key: id}"
    (err,) = problems(pipeline([keyed, "counters -> norm.i0"]))
    assert (err.line, err.node) == (7, "norm")
    assert "'counters.out -> norm.i0'" in err.problem and "round_robin" in err.problem


def test_different_keys_are_refused_naming_the_first_key_and_its_line() -> None:
    text = pipeline(
        [
            "{connect: det -> norm.image, routing: by_key, key: id // 10}",
            "{connect: counters -> norm.i0, routing: by_key, key: id}",
        ]
    )
    (err,) = problems(text)
    assert (err.line, err.node) == (7, "norm")
    assert "key 'id' is not the key 'id // 10' of 'det.out -> norm.image' (line 6)" in err.problem


def test_broadcast_next_to_another_routing_is_refused() -> None:
    text = pipeline(
        [
            "{connect: det -> norm.image, routing: by_key, key: id}",
            "{connect: counters -> norm.i0, routing: broadcast}",
        ]
    )
    (err,) = problems(text)
    assert err.line == 7 and "routing broadcast sends each part to every replica" in err.problem
    assert "incomplete event" in err.problem


@pytest.mark.parametrize(
    "connections",
    [
        [
            "{connect: det -> norm.image, routing: by_key, key: id}",
            "{connect: counters -> norm.i0, routing: by_key, key: id}",
        ],
        [  # the same key, spaced differently
            "{connect: det -> norm.image, routing: by_key, key: id//10}",
            "{connect: counters -> norm.i0, routing: by_key, key: 'id // 10'}",
        ],
        [  # a bare name is the metadata field of that name
            "{connect: det -> norm.image, routing: by_key, key: sample}",
            "{connect: counters -> norm.i0, routing: by_key, key: 'metadata[\"sample\"]'}",
        ],
        [  # every replica forms every event
            "{connect: det -> norm.image, routing: broadcast}",
            "{connect: counters -> norm.i0, routing: broadcast}",
        ],
        ["det -> norm.image"],  # one port connected: nothing to join
        ["det -> norm.image", "counters -> norm.image"],  # two connections, one port
    ],
)
def test_what_keeps_the_parts_of_an_event_together_is_accepted(connections: list[str]) -> None:
    parse_pipeline(pipeline(connections), path="p.yaml")


def test_one_replica_or_a_node_that_forms_no_events_may_take_round_robin() -> None:
    both = ["det -> norm.image", "counters -> norm.i0"]
    parse_pipeline(pipeline(both, replicas=1), path="p.yaml")
    parse_pipeline(pipeline(both, use="bp_testnodes:Join", replicas=3), path="p.yaml")


def test_a_node_of_any_ports_joins_the_ports_its_connections_feed() -> None:
    text = pipeline(["det -> norm.frames", "counters -> norm.i0"], use="bp_testnodes:AnyEvents")
    errors = problems(text)
    assert [e.line for e in errors] == [6, 7]
    assert "ports 'frames' and 'i0'" in errors[0].problem


def test_beampipe_validate_refuses_xrf_deadtime_of_two_replicas_fed_round_robin(
    tmp_path: Path,
) -> None:
    (tmp_path / "pipeline.yaml").write_text(
        textwrap.dedent("""\
        name: dt
        nodes:
          spectra: {use: detector_sim, params: {shape: [4, 2048], frames: 4}}
          positions: {use: detector_sim, params: {shape: [1, 2], frames: 4}}
          deadtime:
            use: xrf.deadtime
            replicas: 2
        connections:
          - spectra -> deadtime.in
          - {connect: positions -> deadtime.positions, routing: by_key, key: id}
        """)
    )
    done = beampipe("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "error: pipeline.yaml:9: node 'deadtime': connection 'spectra.out -> deadtime.in': "
        "xrf.deadtime joins its input ports 'in' and 'positions' into events"
    ), line
    fixed = (tmp_path / "pipeline.yaml").read_text()
    fixed = fixed.replace(
        "- spectra -> deadtime.in", "- {connect: spectra -> deadtime.in, routing: by_key, key: id}"
    )
    (tmp_path / "pipeline.yaml").write_text(fixed)
    done = beampipe("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

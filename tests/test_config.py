"""Valid pipeline files -> Pipeline: ports, fan-out/fan-in, overrides, params, to_dict/from_dict."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from textwrap import dedent

import pytest
from conftest import CONFIGS

from beampipe import Source, Worker
from beampipe.config import (
    Connection,
    NodeSpec,
    Pipeline,
    PipelineError,
    load_pipeline,
    parse_override,
    parse_pipeline,
)

EXAMPLE = Path(__file__).parent.parent / "examples" / "xas-p65" / "pipeline.yaml"


pytestmark = pytest.mark.usefixtures("testnodes")


def parse(text: str, **kwargs: object) -> Pipeline:
    return parse_pipeline(dedent(text), path="pipeline.yaml", **kwargs)


LINEAR = """\
name: linear
nodes:
  scan:
    use: bp_testnodes:Replay
    params: {paths: [data/*.xdi], pace: realtime}
  mu: {use: bp_testnodes:Scale, replicas: 2, params: {every: 5}}
  out:
    use: bp_testnodes:Writer
    params:
      path: out/x.nxs
connections:
  - scan.out -> mu.in
  - mu.out -> out.in
"""


def test_linear_pipeline() -> None:
    p = parse(LINEAR)
    assert p.name == "linear" and p.path == "pipeline.yaml"
    assert list(p.nodes) == ["scan", "mu", "out"]
    assert p.nodes["mu"] == NodeSpec(
        name="mu", use="bp_testnodes:Scale", params={"every": 5}, replicas=2, line=6
    )
    assert [str(c) for c in p.connections] == ["scan.out -> mu.in", "mu.out -> out.in"]
    assert [c.line for c in p.connections] == [12, 13]
    assert p.sources() == ["scan"] and p.sinks() == ["out"]
    assert p.inputs_of("mu") == [p.connections[0]] and p.outputs_of("mu") == [p.connections[1]]
    assert p.inputs_of("scan") == [] and p.outputs_of("out") == []


def test_node_class_and_typed_params() -> None:
    p = parse(LINEAR)
    cls = p.node_class("mu")
    assert issubclass(cls, Worker) and cls.__name__ == "Scale"
    assert p.node_class("mu") is cls
    assert issubclass(p.node_class("scan"), Source)
    params = p.node_params("mu")
    assert isinstance(params, cls.Params)
    assert (params.every, params.factor) == (5, 1.0)
    assert p.node_params("scan").paths == ["data/*.xdi"]
    assert p.node_params("out").path == "out/x.nxs"
    with pytest.raises(KeyError, match="no node 'nope'"):
        p.node_class("nope")


def test_specs_and_connections_are_frozen() -> None:
    p = parse(LINEAR)
    with pytest.raises(ValueError):
        p.nodes["mu"].replicas = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        p.connections[0].target = "x"  # type: ignore[misc]


def test_default_ports_and_whitespace() -> None:
    p = parse(
        """\
        nodes:
          scan: {use: bp_testnodes:Replay}
          mu: {use: bp_testnodes:Scale}
          j: {use: bp_testnodes:Join}
        connections:
          - scan->mu
          - '  mu . out   ->  j '
          - scan -> j.i0
        """
    )
    assert [str(c) for c in p.connections] == [
        "scan.out -> mu.in",
        "mu.out -> j.image",
        "scan.out -> j.i0",
    ]


def test_fan_out_and_fan_in() -> None:
    p = parse(
        """\
        nodes:
          scan: {use: bp_testnodes:Replay}
          a: {use: bp_testnodes:Scale}
          b: {use: bp_testnodes:Scale}
          any: {use: bp_testnodes:AnyIn}
          j: {use: bp_testnodes:Join}
        connections:
          - scan.out -> a.in
          - scan.out -> b.in
          - a.out -> j.image
          - b.out -> j.image
          - scan.out -> j.i0
          - j.stats -> any.whatever
          - j.out -> any.whatever
        """
    )
    assert [str(c) for c in p.outputs_of("scan")] == [
        "scan.out -> a.in",
        "scan.out -> b.in",
        "scan.out -> j.i0",
    ]
    assert [c.source for c in p.inputs_of("j")] == ["a", "b", "scan"]
    assert [c.source_port for c in p.inputs_of("any")] == ["stats", "out"]
    assert p.sources() == ["scan"] and p.sinks() == ["any"]


def test_single_source_needs_no_connections() -> None:
    p = parse("nodes:\n  scan:\n    use: bp_testnodes:Replay\n    params:\n")
    assert p.connections == [] and p.sources() == p.sinks() == ["scan"]
    assert p.nodes["scan"].params == {}
    assert p.name == "pipeline"


def test_params_are_plain_python() -> None:
    p = parse(LINEAR.replace("every: 5", "every: 0x10, factor: 1.5"))
    params = p.nodes["mu"].params
    assert params == {"every": 16, "factor": 1.5}
    assert type(params["every"]) is int and type(params["factor"]) is float
    assert type(p.nodes["scan"].params["paths"]) is list


def test_overrides_set_params_before_validation() -> None:
    p = parse(
        LINEAR,
        overrides={"scan.pace": "max", "mu.every": "50", "out.groups.normalized.mode": "replace"},
    )
    assert p.node_params("scan").pace == "max"
    assert p.node_params("mu").every == 50
    assert p.node_params("out").groups == {"normalized": {"mode": "replace"}}
    assert p.nodes["scan"].params == {"paths": ["data/*.xdi"], "pace": "max"}


def test_overrides_do_not_change_the_callers_dict() -> None:
    overrides = {"scan.paths": ["a", "b"]}
    p = parse(LINEAR, overrides=overrides)
    assert p.node_params("scan").paths == ["a", "b"]
    assert overrides == {"scan.paths": ["a", "b"]}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("scan.pace=max", ("scan.pace", "max")),
        ("normalize.every=50", ("normalize.every", 50)),
        ("scan.paths=[a.xdi, b.xdi]", ("scan.paths", ["a.xdi", "b.xdi"])),
        ("scan.paths=data/*.xdi", ("scan.paths", "data/*.xdi")),
        ("x.y=", ("x.y", "")),
        ("x.y=a=b", ("x.y", "a=b")),
    ],
)
def test_parse_override(expr: str, expected: tuple[str, object]) -> None:
    assert parse_override(expr) == expected


def test_parse_override_needs_equals() -> None:
    with pytest.raises(ValueError, match=r"node\.param=value"):
        parse_override("scan.pace")


def test_to_dict_from_dict_round_trip() -> None:
    p = parse(LINEAR, overrides={"scan.pace": "max"})
    data = json.loads(json.dumps(p.to_dict()))
    q = Pipeline.from_dict(data)
    assert q == p
    assert q.to_dict() == p.to_dict()
    assert q.base_dir == p.base_dir and q.base_dir.is_absolute()
    assert q.connections[0] == Connection(
        source="scan", source_port="out", target="mu", target_port="in", line=12
    )
    assert q.node_params("scan").pace == "max"
    assert q.node_class("mu") is p.node_class("mu")


def test_from_dict_imports_node_classes_lazily() -> None:
    data = parse(LINEAR).to_dict()
    data["nodes"]["out"]["use"] = "bp_testnodes:Gone"
    q = Pipeline.from_dict(data)  # fine: only this node's process would import it
    assert q.node_params("mu").every == 5
    with pytest.raises(PipelineError) as info:
        q.node_class("out")
    assert (info.value.line, info.value.node) == (7, "out")


def test_from_dict_rejects_garbage() -> None:
    with pytest.raises(PipelineError, match="not a valid pipeline dict"):
        Pipeline.from_dict({"name": "x", "nodes": 3})


def test_pipeline_pickles() -> None:
    p = parse(LINEAR)
    assert pickle.loads(pickle.dumps(p)) == p


def test_load_pipeline_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "mine.yaml"
    path.parent.mkdir()
    shutil.copy(CONFIGS / "pipeline.yaml", path)
    p = load_pipeline(path, overrides={"mu.factor": 2})
    assert p.name == "mine" and p.path == str(path)
    assert p.base_dir == path.parent.resolve()
    assert [str(c) for c in p.connections] == ["scan.out -> mu.in", "mu.out -> out.in"]
    assert p.nodes["mu"].replicas == 2 and p.nodes["mu"].line == 6
    assert p.node_params("mu").factor == 2.0


def test_base_dir_of_a_string() -> None:
    assert parse_pipeline(LINEAR).base_dir == Path.cwd().resolve()
    assert parse_pipeline(LINEAR, base_dir="/tmp").base_dir == Path("/tmp").resolve()


def test_example_pipeline() -> None:
    pytest.importorskip("beampipe.nodes.xas.xdi")
    pytest.importorskip("beampipe.nodes.xas.transmission")
    pytest.importorskip("beampipe.nodes.xas.normalize")
    pytest.importorskip("beampipe.nodes.nexus.writer")
    p = load_pipeline(EXAMPLE)
    assert p.name == "xas-p65"
    assert list(p.nodes) == ["scan", "mu", "normalize", "nexus"]
    assert [str(c) for c in p.connections] == [
        "scan.out -> mu.in",
        "mu.out -> normalize.in",
        "mu.out -> nexus.points",
        "normalize.out -> nexus.normalized",
    ]
    assert p.sources() == ["scan"] and p.sinks() == ["nexus"]
    for name in p.nodes:
        p.node_params(name)
    assert Pipeline.from_dict(json.loads(json.dumps(p.to_dict()))) == p

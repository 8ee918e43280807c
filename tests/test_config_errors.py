"""Every kind of pipeline-file problem is a PipelineError naming file, line and node."""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from beampipe.config import PipelineError, load_pipeline, parse_pipeline

CONFIGS = Path(__file__).parent / "configs"
MODULES = ("bp_testnodes", "bp_badmod", "bp_typed")

TYPED = """\
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, field_validator

import beampipe


class Group(BaseModel):
    mode: str


class Typed(beampipe.Worker):
    class Params(beampipe.Params):
        pace: Literal["max", "realtime"] | PositiveFloat = "max"
        span: tuple[float, float] | None = None
        box: tuple[int, int, int] = (1, 1, 1)
        limit: bool | int = False
        band: Literal["auto"] | list[float] = "auto"
        group: Literal["none"] | Group = "none"
        odd: Literal["off"] | int = "off"

        @field_validator("odd")
        @classmethod
        def _odd(cls, value: object) -> object:
            if isinstance(value, int) and value % 2 == 0:
                raise ValueError("must be odd")
            return value
"""
"""``bp_typed``: a worker whose params are unions and tuples."""

HEAD = """\
name: t
nodes:
  scan: {use: bp_testnodes:Replay}
  mu: {use: bp_testnodes:Scale}
"""
"""Lines 1-4 of most test files; the rest starts at line 5."""


@pytest.fixture(autouse=True)
def nodes_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``bp_testnodes`` (see tests/configs) and ``bp_badmod`` (fails at import) on sys.path."""
    shutil.copy(CONFIGS / "bp_testnodes.py", tmp_path)
    (tmp_path / "bp_badmod.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "bp_typed.py").write_text(TYPED)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in MODULES:
        sys.modules.pop(name, None)
    yield
    for name in MODULES:
        sys.modules.pop(name, None)


def error(text: str, **kwargs: object) -> PipelineError:
    """The PipelineError that parsing ``text`` (dedented) as ``pipeline.yaml`` raises."""
    with pytest.raises(PipelineError) as info:
        parse_pipeline(dedent(text), path="pipeline.yaml", **kwargs)
    return info.value


def assert_at(err: PipelineError, line: int | None, node: str | None, *words: str) -> None:
    """``err`` is one problem at ``line`` of pipeline.yaml, about ``node``, mentioning ``words``."""
    assert len(err.errors) == 1, str(err)
    assert (err.file, err.line, err.node) == ("pipeline.yaml", line, node), str(err)
    prefix = "pipeline.yaml" + (f":{line}" if line else "") + ": "
    prefix += f"node {node!r}: " if node else ""
    assert str(err) == prefix + err.problem
    for word in words:
        assert word in err.problem, str(err)


# --- the file as YAML ------------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line() -> None:
    err = error(HEAD + "connections:\n  - [scan.out -> mu.in\n  - x\nfoo: 1\n")
    assert err.line is not None and err.line >= 7
    assert "YAML syntax error" in err.problem and str(err).startswith(f"pipeline.yaml:{err.line}: ")


def test_yaml_syntax_error_bad_indentation() -> None:
    err = error("name: t\nnodes:\n  scan: {use: x}\n   mu: {use: y}\n")
    assert_at(err, 4, None, "YAML syntax error")


def test_missing_space_after_colon_names_the_key_value_line() -> None:
    err = error("name: t\nnodes:\n  scan:\n    use:bp_testnodes:Replay\n    params: {}\n")
    assert_at(err, 4, None, "'use:bp_testnodes:Replay' is not a key: put a space after ':'")
    assert "(the parser stopped on line 5: mapping values are not allowed here)" in err.problem
    err = error("name: t\nnodes:\n  scan:\n    params: {}\n    use:bp_testnodes:Replay\n")
    assert_at(err, 5, None, "'use:bp_testnodes:Replay' is not a key", "could not find expected")


@pytest.mark.parametrize("value", ["http://host/x", "C:\\data", "a b"])
def test_a_colon_without_space_in_a_value_is_not_taken_for_a_key(value: str) -> None:
    err = error(f"name: t\nnodes:\n  - {value}\n   x: 1\n")
    assert "put a space after ':'" not in err.problem, str(err)


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ('name: t\nnodes:\n  scan: {use: "bp_testnodes:Replay}\n  mu: {}\n', 3, "a quoted scalar"),
        ("name: t\nnodes: {scan: [1, 2\n\n\n", 2, "a flow sequence"),
        ("name: t\nnodes: {scan: 1\n\n\n", 2, "a flow mapping"),
    ],
)
def test_unclosed_quote_or_bracket_is_reported_where_it_opens(
    text: str, line: int, what: str
) -> None:
    assert_at(error(text), line, None, f"{what} starts here but is never closed", "on line 5")


def test_an_error_at_the_end_of_the_file_in_other_contexts_stays_there() -> None:
    err = error("name: t\nnodes: {scan: [1, 2,\n")
    assert_at(err, 3, None, "(while parsing a flow node started on line 3)")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("*.xdi", "'*.xdi'"), ("[a.xdi, *_2.xdi]", "'*_2.xdi'"), ("*[0-9].xdi", "'*[0-9].xdi'")],
)
def test_unquoted_glob_star_suggests_quoting(value: str, shown: str) -> None:
    err = error(f"name: t\nnodes:\n  scan: {{use: bp_testnodes:Replay}}\npaths: {value}\n")
    assert_at(err, 4, None, f"quote values that start with '*' (a YAML alias), e.g. {shown}")


def test_undefined_alias_without_glob_has_no_quoting_hint() -> None:
    err = error("name: t\nnodes:\n  scan: {use: bp_testnodes:Replay, params: *common}\n")
    assert_at(err, 3, None, "found undefined alias 'common'")
    assert "quote" not in err.problem


@pytest.mark.parametrize(
    "text",
    [
        "nodes: {scan: {use: x, params: {paths: " + "[" * 200 + "a" + "]" * 200 + "}}}\n",
        "nodes:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 400)) + " " * 400 + "x: 1\n",
        "nodes: " + "[" * 5000 + "\n",
    ],
)
def test_deep_nesting_is_refused_quickly(text: str) -> None:
    err = error(text)
    assert err.line is not None and err.line <= 100
    assert err.problem == "YAML nested too deeply (more than 100 levels)"


def test_empty_file() -> None:
    assert_at(error("# only a comment\n"), None, None, "empty")


def test_top_level_not_a_mapping() -> None:
    assert_at(error("# comment\n- scan\n- mu\n"), 2, None, "top level should be a mapping", "list")


def test_top_level_scalar() -> None:
    assert_at(error("\n# c\nhello\n"), 3, None, "top level should be a mapping")


def test_missing_nodes() -> None:
    assert_at(error("# c\nname: t\nconnections: []\n"), 2, None, "missing 'nodes:'")


def test_nodes_not_a_mapping() -> None:
    assert_at(error("name: t\nnodes:\n  - scan\n"), 2, None, "'nodes' should be a mapping")


def test_unknown_top_level_key_suggests() -> None:
    err = error(HEAD + "conections:\n  - scan -> mu\n")
    assert_at(err, 5, None, "unknown top-level key 'conections'", "did you mean 'connections'")


def test_name_of_wrong_type() -> None:
    assert_at(error("name: [a]\nnodes: {scan: {use: bp_testnodes:Replay}}\n"), 1, None, "name")


# --- node entries ----------------------------------------------------------------------------


def test_unknown_node_key() -> None:
    err = error(
        """\
        nodes:
          scan: {use: bp_testnodes:Replay}
          mu:
            use: bp_testnodes:Scale
            replica: 2
        connections: [scan -> mu]
        """
    )
    assert_at(err, 5, "mu", "unknown key 'replica'", "did you mean 'replicas'")


def test_param_beside_use_says_to_put_it_under_params() -> None:
    err = error(HEAD.replace("Scale}", "Scale, every: 3}") + "connections: [scan -> mu]\n")
    assert_at(err, 4, "mu", "unknown key 'every'", "'every' is a param of bp_testnodes:Scale")
    assert err.problem.endswith("put node parameters under 'params:'")


def test_unknown_node_key_unlike_any_hints_at_params() -> None:
    err = error(HEAD.replace("Scale}", "Scale, gain: 3}") + "connections: [scan -> mu]\n")
    assert_at(err, 4, "mu", "unknown key 'gain'", "node parameters go under 'params:'")
    err = error(HEAD.replace("Scale}", "Nope, every: 3}") + "connections: [scan -> mu]\n")
    assert_at(err, 4, "mu", "unknown key 'every'", "node parameters go under 'params:'")


def test_missing_use() -> None:
    err = error(HEAD + "  norm:\n    params: {every: 3}\nconnections: [scan -> mu, mu -> norm]\n")
    assert_at(err, 5, "norm", "missing 'use:'")


def test_node_entry_not_a_mapping() -> None:
    err = error(HEAD + "  norm: bp_testnodes:Scale\nconnections: [scan -> mu, mu -> norm]\n")
    assert_at(err, 5, "norm", "should be a mapping")


@pytest.mark.parametrize(
    ("value", "words"),
    [("0", ["greater than or equal to 1"]), ("two", ["integer", "'two'"]), ("1.5", ["integer"])],
)
def test_bad_replicas(value: str, words: list[str]) -> None:
    err = error(
        HEAD + f"  norm:\n    use: bp_testnodes:Scale\n    replicas: {value}\n"
        "connections: [scan -> mu, mu -> norm]\n"
    )
    assert_at(err, 7, "norm", "replicas", *words)


def test_invalid_node_name() -> None:
    err = error(HEAD + "  a.b: {use: bp_testnodes:Scale}\nconnections: [scan -> mu]\n")
    assert_at(err, 5, "a.b", "not a valid node name")


def test_duplicate_node_name() -> None:
    err = error(HEAD + "  mu: {use: bp_testnodes:Scale}\nconnections: [scan -> mu]\n")
    assert_at(err, 5, "mu", "duplicate node name 'mu'", "first on line 4")


def test_duplicate_key_in_node() -> None:
    err = error(
        HEAD + "  norm:\n    use: bp_testnodes:Scale\n    use: bp_testnodes:Join\n"
        "connections: [scan -> mu, mu -> norm]\n"
    )
    assert_at(err, 7, "norm", "duplicate key 'use'", "first on line 6")


def test_duplicate_top_level_key() -> None:
    err = error(HEAD + "name: u\n")
    assert_at(err, 5, None, "duplicate key 'name'", "first on line 1")


# --- node types and params -------------------------------------------------------------------


def test_unknown_worker() -> None:
    err = error(
        HEAD
        + "  norm:\n    params: {}\n    use: xas.normalise\nconnections: [scan -> mu, mu -> norm]\n"
    )
    assert_at(err, 7, "norm", "unknown node type 'xas.normalise'")


def test_use_class_missing_in_module() -> None:
    err = error(HEAD + "  norm: {use: bp_testnodes:Nope}\nconnections: [scan -> mu, mu -> norm]\n")
    assert_at(err, 5, "norm", "has no attribute 'Nope'")


def test_use_not_a_worker() -> None:
    err = error(
        HEAD + "  norm: {use: bp_testnodes:NotAWorker}\nconnections: [scan -> mu, mu -> norm]\n"
    )
    assert_at(err, 5, "norm", "not a beampipe.Worker subclass")


def test_use_module_failing_at_import_gives_no_traceback() -> None:
    err = error(HEAD + "  norm: {use: bp_badmod:X}\nconnections: [scan -> mu, mu -> norm]\n")
    assert_at(err, 5, "norm", "bp_badmod", "RuntimeError: boom at import")


def test_param_of_wrong_type_points_at_the_param() -> None:
    err = error(
        """\
        nodes:
          scan: {use: bp_testnodes:Replay}
          mu:
            use: bp_testnodes:Scale
            params:
              factor: 2
              every: ten
        connections: [scan -> mu]
        """
    )
    assert_at(err, 7, "mu")
    assert err.problem == "param 'every': Input should be a valid integer, got 'ten'"


def test_unknown_param_suggests() -> None:
    err = error(HEAD.replace("Scale}", "Scale, params: {evry: 5}}") + "connections: [scan -> mu]\n")
    assert_at(err, 4, "mu", "unknown param 'evry'", "'every', 'factor'", "did you mean 'every'")


def test_param_with_literal_choices() -> None:
    err = error(
        HEAD.replace("Replay}", "Replay, params: {pace: fast}}") + "connections: [scan -> mu]\n"
    )
    assert_at(err, 3, "scan", "param 'pace'", "'realtime' or 'max'", "'fast'")


def typed(params: str) -> PipelineError:
    """The error of node ``t`` (bp_typed:Typed, on line 5) with ``params``."""
    return error(
        HEAD + f"  t:\n    use: bp_typed:Typed\n    params: {params}\n"
        "connections: [scan -> mu, mu -> t]\n"
    )


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ("{pace: -10}", "param 'pace': should be 'max', 'realtime' or a number > 0, got -10"),
        ("{pace: fast}", "param 'pace': should be 'max', 'realtime' or a number, got 'fast'"),
        ("{limit: [1]}", "param 'limit': should be a boolean or an integer, got [1]"),
        ("{band: [1, x]}", "param 'band[1]': Input should be a valid number, got 'x'"),
        ("{band: 5}", "param 'band': should be 'auto' or a list, got 5"),
        ("{group: {mode: [1]}}", "param 'group.mode': Input should be a valid string, got [1]"),
        ("{group: {}}", "missing required param 'group.mode'"),
        ("{odd: 4}", "param 'odd': Value error, must be odd, got 4"),
        ("{span: [-150]}", "param 'span': needs 2 values, got 1 ([-150])"),
        ("{box: [1]}", "param 'box': needs 3 values, got 1 ([1])"),
    ],
)
def test_union_and_tuple_params_are_one_problem_in_the_users_terms(
    params: str, problem: str
) -> None:
    err = typed(params)
    assert_at(err, 7, "t")
    assert err.problem == problem


def test_union_errors_of_two_params_stay_apart() -> None:
    err = typed("{pace: -1, limit: x}")
    assert [e.problem.split(":")[0] for e in err.errors] == ["param 'pace'", "param 'limit'"]


def test_union_of_node_options_is_one_problem() -> None:
    err = error(HEAD.replace("Scale}", "Scale, ordered: 5}") + "connections: [scan -> mu]\n")
    assert_at(err, 4, "mu")
    assert err.problem == "ordered: should be a boolean or a list, got 5"


def test_nested_param_error_points_at_nested_key() -> None:
    err = error(
        HEAD + "  out:\n    use: bp_testnodes:Writer\n    params:\n      path: x.nxs\n"
        "      groups:\n        normalized: {mode: [1]}\n"
        "connections: [scan -> mu, mu -> out]\n"
    )
    assert_at(err, 10, "out", "param 'groups.normalized.mode'", "valid string")


def test_missing_required_param_points_at_node() -> None:
    err = error(HEAD + "  out: {use: bp_testnodes:Writer}\nconnections: [scan -> mu, mu -> out]\n")
    assert_at(err, 5, "out", "missing required param 'path'")


# --- connections ------------------------------------------------------------------------------


def test_unknown_node_in_connection() -> None:
    err = error(HEAD + "connections:\n  - scan.out -> mu.in\n  - mu.out -> nrom.in\n")
    assert_at(err, 7, None, "connection 'mu.out -> nrom.in'", "unknown node 'nrom'")


def test_unknown_node_in_connection_suggests() -> None:
    err = error(HEAD + "connections:\n  - scan.out -> mu2.in\n")
    assert_at(err, 6, None, "unknown node 'mu2'", "did you mean 'mu'")


@pytest.mark.parametrize(
    "text", ["scan.out => mu.in", "scan.out -> ", "scan.out.x -> mu", "a b -> c"]
)
def test_malformed_connection(text: str) -> None:
    err = error(HEAD + f"connections:\n  - scan -> mu\n  - {text}\n")
    assert_at(err, 7, None, "malformed connection", "->")


def test_connection_not_a_string() -> None:
    err = error(HEAD + "connections:\n  - scan -> mu\n  - {from: scan.out, to: mu.in}\n")
    assert_at(err, 7, None, "mapping without 'connect:'", "'from', 'to'", "routing")


def test_unknown_input_port_message() -> None:
    err = error(HEAD + "connections:\n  - scan.out -> mu.inn\n")
    assert str(err) == (
        "pipeline.yaml:6: node 'mu': unknown port 'inn' (ports of bp_testnodes:Scale: 'in')"
    )


def test_unknown_output_port_says_it_is_an_input() -> None:
    err = error(HEAD + "connections:\n  - scan.out -> mu.in\n  - mu.in -> mu.in\n")
    assert_at(err, 7, "mu", "unknown port 'in'", "ports of bp_testnodes:Scale: 'out'", "input port")


def test_default_input_port_of_any_port_node_must_be_named() -> None:
    err = error(HEAD + "  any: {use: bp_testnodes:AnyIn}\nconnections: [scan -> mu, mu -> any]\n")
    assert_at(err, 6, "any", "accepts any input port name", "'any.<port>'")


def test_reading_from_a_sink() -> None:
    err = error(
        HEAD + "  out: {use: bp_testnodes:Writer, params: {path: x}}\n"
        "connections:\n  - scan -> mu\n  - mu -> out\n  - out -> mu\n"
    )
    assert_at(err, 9, "out", "no output ports")


def test_source_with_an_input() -> None:
    err = error(HEAD + "connections:\n  - scan -> mu\n  - mu.out -> scan.in\n")
    assert_at(err, 7, "scan", "is a source", "'mu.out -> scan.in'")


def test_duplicated_connection_even_with_default_ports() -> None:
    err = error(HEAD + "connections:\n  - scan.out -> mu.in\n  - ' scan  ->  mu '\n")
    assert_at(err, 7, None, "'scan.out -> mu.in' is listed twice", "first on line 6")


def test_node_without_input() -> None:
    err = error(HEAD + "  norm: {use: bp_testnodes:Scale}\nconnections: [scan -> mu]\n")
    assert_at(err, 5, "norm", "has no input", "'other.out -> norm.in'")


def test_cycle_names_its_nodes() -> None:
    err = error(
        """\
        nodes:
          scan: {use: bp_testnodes:Replay}
          a: {use: bp_testnodes:Scale}
          b: {use: bp_testnodes:Join}
          c: {use: bp_testnodes:Scale}
        connections:
          - scan -> b.image
          - b.out -> c.in
          - c.out -> a.in
          - a.out -> b.i0
        """
    )
    assert_at(err, 10, "a", "cycle a -> b -> c -> a", "lines 10, 8, 9")


def test_self_loop() -> None:
    err = error(
        HEAD
        + "  j: {use: bp_testnodes:Join}\nconnections: [scan -> mu, scan -> j.image, j -> j.i0]\n"
    )
    assert_at(err, 6, "j", "cycle j -> j")


# --- reporting ------------------------------------------------------------------------------


def test_several_problems_are_reported_together_in_line_order() -> None:
    err = error(
        """\
        nodes:
          scan: {use: bp_testnodes:Replay, params: {pace: slow}}
          mu: {use: bp_testnodes:Scale, replica: 2}
          norm: {use: bp_testnodes:Nope}
        connections:
          - scan -> mu
          - mu.out -> nexus.in
        """
    )
    assert [(e.line, e.node) for e in err.errors] == [
        (2, "scan"),
        (3, "mu"),
        (4, "norm"),
        (7, None),
    ]
    lines = str(err).splitlines()
    assert len(lines) == 4
    assert all(line.startswith("pipeline.yaml:") for line in lines)
    assert (err.line, err.node) == (2, "scan")


def test_error_survives_pickling() -> None:
    err = error(HEAD + "connections:\n  - scan.out -> mu.inn\n  - mu -> x\n")
    assert len(err.errors) == 2
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err)
    assert [(e.line, e.node) for e in back.errors] == [(6, "mu"), (7, None)]


def test_error_is_a_value_error() -> None:
    assert issubclass(PipelineError, ValueError)


# --- overrides and files ----------------------------------------------------------------------


def test_override_of_unknown_node() -> None:
    err = error(HEAD + "connections: [scan -> mu]\n", overrides={"muu.every": 3})
    assert_at(err, None, None, "override 'muu.every'", "no node 'muu'", "did you mean 'mu'")


def test_override_without_param() -> None:
    err = error(HEAD + "connections: [scan -> mu]\n", overrides={"mu": 3})
    assert_at(err, None, None, "expected 'node.param'")


def test_bad_override_value_is_attributed_to_the_override() -> None:
    err = error(
        HEAD.replace("Scale}", "Scale, params: {every: 3}}") + "connections: [scan -> mu]\n",
        overrides={"mu.every": "ten"},
    )
    assert_at(err, 4, "mu", "param 'every'", "set by override 'mu.every'")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert str(info.value) == f"{path}: no such file"


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (b"name: t\n# M\xfcller\n", 2, ["invalid start byte: byte 0xfc in column 4", "'\xfc'"]),
        ("name: t\n# \u00b5m: ".encode() + b"\xe2\x82", 2, ["bytes 0xe2 0x82 in column 7"]),
    ],
)
def test_not_utf8_names_line_and_byte(
    content: bytes, line: int, words: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert (info.value.line, info.value.problem.startswith("not UTF-8 text")) == (line, True)
    for word in words:
        assert word in info.value.problem, str(info.value)


def test_file_errors_name_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + "connections: [scan -> mu.inn]\n")
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    assert str(info.value).startswith(f"{path}:5: node 'mu': unknown port 'inn'")


def test_deep_nesting_without_ruamels_depth_limit_is_still_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from beampipe.config import document

    monkeypatch.setattr(document, "MAX_DEPTH", 0)  # off: ruamel.yaml < 0.19 had no max_depth
    err = error("nodes: " + "[" * 400 + "]" * 400 + "\n")
    assert_at(err, None, None, "YAML nested too deeply")

"""Pipeline files made to hang or crash validation, or to crash ``beampipe run`` after passing
it: each is refused by ``beampipe validate`` (and so by ``run`` and ``deploy``) as
``FILE:LINE: problem``, with exit status 2 and no traceback.

The corpus is ``tests/pipelines/hostile/*.yaml``, with the comment header of the malformed
corpus (``# expect:``, ``# line:``, see ``test_malformed_pipelines.py``). Each file runs through
the CLI app in-process, except the one that hung validation (the "billion laughs"), which runs
as a subprocess with a memory cap and a generous timeout against a hang; a sample also runs as
the real ``beampipe validate`` and ``beampipe run``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from test_malformed_pipelines import Expected, assert_reported, expected, validate_in_process

from beampipe.config import parse_pipeline
from beampipe.config.composer import MAX_ALIAS_VALUES, MAX_VALUES
from beampipe.launch.placement import LocalPlacement
from beampipe.message import Message
from beampipe.message.key import MAX_REPEAT, KeyExpressionError, compile_key
from beampipe.transport.address import IPC_PATH_MAX

CORPUS = Path(__file__).parent / "pipelines" / "hostile"
FILES = sorted(p.name for p in CORPUS.glob("*.yaml"))

HANGS = {"billion-laughs.yaml"}
"""Files that hung or exhausted validation: run only as a capped subprocess."""

SUBPROCESS = ["billion-laughs.yaml", "key-deep-unary-minus.yaml", "node-name-too-long.yaml"]
"""The sample run as the real command."""

MEMORY_CAP = 2 << 30
"""Bytes of address space a subprocess may take: enough for beampipe, not for a blow-up."""

HANG_GUARD = 120
"""Seconds after which a subprocess counts as hung (a refusal takes about a second)."""


def command(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """``beampipe ARGS`` in a process of at most :data:`MEMORY_CAP` bytes: (output, status)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    done = subprocess.run(
        [sys.executable, "-m", "beampipe", *args],
        cwd=cwd,
        env={**os.environ, "TYPER_STANDARD_TRACEBACK": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        preexec_fn=cap,
    )
    return done.stdout + done.stderr, done.returncode


def test_every_file_says_what_to_expect() -> None:
    assert len(FILES) >= 15
    for name in FILES:
        assert expected(name, CORPUS).line is not None, name
    assert HANGS | set(SUBPROCESS) <= set(FILES)


@pytest.mark.parametrize("name", [n for n in FILES if n not in HANGS])
def test_hostile_file_is_refused_with_file_and_line(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, status = validate_in_process(name, CORPUS, monkeypatch)
    assert_reported(name, output, status, expected(name, CORPUS))


@pytest.mark.parametrize("name", SUBPROCESS)
def test_the_real_command_refuses_it(name: str) -> None:
    output, status = command("validate", name, cwd=CORPUS)
    assert_reported(name, output, status, expected(name, CORPUS))


def test_run_refuses_before_starting_anything(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text((CORPUS / "name-with-slash.yaml").read_text())
    output, status = command("run", "p.yaml", cwd=tmp_path)
    assert_reported("p.yaml", output, status, expected("name-with-slash.yaml", CORPUS))
    assert list(tmp_path.iterdir()) == [tmp_path / "p.yaml"]  # no logs, no output


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")
def test_an_endless_file_is_refused_after_250_000_bytes(tmp_path: Path) -> None:
    output, status = command("validate", "/dev/zero", cwd=tmp_path)
    want = Expected(("more than 250,000 bytes: too large for a pipeline file",), None)
    assert_reported("/dev/zero", output, status, want)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"name: t\n# M\xfcller\n", "not UTF-8 text"),
        (b"# " + b"x" * 250_000 + b"\n", "more than 250,000 bytes"),
    ],
)
def test_deploy_refuses_a_file_it_cannot_read_before_starting_a_manager(
    content: bytes, problem: str, tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_bytes(content)
    home = tmp_path / "home"
    output, status = command("deploy", "p.yaml", cwd=tmp_path, env={"BEAMPIPE_HOME": str(home)})
    assert_reported("p.yaml", output, status, Expected((problem,), 2 if b"M" in content else None))
    assert not home.exists()  # no manager was started


def test_a_file_of_more_values_than_read_in_a_second_is_refused() -> None:
    text = "nodes:\n  det:\n    use: detector_sim\n    params:\n      frames: 5\n      big: ["
    text += ",".join(["1"] * 100_000) + "]\n"  # 200,000 bytes
    with pytest.raises(ValueError) as info:
        parse_pipeline(text, "p.yaml")
    assert str(info.value).startswith(f"p.yaml:6: more than {MAX_VALUES:,} values")


def test_aliases_within_the_bound_are_expanded() -> None:
    levels = ["x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    levels += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 4)]
    text = "nodes:\n  det:\n    use: detector_sim\n    params:\n      frames: 5\n      lol:\n"
    text += "".join(f"        {line}\n" for line in levels)
    assert MAX_ALIAS_VALUES > 9**4
    with pytest.raises(ValueError, match="unknown param 'lol'"):  # read through, then checked
        parse_pipeline(text, "p.yaml")


def chain(n: int, loop: bool = False) -> str:
    """A pipeline of a source, ``n - 2`` workers in a row and a sink (or a loop back)."""
    lines = ["nodes:", "  n0: {use: detector_sim, params: {shape: [4, 4], frames: 5}}"]
    lines += [f"  n{i}: {{use: xas.transmission}}" for i in range(1, n - 1)]
    lines += [f"  n{n - 1}: {{use: nexus_writer, params: {{path: out/chain.nxs}}}}"]
    lines += ["connections:"] + [f"  - n{i} -> n{i + 1}" for i in range(n - 2)]
    lines += [f"  - n{n - 2} -> n{n - 1}.points"]
    if loop:
        lines += [f"  - n{n - 2} -> n1"]
    return "\n".join(lines) + "\n"


def test_a_chain_of_1200_nodes_is_valid() -> None:
    pipeline = parse_pipeline(chain(1200), "chain.yaml")
    assert len(pipeline.nodes) == 1200 and len(pipeline.connections) == 1199


def test_a_cycle_through_1200_nodes_is_reported_shortened() -> None:
    with pytest.raises(ValueError) as info:
        parse_pipeline(chain(1200, loop=True), "chain.yaml")
    (err,) = info.value.errors  # type: ignore[attr-defined]
    assert err.node == "n1" and err.line == 1204  # n1 -> n2: 1200 nodes, "connections:", n0 -> n1
    assert "cycle n1 -> n2 -> " in err.problem and "-> ... -> n1198 -> n1" in err.problem
    assert "1198 nodes" in err.problem and len(err.problem) < 400


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("-" * 5000 + "id", "5,002 characters long (at most 200)"),
        ("-" * 30 + "id", "nests 32 operations deep (at most 20)"),
        ("'a' * 1000000000000000", f"more than {MAX_REPEAT} characters"),
        ("2 * 'ab' * 500", f"more than {MAX_REPEAT} characters"),
        ("-stream", "unary '-' of a string is not possible"),
        ("stream - 1", "'-' between a string and an integer is not possible"),
        ("stream % 3", "'%' between a string and an integer is not possible"),
        ("metadata + 1", "'+' between the metadata and an integer is not possible"),
        ("id[0]", "an integer indexed by an integer is not possible"),
        ("id % 0", "'% 0' divides by zero"),
    ],
)
def test_key_expressions_are_bounded_and_typed_when_compiled(text: str, problem: str) -> None:
    with pytest.raises(KeyExpressionError) as info:
        compile_key(text)
    assert problem in str(info.value)


@pytest.mark.parametrize(
    ("text", "metadata", "problem"),
    [
        ("stream * id", {}, f"'*' would make more than {MAX_REPEAT} items"),
        ("-sample", {"sample": "Fe"}, "bad operand type for unary -"),
        ("sample * 10", {"sample": [1] * 200}, f"'*' would make more than {MAX_REPEAT} items"),
    ],
)
def test_key_expressions_are_bounded_when_evaluated(
    text: str, metadata: dict[str, object], problem: str
) -> None:
    key = compile_key(text)
    with pytest.raises(KeyExpressionError) as info:
        key(Message(stream="s", id=10**6, metadata=metadata))
    assert f"on message 's' id {10**6}: {problem}" in str(info.value)


def test_keys_within_the_bounds_still_work() -> None:
    msg = Message(stream="ab", id=7, metadata={"sample": "Fe"})
    assert compile_key("stream * 3 + sample")(msg) == "abababFe"
    assert compile_key("-(-id) // 2")(msg) == 3
    assert compile_key("'x' * 1000")(msg) == "x" * 1000


def test_a_socket_path_too_long_for_ipc_fails_the_start_clearly(tmp_path: Path) -> None:
    pipeline = parse_pipeline(chain(3), "chain.yaml")
    # "RUNDIR/control" and "RUNDIR/s-0-out" just fit, "RUNDIR/n0-0-out" does not
    deep = tmp_path / ("d" * (IPC_PATH_MAX - len("/control") - len(str(tmp_path)) - 1))
    short = chain(3).replace("n0", "s").replace("n1", "w")
    LocalPlacement("ipc").start(parse_pipeline(short, "c.yaml"), deep)
    with pytest.raises(ValueError) as info:
        LocalPlacement("ipc").start(pipeline, deep)
    text = str(info.value)
    assert f"{deep}/n0-0-out is {IPC_PATH_MAX + 1} bytes long" in text
    assert f"more than the {IPC_PATH_MAX}" in text and "'--transport tcp'" in text
    LocalPlacement("tcp").start(pipeline, deep)  # loopback TCP has no such limit


def test_the_longest_names_fit_an_ipc_path_in_the_default_run_directory(tmp_path: Path) -> None:
    name, node = "p" * 64, "n" * 32
    text = f"name: {name}\n" + chain(3).replace("n1", node)
    pipeline = parse_pipeline(text, "chain.yaml")
    rundir = Path("/tmp") / f"beampipe-{name[:16]}-abcdefgh"  # as the launcher makes it
    LocalPlacement("ipc").start(pipeline, rundir)


def test_an_output_path_that_is_an_existing_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out.nxs").mkdir()
    monkeypatch.chdir(tmp_path)
    text = chain(3).replace("out/chain.nxs", "out.nxs")
    with pytest.raises(ValueError, match=r"'out\.nxs' is an existing folder"):
        parse_pipeline(text, "chain.yaml")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("12345678901234567890", "integer 12345678901234567890 does not fit in 64 bits"),
        ("[&a [1, 2], *a]", None),
    ],
)
def test_overrides_are_bounded_too(value: str, problem: str | None) -> None:
    from beampipe.config import parse_override

    if problem is None:
        assert parse_override(f"n.p={value}") == ("n.p", [[1, 2], [1, 2]])
        return
    with pytest.raises(ValueError, match=problem):
        parse_override(f"n.p={value}")

"""A corpus of malformed pipeline files, each one realistic mistake: ``beampipe validate`` must
report it as ``FILE:LINE: ...`` with a meaningful message, exit with status 2 and never show a
Python traceback.

The corpus is ``tests/pipelines/malformed/*.yaml``. Each file starts with the comment lines

    # expect: <text the error message must contain>   (repeated: it must contain each)
    # line: <the line the error must name>      (left out where the mistake has no line)

and one line saying what the mistake is. Every file runs through the CLI app in-process (typer's
test runner: the same code and output as the command, but fast); a sample also runs the real
``beampipe validate`` in a subprocess, whose output must be the same.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import beampipe
from typer.testing import CliRunner

from beampipe.cli import app

CORPUS = Path(__file__).parent / "pipelines" / "malformed"
FILES = sorted(p.name for p in CORPUS.glob("*.yaml"))

NO_HEADER = {"empty-file.yaml": ("the file is empty", None)}
"""Files that cannot carry the comment header: ``{name: (expect, line)}``."""

KNOWN_BUGS: dict[str, str] = {}
"""Files whose message is wrong today: ``{name: what is wrong}`` (strict xfail, to be fixed)."""

REAL_COMMAND = [
    "tab-indentation.yaml",
    "unclosed-quote.yaml",
    "duplicate-node-key.yaml",
    "very-deep-nesting.yaml",
    "empty-file.yaml",
    "top-level-list.yaml",
    "connection-not-string.yaml",
    "use-own-module-import-error.yaml",
    "cycle.yaml",
    "nexus-connection-without-port.yaml",
]
"""The sample also run as a subprocess: each kind of mistake, and every place a traceback may
come from (the YAML parser, importing the user's module from the file's folder)."""

PYDANTIC_INTERNALS = re.compile(r"literal\[|constrained-|function-(?:after|before|wrap|plain)")
"""Names of pydantic's union members and validators, which mean nothing to the user."""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Expected:
    texts: tuple[str, ...]
    line: int | None


def expected(name: str, corpus: Path = CORPUS) -> Expected:
    """The ``# expect:`` and ``# line:`` of the file ``name`` of ``corpus``."""
    if name in NO_HEADER:
        text, line = NO_HEADER[name]
        return Expected((text,), line)
    fields: dict[str, list[str]] = {"expect": [], "line": []}
    for raw in (corpus / name).read_bytes().splitlines():
        if not raw.startswith(b"#"):
            break
        key, sep, value = raw[1:].decode("utf-8", "replace").partition(":")
        if sep and key.strip() in fields:
            fields[key.strip()].append(value.strip())
    assert fields["expect"], f"{name}: no '# expect:' comment on its first lines"
    assert len(fields["line"]) <= 1, f"{name}: more than one '# line:'"
    line = fields["line"][0] if fields["line"] else None
    return Expected(tuple(fields["expect"]), int(line) if line else None)


def cases(names: list[str]) -> list[object]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        if name in KNOWN_BUGS
        else name
        for name in names
    ]


def assert_reported(shown: str, output: str, status: int, want: Expected) -> None:
    """``output`` of validating the file ``shown`` (its path as given) reports ``want``."""
    text = ANSI.sub("", output)
    assert "Traceback" not in text, text
    assert status == 2, f"exit status {status}:\n{text}"
    where = f"{shown}:{want.line}: " if want.line is not None else f"{shown}: "
    assert any(
        where in line and all(part in line for part in want.texts) for line in text.splitlines()
    ), f"no line with {where!r} and {want.texts!r} in:\n{text}"
    assert not PYDANTIC_INTERNALS.search(text), text


def validate_in_process(
    name: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, int]:
    """``beampipe validate NAME`` in ``folder`` through the CLI app: (output, exit status)."""
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", list(sys.path))  # validate adds the file's folder
    result = CliRunner().invoke(app, ["validate", name])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # Escaping the command, it is what the user sees as a traceback.
        exc = result.exception
        return f"{result.output}Traceback: {type(exc).__name__}: {exc}", 1
    return result.output, result.exit_code


def test_the_corpus_is_large_and_every_file_says_what_to_expect() -> None:
    assert len(FILES) >= 30
    for name in FILES:
        expected(name)
    listed = set(NO_HEADER) | set(KNOWN_BUGS) | set(REAL_COMMAND)
    assert listed <= set(FILES), f"not in the corpus: {listed - set(FILES)}"


@pytest.mark.parametrize("name", cases(FILES))
def test_malformed_file_is_reported_with_file_and_line(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, status = validate_in_process(name, CORPUS, monkeypatch)
    assert_reported(name, output, status, expected(name))


@pytest.mark.parametrize("name", cases(REAL_COMMAND))
def test_the_real_command_reports_it_the_same(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's own traceback, should there be one: rich takes seconds to draw a deep one.
    standard = {"TYPER_STANDARD_TRACEBACK": "1"}
    done = beampipe("validate", name, cwd=CORPUS, env=standard, timeout=60)
    assert_reported(name, done.stdout + done.stderr, done.returncode, expected(name))
    output, status = validate_in_process(name, CORPUS, monkeypatch)
    assert (done.stderr, done.returncode) == (output, status)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        # the NeXus output given instead of the pipeline file
        ("xas-p65.nxs", b"\x89HDF\r\n\x1a\n\x00\x00\x00\x00\x00\x08\x08\x00" + bytes(range(256))),
        # saved as "Unicode" by a Windows editor
        ("pipeline.yaml", "nodes:\n  scan: {use: xdi_replay}\n".encode("utf-16")),
    ],
)
def test_a_binary_file_is_not_utf8_text(
    name: str, content: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / name).write_bytes(content)
    output, status = validate_in_process(name, tmp_path, monkeypatch)
    assert_reported(name, output, status, Expected(("not UTF-8 text",), None))

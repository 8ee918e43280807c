"""ruamel.yaml's syntax errors as a :class:`PipelineError` on the line where the mistake is, with
a hint for the common slips (``key:value`` without a space, an unquoted ``*`` glob)."""

from __future__ import annotations

import re

from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.parser import ParserError
from ruamel.yaml.scanner import ScannerError

from beampipe.config.errors import PipelineError

_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
"""What ruamel.yaml counts as a line break."""

_NO_SPACE = re.compile(r"^\s*(?:-\s+)*([A-Za-z_][\w.-]*:[^\s:/\\]((?!: )[^#])*?)\s*(?:#.*)?$")
"""A block line ``key:value`` (no space after the colon), so a plain scalar and not a key; not a
URL (``http://``), a Windows path (``C:\\``) or a ``::`` name."""

_UNCLOSED = re.compile(r"while \w+ (a quoted scalar|a flow sequence|a flow mapping)$")
"""The context of an error at the end of the file that means a quote or bracket is not closed."""

_GLOB = re.compile(r"[./*?\[]")
"""An alias name with one of these is probably a glob pattern, not an alias."""


def syntax_error(exc: MarkedYAMLError, text: str, file: str) -> PipelineError:
    """``exc`` of parsing ``text`` as one problem, at the line most likely at fault."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "invalid YAML"
    line = mark.line + 1 if mark is not None else None
    context = exc.context_mark
    unclosed = _UNCLOSED.match(exc.context or "")
    if unclosed and context is not None and line is not None and _at_end(exc.problem):
        problem = f"{unclosed[1]} starts here but is never closed ({exc.problem} on line {line})"
        return PipelineError(f"YAML syntax error: {problem}", file=file, line=context.line + 1)
    if exc.context and exc.problem and context is not None:
        problem += f" ({exc.context} started on line {context.line + 1})"
    lines = _BREAK.split(text)
    no_space = _no_space_line(lines, exc) if isinstance(exc, ScannerError | ParserError) else None
    if no_space is not None and line is not None:
        number, key_value = no_space
        problem = (
            f"{key_value!r} is not a key: put a space after ':' "
            f"(the parser stopped on line {line}: {exc.problem or problem})"
        )
        line = number
    alias = _alias(lines, exc)
    if alias is not None and (alias == "*" or _GLOB.search(alias[1:])):
        problem += f"; quote values that start with '*' (a YAML alias), e.g. {alias!r}"
    return PipelineError(f"YAML syntax error: {problem}", file=file, line=line)


def _at_end(problem: str | None) -> bool:
    return problem is not None and ("end of stream" in problem or "<stream end>" in problem)


def _no_space_line(lines: list[str], exc: MarkedYAMLError) -> tuple[int, str] | None:
    """``(line, text)`` of a ``key:value`` line just before the error (or where it began)."""
    if exc.problem_mark is None:
        return None
    at = exc.problem_mark.line
    candidates = [at - 1, at]
    if exc.context_mark is not None:
        candidates.insert(0, exc.context_mark.line)
    for number in candidates:
        match = _NO_SPACE.match(lines[number]) if 0 <= number < len(lines) else None
        if match:
            return number + 1, match.group(1)
    return None


def _alias(lines: list[str], exc: MarkedYAMLError) -> str | None:
    """The text at an alias the parser stumbled on (``*.xdi``), if that is the error."""
    if (exc.problem or "").startswith("found undefined alias"):
        mark = exc.problem_mark
    elif exc.context == "while scanning an alias":
        mark = exc.context_mark
    else:
        return None
    if mark is None or not 0 <= mark.line < len(lines):
        return None
    match = re.match(r"\*(?:\[[^\]\s]*\]|[^\s,\[\]{}])*", lines[mark.line][mark.column :])
    return match.group(0) if match else None

"""Overriding params from the command line: ``beampipe run --set node.param=value``."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ruamel.yaml.error import YAMLError

from beampipe.config.composer import LimitError
from beampipe.config.document import NOT_FINITE, load_yaml, non_finite, plain


def parse_override(expr: str) -> tuple[str, Any]:
    """``"node.param=value"`` as ``("node.param", value)``, the value read as a YAML scalar or flow
    collection (``50`` -> 50, ``[a, b]`` -> ['a', 'b'], ``max`` -> 'max'; unparsable -> the text).

    Raises:
        ValueError: no ``=`` in ``expr``; the value goes beyond a limit of
            :mod:`beampipe.config.composer` (aliases, 64-bit integers) or is not finite.
    """
    key, sep, text = expr.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {expr!r}: expected 'node.param=value'")
    try:
        value = load_yaml(text, typ="safe") if text.strip() else ""
    except LimitError as exc:
        raise ValueError(f"--set {expr[:80]!r}: {exc.problem}") from None
    except (YAMLError, RecursionError):
        value = text
    value = plain(value)
    if non_finite(value):
        raise ValueError(f"--set {expr[:80]!r}: {NOT_FINITE}")
    return key.strip(), value


def apply_overrides(
    params: Mapping[str, dict[str, Any]], overrides: Mapping[str, Any]
) -> tuple[dict[str, set[tuple[str, ...]]], list[str]]:
    """Set ``overrides`` (``{"node.param": value}``, nested params as ``node.a.b``) in the
    ``{node: params}`` dicts, in place.

    Returns:
        ``({node: {param path, ...}}, problems)``: what was overridden, and what could not be
        (unknown node, malformed key, a nested key under a param that is not a mapping).
    """
    applied: dict[str, set[tuple[str, ...]]] = {}
    problems = []
    for key, value in overrides.items():
        node, *path = [part.strip() for part in str(key).split(".")]
        if not path or not node or not all(path):
            problems.append(f"override {key!r}: expected 'node.param'")
            continue
        if node not in params:
            hint = difflib.get_close_matches(node, list(params), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(
                f"override {key!r}: no node {node!r} (nodes: {', '.join(params)}{suggestion})"
            )
            continue
        target = params[node]
        for i, part in enumerate(path[:-1]):
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(
                    f"override {key!r}: param {'.'.join(path[: i + 1])!r} of node {node!r} "
                    "is not a mapping"
                )
                break
            target = child
        else:
            target[path[-1]] = plain(value)
            applied.setdefault(node, set()).add(tuple(path))
    return applied, problems

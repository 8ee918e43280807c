"""Key expressions: which replica gets a message under ``routing: by_key``.

A key expression is a small arithmetic expression over a message, written in the pipeline file::

    key: id // 10                  # ten consecutive frames to the same replica
    key: stream                    # a whole stream to one replica
    key: metadata["sample"]        # or just: sample (a bare name is a metadata field)

Allowed: the names ``id`` (int), ``stream`` (str) and ``metadata`` (dict); any other bare name is
the metadata field of that name; integer and string constants; ``+ - * // %``, unary ``-`` and
subscripts ``[...]``. Nothing else (no calls, no attributes), so a pipeline file cannot run code.
Messages with equal keys go to the same replica: an ``int`` key ``k`` to replica ``k mod n``,
any other key to ``crc32(repr(k)) mod n`` (stable across processes, unlike ``hash``).

Bounds, so that no key can hang or exhaust a process: at most :data:`MAX_LENGTH` characters and
:data:`MAX_DEPTH` levels of operations; a string or list made by ``*`` holds at most
:data:`MAX_REPEAT` items (``'a' * 10000`` is refused when compiled, ``stream * id`` when
evaluated). Where the types are known (``id``, ``stream``, ``metadata``, constants), an
operation they do not support (``-stream``, ``stream - 1``, ``id // 0``) is refused when compiled.
"""

from __future__ import annotations

import ast
import operator
import zlib
from collections.abc import Callable
from typing import Any

from beampipe.message.model import Message

MAX_LENGTH = 200
"""Characters of a key expression."""

MAX_DEPTH = 20
"""Levels of operations and subscripts in a key expression (``-(-id)`` has three)."""

MAX_REPEAT = 1000
"""Items (characters of a string) that ``*`` may make."""

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_SIGNS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%"}

KeyFunction = Callable[[Message], Any]

Kind = type | None
"""What an expression is known to give: ``int``, ``str``, ``dict``, or ``None`` (unknown: a
metadata field)."""


class KeyExpressionError(ValueError):
    """A key expression is not allowed or cannot be evaluated on a message."""


def compile_key(text: str) -> KeyFunction:
    """The function ``message -> key`` that ``text`` describes.

    Raises:
        KeyExpressionError: ``text`` is not a valid key expression, is over a bound, or applies
            an operation to values that do not support it (says which).
    """
    if len(text) > MAX_LENGTH:
        raise KeyExpressionError(
            f"key {text[:40]!r}... is {len(text):,} characters long (at most {MAX_LENGTH})"
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise KeyExpressionError(f"key {text!r} is not an expression: {exc.msg}") from None
    depth = _depth(tree.body)
    if depth > MAX_DEPTH:
        raise KeyExpressionError(
            f"key {text!r} nests {depth} operations deep (at most {MAX_DEPTH})"
        )
    return _build(tree.body, text)[0]


def replica_of(key: Any, replicas: int) -> int:
    """The replica index (0-based) for ``key`` among ``replicas``."""
    if isinstance(key, bool) or not isinstance(key, int):
        return zlib.crc32(repr(key).encode()) % replicas
    return key % replicas


def _depth(root: ast.AST) -> int:
    """Levels of ``root`` (without recursion: the tree may be deep)."""
    deepest, stack = 0, [(root, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _build(node: ast.expr, text: str) -> tuple[KeyFunction, Kind, Any]:
    """``(function, kind, constant value or None)`` of ``node``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | str):
        value = node.value
        return (lambda msg: value), int if isinstance(value, int) else str, value
    if isinstance(node, ast.Name):
        return _name(node.id, text)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _binary(node, text)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner, kind, value = _build(node.operand, text)
        if kind not in (int, None):
            _refuse(text, f"unary '-' of {_noun(kind)} is not possible")
        const = -value if isinstance(value, int) else None
        return (lambda msg: _negate(inner(msg), msg, text)), kind, const
    if isinstance(node, ast.Subscript):
        container, kind, _ = _build(node.value, text)
        index, index_kind, _ = _build(node.slice, text)
        if kind is int or (kind is str and index_kind is str):
            _refuse(text, f"{_noun(kind)} indexed by {_noun(index_kind)} is not possible")
        result = str if kind is str else None
        return (lambda msg: _subscript(container(msg), index(msg), msg, text)), result, None
    what = ast.unparse(node)
    raise KeyExpressionError(
        f"key {text!r}: {what!r} is not allowed (use id, stream, metadata fields, "
        "integer/string constants, + - * // % and [...])"
    )


def _name(name: str, text: str) -> tuple[KeyFunction, Kind, Any]:
    if name == "id":
        return (lambda msg: msg.id), int, None
    if name == "stream":
        return (lambda msg: msg.stream), str, None
    if name == "metadata":
        return (lambda msg: msg.metadata), dict, None
    return (lambda msg: _subscript(msg.metadata, name, msg, text)), None, None


def _binary(node: ast.BinOp, text: str) -> tuple[KeyFunction, Kind, Any]:
    op, sign = _BINARY[type(node.op)], _SIGNS[type(node.op)]
    left, a, a_value = _build(node.left, text)
    right, b, b_value = _build(node.right, text)
    kind = _result(sign, a, b, text)
    if sign in ("//", "%") and b is int and b_value == 0:
        _refuse(text, f"'{sign} 0' divides by zero")
    if sign == "*" and {a, b} == {str, int}:
        count = a_value if a is int else b_value
        part = b_value if a is int else a_value
        if count is not None and (len(part) if part is not None else 1) * count > MAX_REPEAT:
            _refuse(text, f"'*' would make a string of more than {MAX_REPEAT} characters")
    const = op(a_value, b_value) if None not in (a_value, b_value) else None
    return (lambda msg: _apply(op, left(msg), right(msg), msg, text)), kind, const


def _result(sign: str, a: Kind, b: Kind, text: str) -> Kind:
    """What ``a SIGN b`` gives, where known; refuses what the known kinds do not support."""
    if a is None or b is None:
        return None
    if a is int and b is int:
        return int
    if sign == "+" and a is str and b is str:
        return str
    if sign == "*" and {a, b} == {str, int}:
        return str
    _refuse(text, f"'{sign}' between {_noun(a)} and {_noun(b)} is not possible")
    return None


def _refuse(text: str, what: str) -> None:
    raise KeyExpressionError(f"key {text!r}: {what}")


def _noun(kind: Kind) -> str:
    return {int: "an integer", str: "a string", dict: "the metadata"}.get(kind, "a value")


def _subscript(container: Any, index: Any, msg: Message, text: str) -> Any:
    try:
        return container[index]
    except (KeyError, IndexError, TypeError) as exc:
        raise KeyExpressionError(
            f"key {text!r} on message {msg.stream!r} id {msg.id}: no {index!r} "
            f"({type(exc).__name__})"
        ) from None


def _negate(value: Any, msg: Message, text: str) -> Any:
    try:
        return -value
    except TypeError as exc:
        raise KeyExpressionError(
            f"key {text!r} on message {msg.stream!r} id {msg.id}: {exc}"
        ) from None


def _apply(op: Callable[[Any, Any], Any], a: Any, b: Any, msg: Message, text: str) -> Any:
    if op is operator.mul and _repeats(a, b) > MAX_REPEAT:
        raise KeyExpressionError(
            f"key {text!r} on message {msg.stream!r} id {msg.id}: '*' would make more than "
            f"{MAX_REPEAT} items"
        )
    try:
        return op(a, b)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise KeyExpressionError(
            f"key {text!r} on message {msg.stream!r} id {msg.id}: {exc}"
        ) from None


def _repeats(a: Any, b: Any) -> int:
    """Items that ``a * b`` makes when it repeats a sequence; 0 when it multiplies numbers."""
    for seq, count in ((a, b), (b, a)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(count, int):
            return len(seq) * count
    return 0

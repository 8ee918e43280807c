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
"""

from __future__ import annotations

import ast
import operator
import zlib
from collections.abc import Callable
from typing import Any

from beampipe.message.model import Message

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}

KeyFunction = Callable[[Message], Any]


class KeyExpressionError(ValueError):
    """A key expression is not allowed or cannot be evaluated on a message."""


def compile_key(text: str) -> KeyFunction:
    """The function ``message -> key`` that ``text`` describes.

    Raises:
        KeyExpressionError: ``text`` is not a valid key expression (says what is not allowed).
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise KeyExpressionError(f"key {text!r} is not an expression: {exc.msg}") from None
    return _build(tree.body, text)


def replica_of(key: Any, replicas: int) -> int:
    """The replica index (0-based) for ``key`` among ``replicas``."""
    if isinstance(key, bool) or not isinstance(key, int):
        return zlib.crc32(repr(key).encode()) % replicas
    return key % replicas


def _build(node: ast.expr, text: str) -> KeyFunction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | str):
        value = node.value
        return lambda msg: value
    if isinstance(node, ast.Name):
        return _name(node.id, text)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op = _BINARY[type(node.op)]
        left, right = _build(node.left, text), _build(node.right, text)
        return lambda msg: _apply(op, left(msg), right(msg), msg, text)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _build(node.operand, text)
        return lambda msg: -inner(msg)
    if isinstance(node, ast.Subscript):
        container, index = _build(node.value, text), _build(node.slice, text)
        return lambda msg: _subscript(container(msg), index(msg), msg, text)
    what = ast.unparse(node)
    raise KeyExpressionError(
        f"key {text!r}: {what!r} is not allowed (use id, stream, metadata fields, "
        "integer/string constants, + - * // % and [...])"
    )


def _name(name: str, text: str) -> KeyFunction:
    if name == "id":
        return lambda msg: msg.id
    if name == "stream":
        return lambda msg: msg.stream
    if name == "metadata":
        return lambda msg: msg.metadata
    return lambda msg: _subscript(msg.metadata, name, msg, text)


def _subscript(container: Any, index: Any, msg: Message, text: str) -> Any:
    try:
        return container[index]
    except (KeyError, IndexError, TypeError) as exc:
        raise KeyExpressionError(
            f"key {text!r} on message {msg.stream!r} id {msg.id}: no {index!r} "
            f"({type(exc).__name__})"
        ) from None


def _apply(op: Callable[[Any, Any], Any], a: Any, b: Any, msg: Message, text: str) -> Any:
    try:
        return op(a, b)
    except (TypeError, ZeroDivisionError) as exc:
        raise KeyExpressionError(
            f"key {text!r} on message {msg.stream!r} id {msg.id}: {exc}"
        ) from None

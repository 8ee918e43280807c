"""pydantic's errors restated in terms of what the user wrote: no union members, whole tuples.

pydantic reports a value that fits no member of a union (``Literal["max", "realtime"] |
PositiveFloat``) once per member, each under a location naming the member
(``pace.literal['max','realtime']``, ``pace.constrained-float``); and a tuple given too few
values as a missing item (``pre_edge[1]``). :func:`simplify` turns these into one error each, at
the location in the file.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic_core import ErrorDetails

SYNTHETIC = frozenset({"union", "tuple_length"})
"""Error types made by :func:`simplify`; their ``msg`` is the whole problem, value included."""

_SPECIFIC = frozenset({"value_error", "assertion_error"})
"""Errors of a validator that accepted the type but refused the value: worth showing as they are."""

_TYPES = {
    "an integer": ("int_type", "int_parsing", "int_from_float"),
    "a number": ("float_type", "float_parsing", "decimal_type", "decimal_parsing"),
    "a string": ("string_type",),
    "a boolean": ("bool_type", "bool_parsing"),
    "a list": ("list_type", "tuple_type", "set_type", "frozen_set_type", "iterable_type"),
    "a mapping": ("dict_type", "model_type", "model_attributes_type", "dataclass_type"),
    "a path": ("path_type",),
    "null": ("none_required",),
}
_NOUN_OF_TYPE = {kind: noun for noun, kinds in _TYPES.items() for kind in kinds}
_NOUN_OF_TAG = {
    "int": "an integer",
    "float": "a number",
    "decimal": "a number",
    "str": "a string",
    "list": "a list",
    "tuple": "a list",
    "dict": "a mapping",
}
_COMPARISONS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def simplify(errors: list[ErrorDetails], data: Any) -> list[ErrorDetails]:
    """``errors`` of validating ``data``, with each union's errors made one and each tuple's
    missing items made one ``needs N values`` error (types :data:`SYNTHETIC`).

    Where one member of a union got further than the others (the value has its shape, but
    something inside is wrong, or its own validator refused it), that member's errors are kept
    instead, at the union's location.
    """
    found = [(err, *_member_tag_index(err, data)) for err in errors]
    members = Counter(tuple(err["loc"][:at]) for err, at, _ in found if at is not None)
    out: list[ErrorDetails] = []
    unions: dict[tuple[Any, ...], list[tuple[str, ErrorDetails]]] = {}
    for err, at, sure in found:
        prefix = tuple(err["loc"][:at]) if at is not None else ()
        if at is None or not (sure or members[prefix] > 1):
            out.append(err)
            continue
        if prefix not in unions:
            unions[prefix] = []
            out.append(_synthetic("_union", prefix, "", None))
        stripped = {**err, "loc": prefix + tuple(err["loc"][at + 1 :])}
        unions[prefix].append((str(err["loc"][at]), stripped))  # type: ignore[typeddict-item]
    result: list[ErrorDetails] = []
    for err in out:
        if err["type"] == "_union":
            result.extend(_one_union(err["loc"], unions[tuple(err["loc"])], data))
        else:
            result.append(err)
    return _tuple_lengths(result)


def _member_tag_index(err: ErrorDetails, data: Any) -> tuple[int | None, bool]:
    """Where in ``err``'s location a union member's name is, if anywhere: the first part that is
    not a key or index of the data at that point; and whether that is sure. It is not when the
    part is the last one and the data there a mapping: then it may as well be a key that is
    absent (a param's default refused by its validator); a missing key is never a member."""
    value, loc = data, err["loc"]
    for i, part in enumerate(loc):
        if part == "[key]":
            break
        if _has_key(value, part) or _has_index(value, part):
            value = value[part]
            continue
        last = i == len(loc) - 1
        if isinstance(part, str) and not (last and err["type"] == "missing"):
            return i, not (last and isinstance(value, dict))
        break
    return None, True


def _one_union(
    loc: tuple[Any, ...], members: list[tuple[str, ErrorDetails]], data: Any
) -> list[ErrorDetails]:
    for tag, err in members:
        if len(err["loc"]) > len(loc) or err["type"] in _SPECIFIC:
            return simplify([e for t, e in members if t == tag], data)
    alternatives: list[str] = []
    for tag, err in members:
        for text in _alternatives(tag, err):
            if text not in alternatives:
                alternatives.append(text)
    value = members[0][1]["input"]
    got = "nothing" if value is None else short_repr(value)
    msg = f"should be {_either(alternatives)}, got {got}"
    return [_synthetic("union", loc, msg, value)]


def _alternatives(tag: str, err: ErrorDetails) -> list[str]:
    """What union member ``tag`` would have accepted, as noun phrases."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error" and "expected" in ctx:
        return re.split(r", | or ", str(ctx["expected"]))
    if kind in _NOUN_OF_TYPE:
        return [_NOUN_OF_TYPE[kind]]
    noun = _NOUN_OF_TAG.get(tag.removeprefix("constrained-").split("[")[0], "a value")
    if kind in _COMPARISONS and _COMPARISONS[kind][0] in ctx:
        key, sign = _COMPARISONS[kind]
        return [f"{noun} {sign} {_number(ctx[key])}"]
    text = err["msg"].split(", unable to ")[0]
    return [f"{noun} ({text.removeprefix('Input should be ')})"]


def _tuple_lengths(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """The missing items of one list value (a tuple given too few values) as one error."""
    out: list[ErrorDetails] = []
    needed: dict[tuple[Any, ...], int] = {}
    for err in errors:
        loc, value = tuple(err["loc"]), err["input"]
        item = bool(loc) and isinstance(loc[-1], int) and isinstance(value, list)
        if err["type"] == "missing" and item:
            if loc[:-1] not in needed:
                out.append(_synthetic("tuple_length", loc[:-1], "", value))
            needed[loc[:-1]] = max(needed.get(loc[:-1], 0), loc[-1] + 1)
        else:
            out.append(err)
    for err in out:
        if err["type"] == "tuple_length":
            n, value = needed[tuple(err["loc"])], err["input"]
            err["msg"] = f"needs {n} values, got {len(value)} ({short_repr(value)})"
    return out


def _synthetic(kind: str, loc: tuple[Any, ...], msg: str, value: Any) -> ErrorDetails:
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _has_key(value: Any, key: Any) -> bool:
    try:
        return isinstance(value, dict) and key in value
    except TypeError:  # unhashable
        return False


def _has_index(value: Any, index: Any) -> bool:
    return isinstance(value, list) and isinstance(index, int) and 0 <= index < len(value)

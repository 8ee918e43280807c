"""Finding a node class from the ``use:`` of a pipeline file.

``use`` is either a registered name (entry point group ``beampipe.nodes``: the built-ins, and any
installed package may add its own) or an import path ``package.module:Class``.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points

from beampipe.worker.base import Node, Source, Worker

ENTRY_POINT_GROUP = "beampipe.nodes"


class UnknownNodeType(LookupError):
    """``use:`` names no registered node and no importable ``module:Class``."""


def registered() -> dict[str, str]:
    """``{name: "module:Class"}`` for every registered node type."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve(use: str) -> type[Node]:
    """The node class for ``use``: a :class:`~beampipe.Worker` or :class:`~beampipe.Source`
    subclass.

    Raises:
        UnknownNodeType: not registered, module not importable, attribute missing, or neither
            a :class:`~beampipe.Worker` nor a :class:`~beampipe.Source` subclass; the message
            says which and suggests close names. Whatever else importing the module raises
            (e.g. the ``TypeError`` of a class that misdeclares ``stateful``) propagates.
    """
    known = registered()
    target = known.get(use, use)
    if ":" not in target:
        hint = difflib.get_close_matches(use, known, n=3)
        suggestion = f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""
        raise UnknownNodeType(
            f"unknown node type {use!r}{suggestion} (built-ins: {', '.join(sorted(known))}; "
            "or give 'package.module:Class')"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownNodeType(f"cannot import module {module_name!r} for {use!r}: {exc}") from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise UnknownNodeType(f"module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Worker | Source)):
        raise UnknownNodeType(f"{target!r} is not a beampipe.Worker subclass")
    return cls

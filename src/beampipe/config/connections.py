"""The text form of a connection: ``source.port -> target.port`` (ports optional)."""

from __future__ import annotations

import re
from typing import NamedTuple

NAME = r"[A-Za-z_][\w-]*"
"""A node or port name as a connection is parsed: letters, digits, ``_`` and ``-``, not
starting with a digit or ``-`` (what a node's name may be is :mod:`beampipe.config.names`)."""

_END = rf"({NAME})(?:\s*\.\s*({NAME}))?"
_CONNECTION = re.compile(rf"^\s*{_END}\s*->\s*{_END}\s*$")


class ConnectionRef(NamedTuple):
    """A parsed connection string; a port is ``None`` where the text leaves it to the default."""

    source: str
    source_port: str | None
    target: str
    target_port: str | None

    def __str__(self) -> str:
        """As written: ``a.out -> b.in`` (``a -> b`` where the ports are left out)."""
        source = self.source + (f".{self.source_port}" if self.source_port else "")
        target = self.target + (f".{self.target_port}" if self.target_port else "")
        return f"{source} -> {target}"


def parse_connection(text: str) -> ConnectionRef | None:
    """The parts of ``text``, or ``None`` if it is not of the form ``a.out -> b.in``."""
    match = _CONNECTION.match(text)
    return ConnectionRef(*match.groups()) if match else None

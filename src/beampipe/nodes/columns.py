"""Reading named numeric arrays from a message's data, with errors that say what is there."""

from __future__ import annotations

import numpy as np

from beampipe.message import Message


class MissingColumn(KeyError):
    """A message lacks a data entry a worker's params name.

    Attributes:
        column: the name asked for.
        available: the names the message has.
    """

    def __init__(self, column: str, available: list[str], node: str = "") -> None:
        self.column = column
        self.available = available
        prefix = f"{node}: " if node else ""
        super().__init__(
            f"{prefix}no column {column!r} in the message data; available: "
            f"{', '.join(available) or '(none)'} (set the node's params to pick other columns)"
        )

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def numeric(msg: Message, name: str, node: str = "", kinds: str = "biuf") -> np.ndarray:
    """``msg.data[name]``, checked to be an array of a numeric dtype kind in ``kinds`` (numpy
    kind letters: ``b`` bool, ``i``/``u`` integers, ``f`` float, ``c`` complex); as it is.

    Raises:
        MissingColumn: ``name`` is not in ``msg.data``.
        TypeError: the entry is ``bytes`` or of another dtype kind.
    """
    try:
        value = msg.data[name]
    except KeyError:
        raise MissingColumn(name, list(msg.data), node) from None
    if isinstance(value, bytes) or value.dtype.kind not in kinds:
        kind = "bytes" if isinstance(value, bytes) else f"dtype {value.dtype}"
        raise TypeError(f"{node + ': ' if node else ''}column {name!r} is {kind}, not numeric")
    return value


def column(msg: Message, name: str, node: str = "") -> np.ndarray:
    """``msg.data[name]`` as a float64 array (no copy if it already is one; shape kept).

    Raises:
        MissingColumn: ``name`` is not in ``msg.data``.
        TypeError: the entry is ``bytes`` or not of a real numeric (or bool) dtype.
    """
    return np.asarray(numeric(msg, name, node), dtype=np.float64)

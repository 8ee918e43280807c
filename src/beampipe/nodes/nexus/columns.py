"""From message data to the datasets of a group file: what is data, dataset names, plot axes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import beampipe
from beampipe.nodes.nexus.meta import nexus_name, unique_name

__all__ = [
    "CONVENTION_KEYS",
    "MissingMetadata",
    "column_names",
    "metadata_columns",
    "numeric_arrays",
    "numeric_scalars",
    "plot_axes",
]

CONVENTION_KEYS = frozenset({"signal", "axes", "units", "long_names"})
"""Message metadata keys that describe the data rather than being data."""


def numeric_arrays(msg: beampipe.Message) -> dict[str, np.ndarray]:
    """``msg.data`` as numpy arrays.

    Raises:
        TypeError: a value is ``bytes`` or an array of non-numeric dtype (bool, int, uint,
            float and complex are accepted).
    """
    arrays = {}
    for name, value in msg.data.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            kind = type(value).__name__ if not isinstance(value, np.ndarray) else value.dtype
            raise TypeError(
                f"stream {msg.stream!r} id {msg.id} port {msg.port!r}: {name!r} is {kind}; "
                "nexus_writer stores numeric arrays only"
            )
        arrays[name] = value
    return arrays


class MissingMetadata(KeyError):
    """A metadata item the writer's ``groups.<port>.metadata`` names is not in a message."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def metadata_columns(msg: beampipe.Message, keys: list[str]) -> dict[str, np.ndarray]:
    """``{last part of key: 0-d array}`` of the metadata items ``keys`` of ``msg`` (a dotted
    key looks into a dict: ``positions.samx`` -> ``samx``).

    Raises:
        MissingMetadata: (a ``KeyError``) an item is missing; names stream, id, port and the keys
            present.
        TypeError: an item is not a number (bools are not).
    """
    where = f"stream {msg.stream!r} id {msg.id} port {msg.port!r}"
    columns = {}
    for key in keys:
        value: Any = msg.metadata
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                present = ", ".join(value) if isinstance(value, Mapping) else type(value).__name__
                raise MissingMetadata(
                    f"{where}: no metadata item {key!r} to store ({part!r} not in: {present})"
                )
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{where}: metadata item {key!r} = {value!r} is not a number")
        columns[key.rsplit(".", 1)[-1]] = np.asarray(value)
    return columns


def numeric_scalars(metadata: Mapping[str, Any]) -> dict[str, int | float]:
    """The int and float items of ``metadata`` (not bools, not the convention keys)."""
    return {
        k: v
        for k, v in metadata.items()
        if k not in CONVENTION_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
    }


def plot_axes(rank: int, axes: list[str] | None, mode: str, known: set[str]) -> list[str]:
    """The ``axes`` attribute for a signal of rank ``rank`` (as stored).

    In replace mode a list longer than the rank keeps its first ``rank`` names (the rest name
    the axes of a message's other arrays: ``xas.exafs`` sends ``[r, k, energy]``). In append
    mode a list one shorter than the rank gets ``id`` (the axis messages are stacked along) in
    front. A list of another length than the rank, or none, is replaced by ``id`` then ``.``
    (append mode) or all ``.`` (replace mode); names not in ``known`` become ``.``. So the
    attribute always passes nxcheck.
    """
    if axes is not None and mode == "replace" and len(axes) > rank:
        axes = axes[:rank]
    if axes is not None and mode == "append" and len(axes) == rank - 1:
        axes = ["id", *axes]
    if axes is None or len(axes) != rank:
        axes = ["id", *["."] * (rank - 1)] if mode == "append" else ["."] * rank
    return [a if a in known else "." for a in axes]


def column_names(keys: list[str]) -> dict[str, str]:
    """``{key: dataset name}``: valid NeXus names, unique, ``id`` reserved."""
    taken = {"id"}
    columns = {}
    for key in keys:
        columns[key] = unique_name(nexus_name(key, "data"), taken)
        taken.add(columns[key])
    return columns

"""Names along an axis and per-name images in a group file of ``nexus_writer``.

A message's metadata may name what lies along an axis of its data: the ``map`` reducer's
``names`` (the element lines along the first axis of its maps), ``xrf.fit``'s ``lines``. Such
lists of strings become string datasets of the port's NXdata group, usable as axes
(``axes = ["names", "y", "x"]``; NXdata allows a field of strings as an axis:
https://manual.nexusformat.org/classes/base_classes/NXdata.html). The metadata ``images``
(``{name: data name of a 2-D array}``, e.g. ``{"Fe Ka": "area_Fe_Ka"}``) asks for one NXdata group
per name whose signal is a hard link to that array, plotted against the group's own axes, so a
viewer shows each element's map by its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

import beampipe
from beampipe.nodes.nexus.columns import CONVENTION_KEYS
from beampipe.nodes.nexus.meta import new_group, nexus_name, put, unique_name

__all__ = ["string_lists", "write_images", "write_names", "write_strings"]

_STR = h5py.string_dtype()


def string_lists(metadata: Mapping[str, Any]) -> dict[str, list[str]]:
    """The items of ``metadata`` that are non-empty lists of strings (not ``axes``, not the
    other convention keys), in metadata order."""
    return {
        k: list(v)
        for k, v in metadata.items()
        if k not in CONVENTION_KEYS
        and isinstance(v, list)
        and v
        and all(isinstance(s, str) for s in v)
    }


def write_strings(group: h5py.Group, name: str, values: list[str]) -> h5py.Dataset:
    """A 1-D dataset of UTF-8 strings ``name`` in ``group``."""
    return group.create_dataset(name, data=np.asarray(values, dtype=object), dtype=_STR)


def write_names(
    group: h5py.Group,
    msg: beampipe.Message,
    columns: Mapping[str, str],
    labels: Mapping[str, list[str]],
    datasets: Mapping[str, h5py.Dataset],
    mode: str,
) -> list[str]:
    """What ``msg``'s metadata names in the new group ``group`` (its ``axes`` written): the
    string datasets of ``labels`` (:func:`string_lists`, dataset names from ``columns``), the
    ``long_name`` attributes of the metadata ``long_names`` (``{data name: str}``: ``map``'s
    motors) and the per-name images of ``images`` (:func:`write_images`; stacked in append
    ``mode``). Returns the image groups made.

    Raises:
        ValueError: see :func:`write_images`.
    """
    for k, values in labels.items():
        write_strings(group, columns[k], values)
    long_names = msg.metadata.get("long_names")
    for k, dataset in datasets.items():
        if isinstance(long_names, Mapping) and isinstance(long_names.get(k), str):
            dataset.attrs["long_name"] = long_names[k]
    where = f"stream {msg.stream!r} id {msg.id} port {msg.port!r}"
    plot = list(group.attrs["axes"])
    return write_images(group, msg.metadata.get("images"), datasets, plot, where, mode == "append")


def write_images(
    group: h5py.Group,
    images: Any,
    datasets: Mapping[str, h5py.Dataset],
    axes: list[str],
    where: str,
    stacked: bool = False,
) -> list[str]:
    """One NXdata group per item of ``images`` beside ``group`` (in its parent), named
    ``<group>_<name>`` (a valid NeXus name, unique): ``title`` = the name, a hard link to the
    image's dataset as ``signal``, and hard links to the last two of ``axes`` (the plot axes of
    ``group``, dataset names) if both are datasets of ``group`` (else ``.``), as its ``axes``;
    when the images are ``stacked`` (append mode: one image per message) ``id``, ``.``, ``.``
    (the axes of each image were appended too: 2-D).

    Args:
        group: the port's NXdata group (its file not yet in SWMR mode).
        images: the metadata ``images``: ``{name: data name}``; None for none.
        datasets: ``{data name: dataset}`` of ``group``.
        axes: the ``axes`` attribute written on ``group``.
        where: stream, id and port of the message, for errors.
        stacked: the datasets hold one image per message along their first axis.

    Returns:
        The names of the groups made.

    Raises:
        ValueError: ``images`` is not a mapping of names to data names of 2-D arrays.
    """
    if images is None:
        return []
    if not isinstance(images, Mapping):
        raise ValueError(f"{where}: metadata 'images' must map names to data names")
    made: list[str] = []
    parent = group.parent
    plot = [a for a in axes[-2:] if a in group and a != "."]
    plot = plot if len(plot) == 2 and not stacked else [".", "."]  # stacked axes are 2-D
    plot = ["id", *plot] if stacked else plot
    for label, key in images.items():
        dataset = datasets.get(key) if isinstance(key, str) else None
        if dataset is None or dataset.ndim != 2 + stacked:
            raise ValueError(
                f"{where}: metadata 'images' names {key!r} for {label!r}, which is not a "
                f"2-D array of the message (data: {', '.join(sorted(datasets))})"
            )
        name = unique_name(nexus_name(f"{group.name.rsplit('/', 1)[-1]}_{label}", "data"), parent)
        image = new_group(parent, name, "NXdata")
        put(image, "title", str(label))
        signal = dataset.name.rsplit("/", 1)[-1]
        image[signal] = dataset
        image.attrs["signal"] = signal
        image.attrs["axes"] = np.array(plot, dtype=_STR)
        for i, axis in enumerate(plot):
            if axis != ".":
                image[axis] = group[axis]
                image.attrs[f"{axis}_indices"] = np.int64(i)
        made.append(name)
    return made

"""The processing a port's data went through, as an NXprocess in the stream's NXentry.

A worker describes its processing in the metadata ``process`` of its messages (``xrf.fit``: PyMca,
its version, the fit parameters and the ``.cfg`` file's text); ``nexus_writer`` writes it once,
at the port's first message. NXprocess: https://manual.nexusformat.org/classes/base_classes/NXprocess.html
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import h5py

from beampipe.nodes.nexus.meta import new_group, nexus_name, put, unique_name, write_collection

__all__ = ["write_process"]

_FIELDS = ("program", "version")
_OTHER = frozenset({"name", "program", "version", "units", "notes"})


def write_process(
    entry: h5py.Group, port: str, process: Mapping[str, Any], data: h5py.ExternalLink
) -> str | None:
    """Add the NXprocess described by ``process`` to ``entry``; if the entry has an NXprocess
    of that name already (another port carrying the same processing: ``xrf.fit``'s results and
    the maps made of them), only link this port's results into it.

    Layout: ``<name>:NXprocess`` (``process["name"]``, else ``<port>_process``, made a valid
    NeXus name) with ``program``, ``version``, ``date`` (now, UTC); one NXparameters group per
    other dict item (``parameters``, ``concentrations``, ...): its numbers, strings, bools and
    lists as fields (:func:`~beampipe.nodes.nexus.meta.write_collection`), with the units of
    ``process["units"]`` (``{field: unit}``); one NXnote per item of ``process["notes"]``
    (``{name: {type, file_name, description, data}}``: ``xrf.fit``'s ``config`` holds the
    ``.cfg`` text); and, named after the port's group, the link to its NXdata (the results).

    Args:
        entry: the stream's NXentry in the master file.
        port: the port's group name in the entry (names the NXprocess when ``process`` has no
            ``name``).
        process: the metadata ``process`` of the port's first message.
        data: the external link to the port's NXdata group.

    Returns:
        The NXprocess's name, or None when another member of the entry has that name.
    """
    name = nexus_name(str(process.get("name") or f"{port}_process"), "process")
    if name in entry:
        existing = entry.get(name, getclass=True)
        if existing is not h5py.Group or entry[name].attrs.get("NX_class") != "NXprocess":
            return None
        entry[name][unique_name(port, entry[name])] = data
        return name
    group = new_group(entry, name, "NXprocess")
    for field in _FIELDS:
        if process.get(field) is not None:
            put(group, field, str(process[field]))
    put(group, "date", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    units = process.get("units") if isinstance(process.get("units"), Mapping) else {}
    for key, items in process.items():
        if key in _OTHER or not isinstance(items, Mapping):
            continue
        parameters = new_group(group, nexus_name(str(key), "parameters"), "NXparameters")
        write_collection(parameters, items)
        for field, unit in units.items():
            if field in parameters and isinstance(unit, str) and unit:
                parameters[field].attrs["units"] = unit
    notes = process.get("notes")
    for key, note in notes.items() if isinstance(notes, Mapping) else ():
        if isinstance(note, Mapping):
            _write_note(new_group(group, nexus_name(str(key), "note"), "NXnote"), note)
    group[unique_name(port, group)] = data
    return name


def _write_note(note: h5py.Group, items: Mapping[str, Any]) -> None:
    """NXnote fields ``type``, ``file_name``, ``description``, ``data`` (strings, as given)."""
    for field in ("type", "file_name", "description", "data"):
        if isinstance(items.get(field), str):
            put(note, field, items[field])

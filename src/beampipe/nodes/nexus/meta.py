"""Stream metadata -> NeXus: the NXentry header groups written by ``nexus_writer``.

Helpers of :mod:`beampipe.nodes.nexus.writer`; they write into an open :class:`h5py.Group` and hold
no state. NeXus base classes: https://manual.nexusformat.org/classes/base_classes/index.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import h5py
import numpy as np

LIBVER = ("v110", "v110")
"""HDF5 file-format bounds of every file the writer makes: 1.10 is the oldest format with SWMR;
readers need HDF5 >= 1.10."""
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""Valid NeXus item names, as nexusformat checks them
(https://manual.nexusformat.org/datarules.html#naming-conventions)."""

_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_]+")
_NUMBER_UNIT = re.compile(
    r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\s+([^\W\d][\w/*^.%-]*))?\s*$"
)
_CRYSTAL = re.compile(r"^\s*([A-Z][a-z]?)\s*\(?\s*(\d)\s*,?\s*(\d)\s*,?\s*(\d)\s*\)?\s*$")
_STR = h5py.string_dtype()


def nexus_name(text: str, prefix: str) -> str:
    """``text`` if it is a valid NeXus name, else made one: runs of characters other than
    ``[A-Za-z0-9_]`` become one ``_`` (none at the ends); a name that is empty or starts with a
    digit gets ``prefix + "_"`` in front (``20K_GOE.00000`` -> ``entry_20K_GOE_00000`` with
    prefix ``entry``; ``DCM Theta(p64/oh.09)`` -> ``DCM_Theta_p64_oh_09``)."""
    if NAME_PATTERN.match(text):
        return text
    name = _INVALID_CHARS.sub("_", text).strip("_")
    if not name or name[0].isdigit():
        name = f"{prefix}_{name}" if name else prefix
    return name


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name_2``, ``name_3``, ... if it is in ``taken``."""
    taken = set(taken)
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def new_group(parent: h5py.Group, name: str, nxclass: str) -> h5py.Group:
    """The child group ``name`` of class ``nxclass``, created if missing (its members are listed
    in creation order)."""
    group = parent[name] if name in parent else parent.create_group(name, track_order=True)
    group.attrs["NX_class"] = nxclass
    return group


def put(group: h5py.Group, name: str, value: Any, units: str | None = None) -> None:
    """Write field ``name`` (replacing it): str -> UTF-8 string, else a numpy array;
    ``units`` -> its ``units`` attribute."""
    if name in group:
        del group[name]
    if isinstance(value, str):
        group.create_dataset(name, data=value, dtype=_STR)
    else:
        group.create_dataset(name, data=np.asarray(value))
    if units:
        group[name].attrs["units"] = units


def number_with_unit(value: Any) -> tuple[float, str | None] | None:
    """``(number, unit or None)`` from a number or a string like ``"5.97 degrees"``; None if
    ``value`` is neither (bools are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value), None
    if isinstance(value, str) and (m := _NUMBER_UNIT.match(value)):
        return float(m[1]), m[2]
    return None


def find_field(fields: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first of ``keys`` in ``fields`` (case-insensitive), else None."""
    lowered = {str(k).lower(): v for k, v in fields.items()}
    return next((lowered[k.lower()] for k in keys if k.lower() in lowered), None)


def write_collection(group: h5py.Group, items: Mapping[str, Any]) -> None:
    """Store a JSON-able mapping in ``group`` (an NXcollection), one field per key.

    Keys become valid names (:func:`nexus_name`; the original kept in the ``original_name``
    attribute when it changed). Values: None skipped; numbers, bools, and strings holding a
    number with a unit (``"1.2 mm"`` -> 1.2 with ``units="mm"``) as numbers; other strings as
    strings; lists of numbers or of strings as arrays; dicts as nested NXcollections; anything
    else as its JSON text. Raw header lines (key ``header``) are better given to
    :func:`write_header_note`.
    """
    for key, value in items.items():
        if value is None:
            continue
        name = unique_name(nexus_name(str(key), "field"), group)
        if isinstance(value, Mapping):
            write_collection(new_group(group, name, "NXcollection"), value)
        else:
            _put_json_value(group, name, value)
        if name != key:
            group[name].attrs["original_name"] = str(key)


def _put_json_value(group: h5py.Group, name: str, value: Any) -> None:
    parsed = number_with_unit(value)
    if isinstance(value, bool):
        put(group, name, np.bool_(value))
    elif isinstance(value, int | float):
        put(group, name, value)
    elif parsed is not None:
        put(group, name, parsed[0], parsed[1])
    elif isinstance(value, str):
        put(group, name, value)
    elif _all(value, lambda v: isinstance(v, int | float) and not isinstance(v, bool)):
        put(group, name, np.asarray(value, dtype=float))
    elif _all(value, lambda v: isinstance(v, str)):
        group.create_dataset(name, data=np.asarray(value, dtype=object), dtype=_STR)
    else:
        put(group, name, json.dumps(value, default=str))


def _all(value: Any, test: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) > 0 and all(map(test, value))


def write_header_note(parent: h5py.Group, lines: list[str], file_name: str | None) -> None:
    """The raw header lines as an NXnote ``header``: ``type = "text/plain"``, ``data`` = the lines
    joined by newlines, ``file_name`` if known (https://manual.nexusformat.org/classes/base_classes/NXnote.html)."""
    note = new_group(parent, "header", "NXnote")
    put(note, "type", "text/plain")
    put(note, "data", "\n".join(map(str, lines)))
    if file_name:
        put(note, "file_name", str(file_name))


def write_warnings(entry: h5py.Group, warnings: list[dict[str, Any]]) -> None:
    """The warnings noted while the entry's stream was handled
    (:meth:`beampipe.Worker.stream_warnings`) as the NXnote ``warnings``: ``type =
    "text/plain"``, ``description``, and ``data`` with one line per distinct warning, ``NODE:
    TEXT (COUNT times)`` (https://manual.nexusformat.org/classes/base_classes/NXnote.html)."""
    note = new_group(entry, "warnings", "NXnote")
    put(note, "type", "text/plain")
    put(
        note,
        "description",
        "warnings, dropped or skipped inputs and non-finite results that the pipeline's nodes "
        "noted while handling this stream",
    )
    lines = [f"{w['node']}: {w['text']} ({w['count']} times)" for w in warnings]
    put(note, "data", "\n".join(lines))


def write_entry_header(entry: h5py.Group, stream: str, meta: Mapping[str, Any]) -> None:
    """Fields and groups of a new NXentry from the stream's metadata.

    Writes ``title`` (``meta["title"]``, else the stream name), ``entry_identifier`` (the stream
    name), ``start_time``/``end_time`` (ISO 8601 strings as given; only if present),
    ``NXinstrument`` (``name`` = beamline; ``NXsource`` name = facility, ``type``, ``probe``;
    ``NXmonochromator/crystal`` from ``mono_crystal``), ``NXsample`` (``name``) and the
    NXcollection ``metadata`` holding all of ``meta`` (``header`` as an NXnote). See
    :func:`meta_value` for where each item is looked up.
    """
    put(entry, "title", str(meta_value(meta, "title") or stream))
    put(entry, "entry_identifier", stream)
    for key in ("start_time", "end_time"):
        if (value := meta_value(meta, key)) is not None:
            put(entry, key, str(value))
    _write_instrument(entry, meta)
    if (sample := meta_value(meta, "sample")) is not None:
        put(new_group(entry, "sample", "NXsample"), "name", str(sample))
    collection = new_group(entry, "metadata", "NXcollection")
    header = meta.get("header")
    if isinstance(header, list):
        write_header_note(collection, header, meta.get("file"))
    write_collection(collection, {k: v for k, v in meta.items() if k != "header"})


_XDI_KEYS = {
    "title": (),
    "start_time": ("Scan.start_time",),
    "end_time": ("Scan.end_time",),
    "beamline": ("Beamline.name",),
    "facility": ("Facility.name",),
    "sample": ("Sample.name",),
    "mono_crystal": ("Mono.name", "DCM Crystal"),
    "mono_d_spacing": ("Mono.d_spacing",),
    "source_type": (),
    "probe": (),
    "monitor_mode": (),
    "monitor_preset": (),
}


def meta_value(meta: Mapping[str, Any], key: str) -> Any:
    """``meta[key]`` if present and not None, else the matching XDI header field of
    ``meta["fields"]`` (``Sample.name`` for ``sample``, ``Facility.name`` for ``facility``, ...;
    see the table in docs/nexus.md), else None."""
    if meta.get(key) is not None:
        return meta[key]
    fields = meta.get("fields")
    return find_field(fields, *_XDI_KEYS[key]) if isinstance(fields, Mapping) else None


def _write_instrument(entry: h5py.Group, meta: Mapping[str, Any]) -> None:
    known = {k: meta_value(meta, k) for k in ("beamline", "facility", "source_type", "probe")}
    crystal, d_spacing = meta_value(meta, "mono_crystal"), meta_value(meta, "mono_d_spacing")
    if not any(known.values()) and crystal is None and d_spacing is None:
        return
    instrument = new_group(entry, "instrument", "NXinstrument")
    if known["beamline"] is not None:
        put(instrument, "name", str(known["beamline"]))
    source = {"name": known["facility"], "type": known["source_type"], "probe": known["probe"]}
    if any(v is not None for v in source.values()):
        group = new_group(instrument, "source", "NXsource")
        for name, value in source.items():
            if value is not None:
                put(group, name, str(value))
    if crystal is not None or d_spacing is not None:
        _write_crystal(instrument, crystal, d_spacing)


def _write_crystal(instrument: h5py.Group, crystal: Any, d_spacing: Any) -> None:
    """NXmonochromator/NXcrystal ``crystal``: ``Si111`` or ``Si(111)`` -> ``type = "Si"``,
    ``reflection = [1, 1, 1]``; other text -> ``type`` as written; d spacing in Angstrom."""
    monochromator = new_group(instrument, "monochromator", "NXmonochromator")
    group = new_group(monochromator, "crystal", "NXcrystal")
    if crystal is not None:
        m = _CRYSTAL.match(str(crystal))
        put(group, "type", m[1] if m else str(crystal))
        if m:
            put(group, "reflection", np.array([int(m[2]), int(m[3]), int(m[4])]))
    if (parsed := number_with_unit(d_spacing)) is not None:
        put(group, "d_spacing", parsed[0], parsed[1] or "angstrom")


def write_xas(
    entry: h5py.Group,
    file_name: str,
    group_path: str,
    names: Mapping[str, str],
    signal: str | None,
    meta: Mapping[str, Any],
) -> None:
    """The NXxas view of an entry, with external links into the points' group file.

    Adds to ``entry``: ``instrument/monochromator/energy``, ``instrument/incoming_beam/data``,
    ``instrument/absorbed_beam/data`` and ``monitor/data`` (links), ``instrument/source/probe =
    "x-ray"`` unless given, ``monitor/mode`` and ``monitor/preset`` if the metadata has
    ``monitor_mode``/``monitor_preset``; then the NXsubentry ``xas`` with ``definition = "NXxas"``,
    ``title``, ``start_time``, hard links to ``instrument``, ``sample`` and ``monitor``, and the
    NXdata ``data`` (``energy``, ``absorbed_beam``, the points' signal, ``mode``).
    NXxas: https://manual.nexusformat.org/classes/applications/NXxas.html

    Args:
        entry: the stream's NXentry in the master file.
        file_name: the group file, relative to the master's directory.
        group_path: the NXdata group in that file (``/entry/points``).
        names: ``energy``, ``incoming_beam``, ``absorbed_beam``: dataset names in that group;
            ``mode``: the NXxas detection mode (``Transmission``, ...).
        signal: the points' signal dataset, linked too and plotted if it is not one of the above.
        meta: the stream's metadata.
    """

    def link(dataset: str) -> h5py.ExternalLink:
        return h5py.ExternalLink(file_name, f"{group_path}/{dataset}")

    instrument = new_group(entry, "instrument", "NXinstrument")
    source = new_group(instrument, "source", "NXsource")
    if "probe" not in source:
        put(source, "probe", "x-ray")
    new_group(instrument, "monochromator", "NXmonochromator")["energy"] = link(names["energy"])
    for detector in ("incoming_beam", "absorbed_beam"):
        new_group(instrument, detector, "NXdetector")["data"] = link(names[detector])
    write_monitor(new_group(entry, "monitor", "NXmonitor"), link(names["incoming_beam"]), meta)
    sub = new_subentry(entry, "xas", "NXxas")
    _write_xas_data(new_group(sub, "data", "NXdata"), link, names, signal)
    sub.attrs["default"] = "data"


def new_subentry(entry: h5py.Group, name: str, definition: str) -> h5py.Group:
    """A new NXsubentry of ``entry`` (named ``name``, or ``name_2``, ... if taken) for the
    application definition ``definition``: its ``definition``, the entry's ``title`` and
    ``start_time``, and hard links to the entry's ``instrument``, ``sample`` and ``monitor``."""
    sub = new_group(entry, unique_name(name, entry), "NXsubentry")
    put(sub, "definition", definition)
    for field in ("title", "start_time"):
        if field in entry:
            put(sub, field, entry[field].asstr()[()])
    for group in ("instrument", "sample", "monitor"):
        if group in entry:
            entry[group].attrs["target"] = entry[group].name
            sub[group] = entry[group]
    return sub


def write_monitor(
    monitor: h5py.Group, data: h5py.ExternalLink | None, meta: Mapping[str, Any]
) -> None:
    """An NXmonitor's ``data`` (a link; left out if None), and ``mode`` and ``preset`` from the
    metadata ``monitor_mode`` and ``monitor_preset``."""
    if data is not None:
        monitor["data"] = data
    if (mode := meta_value(meta, "monitor_mode")) is not None:
        put(monitor, "mode", str(mode))
    if (preset := number_with_unit(meta_value(meta, "monitor_preset"))) is not None:
        put(monitor, "preset", preset[0], preset[1])


def _write_xas_data(
    data: h5py.Group,
    link: Callable[[str], h5py.ExternalLink],
    names: Mapping[str, str],
    signal: str | None,
) -> None:
    """NXxas's NXdata: ``energy`` and ``absorbed_beam`` links, ``mode``, and the points' signal
    (plotted) unless it is one of those."""
    data["energy"] = link(names["energy"])
    data["absorbed_beam"] = link(names["absorbed_beam"])
    put(data, "mode", names["mode"])
    plotted = "absorbed_beam"
    if signal and signal not in data and signal not in (names["energy"], names["absorbed_beam"]):
        data[signal] = link(signal)
        plotted = signal
    data.attrs.update({"signal": plotted, "axes": "energy", "energy_indices": np.int64(0)})

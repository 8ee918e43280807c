"""The NXxasproc view of processed XAS data (a normalised spectrum) in a stream's NXentry.

NXxasproc: https://manual.nexusformat.org/classes/applications/NXxasproc.html
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import h5py

from beampipe.nodes.nexus.meta import meta_value, new_group, put, unique_name

__all__ = ["write_xasproc"]


def write_xasproc(
    entry: h5py.Group,
    file_name: str,
    group_path: str,
    names: Mapping[str, str],
    process: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> None:
    """Add the NXsubentry ``xasproc`` (``definition = "NXxasproc"``) to ``entry``: ``title``,
    a hard link to the entry's ``sample``, the NXprocess ``XAS_data_reduction`` (``program``,
    ``version``, ``date`` (now, UTC), NXparameters ``parameters`` with ``raw_file`` (the
    stream's ``file``, or its name) and the processing parameters) and the NXdata ``data`` with
    external links ``energy`` and ``data`` into the processed group's file.

    Args:
        entry: the stream's NXentry in the master file.
        file_name: the group file, relative to the master's directory.
        group_path: the NXdata group in that file (``/entry/normalized``).
        names: ``energy`` and ``data``: dataset names in that group.
        process: from the message metadata ``process``: ``program``, ``version``, and
            ``parameters`` (a flat dict of numbers/strings/bools).
        meta: the stream's metadata.
    """
    sub = new_group(entry, unique_name("xasproc", entry), "NXsubentry")
    put(sub, "definition", "NXxasproc")
    if "title" in entry:
        put(sub, "title", entry["title"].asstr()[()])
    if "sample" in entry:
        entry["sample"].attrs["target"] = entry["sample"].name
        sub["sample"] = entry["sample"]
    reduction = new_group(sub, "XAS_data_reduction", "NXprocess")
    put(reduction, "program", str(process.get("program", "beampipe")))
    put(reduction, "version", str(process.get("version", "")))
    put(reduction, "date", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    parameters = new_group(reduction, "parameters", "NXparameters")
    raw = meta_value(meta, "file") or entry.get("entry_identifier", "")
    put(parameters, "raw_file", raw if isinstance(raw, str) else raw.asstr()[()])
    for key, value in (process.get("parameters") or {}).items():
        if isinstance(value, bool | int | float | str):
            put(parameters, str(key), value)
    data = new_group(sub, "data", "NXdata")
    for name in ("energy", "data"):
        data[name] = h5py.ExternalLink(file_name, f"{group_path}/{names[name]}")
    data.attrs.update({"signal": "data", "axes": "energy"})
    sub.attrs["default"] = "data"

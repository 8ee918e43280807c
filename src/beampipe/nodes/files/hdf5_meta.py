"""What an HDF5/NeXus file says about its frames besides the frames: HDF5 attribute values as
JSON, the entry's title, the detector's frame time, a dataset's compression filters."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

__all__ = ["detector_frame_time", "entry_title", "filters", "jsonable"]


def jsonable(value: Any) -> Any:
    """An HDF5 attribute value as JSON-able Python: bytes decoded as UTF-8, numpy scalars and
    arrays as numbers and (nested) lists; None for what has no JSON form (references)."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufSUO":
            return None
        return [jsonable(v) for v in value.tolist()] if value.ndim else jsonable(value[()])
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return None


def entry_title(f: h5py.File, dataset: str) -> str | None:
    """The ``title`` of the NXentry that holds ``dataset`` (a scalar string), or None."""
    entry = f.get("/" + dataset.strip("/").split("/")[0])
    title = entry.get("title") if isinstance(entry, h5py.Group) and entry.name != "/" else None
    if isinstance(title, h5py.Dataset) and title.shape == ():
        value = jsonable(title[()])
        return value if isinstance(value, str) else None
    return None


def filters(ds: h5py.Dataset) -> list[dict[str, Any]]:
    """``[{"id": filter id, "name": its name}]`` of a dataset's filter pipeline."""
    plist = ds.id.get_create_plist()
    out = []
    for k in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(k)
        text = name.decode("utf-8", errors="replace") if isinstance(name, bytes) else str(name)
        out.append({"id": int(code), "name": text.split(";")[0].strip()})
    return out


def detector_frame_time(f: h5py.File, dataset: str) -> str | None:
    """The path of ``frame_time`` in the first NXdetector of the dataset's entry, or None."""
    entry = f.get("/" + dataset.strip("/").split("/")[0])
    if not isinstance(entry, h5py.Group) or entry.name == "/":
        return None
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if (
            not found
            and isinstance(obj, h5py.Group)
            and jsonable(obj.attrs.get("NX_class")) == "NXdetector"
            and isinstance(obj.get("frame_time"), h5py.Dataset)
        ):
            found.append(obj["frame_time"].name)

    entry.visititems(visit)
    return found[0] if found else None

"""Reading a detector image file as 2-D frames, whatever its format.

* HDF5/NeXus files (``h5py.is_hdf5``) through h5py, the compression filters of ``hdf5plugin``
  registered: the frame dataset is found as ``hdf5_replay`` finds it
  (:func:`beampipe.nodes.files.hdf5_layout.find_plan`: the ``dataset`` given, the NeXus default
  plot, the older ``signal=1`` attribute, EIGER master files with external links to data
  files); a 3-D dataset holds frames along its first axis, a 2-D dataset is one frame.
* Every other file through fabio (https://github.com/silx-kit/fabio: CBF, EDF, TIFF, MarCCD,
  ADSC, Rayonix, Bruker, Mar345, ... and their compressed variants): one frame per fabio frame
  (``nframes``; a multi-frame EDF or TIFF gives several).

A frame is returned as read: the detector's dtype and shape ``(ny, nx)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from beampipe.nodes.files.hdf5_layout import Hdf5ReplayError, Plan, find_plan, frame_dataset
from beampipe.nodes.files.hdf5_meta import jsonable

__all__ = ["FrameFile", "ImageReadError", "open_frames"]

CBF_STARTER = b"\x0c\x1a\x04\xd5"
"""The bytes that start a CBF file's binary section; fabio (2026.6) reads a CBF file cut before
them forever, so a file without them in its first :data:`CBF_HEAD` bytes is refused first."""
CBF_HEAD = 1 << 20

MAX_FIELDS = 256
"""At most this many NeXus instrument fields go into an HDF5 file's header."""


class ImageReadError(OSError):
    """A file cannot be read as 2-D frames; the message names the file (and the frame) and the
    likely cause."""


@dataclass
class FrameFile:
    """An open image file: its frames, one at a time.

    Attributes:
        path: the file.
        format: ``"hdf5"``, or fabio's name of the format (``"cbf"``, ``"edf"``, ``"tif"``,
            ``"marccd"``, ...).
        frames: how many frames it holds.
        header: the file's header as JSON-able values: fabio's header (``{key: text}``), or for
            HDF5 the NeXus instrument fields of the entry (``{"instrument/detector/count_time":
            0.1, ...}``, at most :data:`MAX_FIELDS`) and the frame dataset's path
            (``"dataset"``).
    """

    path: Path
    format: str
    frames: int
    header: dict[str, Any]
    node: str = ""
    """The node's name, which starts every error message."""
    _fabio: Any = None
    _h5: h5py.File | None = None
    _plan: Plan | None = None
    _open: dict[int, h5py.Dataset] = field(default_factory=dict)

    def frame(self, i: int) -> tuple[np.ndarray, dict[str, Any] | None]:
        """Frame ``i`` (0-based) and, for a multi-frame fabio file, that frame's own header
        (None otherwise).

        Raises:
            ImageReadError: the frame cannot be read or is not 2-D.
        """
        try:
            data, header = self._read(i)
        except ImageReadError:
            raise
        except Exception as exc:  # any reader failure is the file's
            raise ImageReadError(
                f"{self.node}: {self.path}: cannot read frame {i} of {self.frames} "
                f"({type(exc).__name__}: "
                f"{exc}); check that the file is complete"
            ) from None
        if data.ndim != 2:
            raise ImageReadError(
                f"{self.node}: {self.path}: frame {i} has shape {data.shape}: a frame is 2-D "
                "(ny, nx)"
            )
        return data, header

    def _read(self, i: int) -> tuple[np.ndarray, dict[str, Any] | None]:
        if self._fabio is not None:
            one = self._fabio if self.frames == 1 else self._fabio.getframe(i)
            if getattr(one, "incomplete_data", False):  # fabio pads a cut frame and logs
                raise ImageReadError(
                    f"{self.node}: {self.path}: frame {i} of {self.frames} is incomplete: the "
                    "file is truncated, or still being written"
                )
            if self.frames == 1:
                return np.asarray(one.data), None
            return np.asarray(one.data), {str(k): str(v) for k, v in one.header.items()}
        assert self._plan is not None and self._h5 is not None
        first = 0
        for k, part in enumerate(self._plan.parts):
            if i < first + part.frames:
                ds = self._open.get(k)
                if ds is None:
                    ds = self._open[k] = frame_dataset(self.node, self._h5, part.link)
                return part.read(ds, i - first), None
            first += part.frames
        raise ImageReadError(f"{self.node}: {self.path}: no frame {i} (it holds {self.frames})")

    def close(self) -> None:
        """Close the file (and the data files of external links)."""
        self._open.clear()
        if self._h5 is not None:
            self._h5.close()
        if self._fabio is not None:
            self._fabio.close()


def open_frames(path: Path, dataset: str | None = None, node: str = "") -> FrameFile:
    """Open ``path`` as frames (see the module doc); ``dataset``: the frame dataset of an HDF5
    file (None: found as ``hdf5_replay`` finds it); ``node`` starts the error messages.

    Raises:
        ImageReadError: the file does not exist, is not an image file a reader knows, is
            damaged or truncated, or its frames are not 2-D; the message names the file.
    """
    if not path.is_file():
        raise ImageReadError(f"{node}: {path}: no such file")
    if h5py.is_hdf5(path):
        return _open_hdf5(path, dataset, node)
    _check_cbf(path, node)
    import fabio  # imported here: a pipeline without image files does not need it

    try:
        image = fabio.open(str(path))
    except Exception as exc:  # fabio raises many kinds for a bad file
        raise ImageReadError(
            f"{node}: {path}: fabio cannot read it ({type(exc).__name__}: {exc}); check that "
            "it is a complete image file of a format fabio knows"
        ) from None
    name = type(image).__name__.removesuffix("Image").lower()
    header = {str(k): str(v) for k, v in image.header.items()}
    return FrameFile(path, name, int(image.nframes), header, node, _fabio=image)


def _check_cbf(path: Path, node: str) -> None:
    """Refuse an (uncompressed) CBF file that has no binary section, see :data:`CBF_STARTER`."""
    with path.open("rb") as f:
        head = f.read(CBF_HEAD)
    cbf = head.startswith(b"###CBF") or path.suffix.lower() == ".cbf"
    if cbf and CBF_STARTER not in head:
        raise ImageReadError(
            f"{node}: {path}: a CBF file without a binary section ({len(head)} bytes read): "
            "truncated, or still being written"
        )


def _open_hdf5(path: Path, dataset: str | None, node: str) -> FrameFile:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ImageReadError(f"{node}: {path}: cannot open it as HDF5 ({exc})") from None
    try:
        plan = find_plan(node, f, dataset)
        if len(plan.frame_shape) != 2:
            raise ImageReadError(
                f"{node}: {path}: dataset {plan.dataset} has frames of shape {plan.frame_shape}: "
                "image_files reads 2-D frames (a 2-D dataset, or a 3-D stack); check 'dataset'"
            )
    except (Hdf5ReplayError, ImageReadError) as exc:
        f.close()
        raise ImageReadError(str(exc)) from None
    header = {"dataset": plan.dataset, **instrument_fields(f, plan.dataset)}
    return FrameFile(path, "hdf5", plan.frames, header, node, _h5=f, _plan=plan)


def instrument_fields(f: h5py.File, dataset: str) -> dict[str, Any]:
    """The scalar fields under the NXinstrument groups of the entry holding ``dataset``, by
    path relative to the entry (``"instrument/detector/count_time"``), as JSON-able values;
    at most :data:`MAX_FIELDS`."""
    entry = f.get("/" + dataset.strip("/").split("/")[0])
    if not isinstance(entry, h5py.Group) or entry.name == "/":
        return {}
    found: dict[str, Any] = {}
    inside: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if len(found) >= MAX_FIELDS:
            return
        if isinstance(obj, h5py.Group):
            if jsonable(obj.attrs.get("NX_class")) == "NXinstrument":
                inside.append(name + "/")
            return
        if any(name.startswith(p) for p in inside) and obj.size <= 1 and obj.ndim <= 1:
            value = jsonable(obj[()])
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None:
                found[name] = value

    entry.visititems(visit)
    return found

"""The hits of each stream as a CXI file CrystFEL reads: ``use: cxi_writer``.

Layout (CXI 1.40, as Cheetah writes it; https://www.cxidb.org/cxi.html, CrystFEL's
``peak_list_type = cxi``): ``/entry_1/data_1/data`` (frames, rows, columns), the frames;
``/entry_1/result_1/nPeaks`` (frames,) int32 and, (frames, max_peaks) float32 padded with 0
after each frame's peaks, ``peakXPosRaw`` (fs), ``peakYPosRaw`` (ss), ``peakTotalIntensity``,
``peakMaximumValue``, ``peakNPixels``, ``peakSNR``; ``/entry_1/experiment_identifier``
(frames,) strings ``stream//id``, naming where each frame came from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
from pydantic import Field

import beampipe
from beampipe.nodes.columns import numeric
from beampipe.nodes.nexus.compression import Compression, filter_options

__all__ = ["CXI_PEAKS", "CxiWriter"]

CXI_PEAKS = {
    "peakXPosRaw": "peak_fs",
    "peakYPosRaw": "peak_ss",
    "peakTotalIntensity": "peak_intensity",
    "peakMaximumValue": "peak_max",
    "peakNPixels": "peak_npix",
    "peakSNR": "peak_snr",
}
"""The CXI peak datasets of ``/entry_1/result_1`` -> the ``peaks.find`` data they hold."""

_UNSAFE = re.compile(r"[^\w.+-]")


class _File:
    """One stream's open CXI file and the frames written to it."""

    def __init__(self, path: Path, max_peaks: int) -> None:
        self.path = path
        self.h5 = h5py.File(path, "w")
        self.h5["cxi_version"] = np.int32(140)
        entry = self.h5.create_group("entry_1")
        self.result = entry.create_group("result_1")
        self.result.create_dataset("nPeaks", (0,), np.int32, maxshape=(None,), chunks=(1024,))
        for key in CXI_PEAKS:
            self.result.create_dataset(
                key, (0, max_peaks), np.float32, maxshape=(None, max_peaks), chunks=(1, max_peaks)
            )
        self.ids = entry.create_dataset(
            "experiment_identifier",
            (0,),
            h5py.string_dtype(),
            maxshape=(None,),
            chunks=(1024,),
        )
        self.data = entry.create_group("data_1")
        self.frames = 0


class CxiWriter(beampipe.Worker):
    """Writes the hits of each stream, with their frames and peaks, to ``<directory>/<stream>
    .cxi`` (the layout above; characters other than letters, digits and ``._+-`` of the stream
    name become ``_``). An existing file is overwritten.

    Input: ``peaks.find``'s messages (``hit``, ``n_peaks``, the ``peak_*`` arrays) with, for the
    hits, the frame (``peaks.find``'s port ``hits``; its name is the metadata ``frame``). Only
    hits are written (``hits_only: false``: every frame, from ``peaks.find``'s port ``out``, with
    ``frames: false``). Rows are in arrival order (with
    several ``peaks.find`` replicas, not the id order: ``experiment_identifier`` names each).
    The file is flushed at ``checkpoint`` and closed at the end of its stream.

    Raises:
        ValueError: a written message has no frame (connect ``peaks.find``'s port ``hits``) or
            one of another shape than the stream's first; more than ``max_peaks`` peaks.
        MissingColumn: (a ``KeyError``) a ``peak_*``, ``hit`` or ``n_peaks`` entry is missing.
        OSError: the file cannot be written.
    """

    class Params(beampipe.Params):
        """``directory``: where the files go (created; relative to the working directory).
        ``max_peaks``: the width of the peak arrays (CrystFEL reads up to it; ``peaks.find``'s
        ``max_peaks`` or less). ``hits_only``: write only hits. ``frames``: write the frames
        too (else only the peaks). ``compression``: of the frames, as ``nexus_writer``'s."""

        directory: str = Field(min_length=1, pattern=r"^[^\x00]*$")
        max_peaks: int = Field(2048, ge=1, le=1_000_000)
        hits_only: bool = True
        frames: bool = True
        compression: Compression = "none"

    params: CxiWriter.Params
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: CxiWriter.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.directory = Path(os.path.expanduser(params.directory)).absolute()
        self._filters = filter_options(params.compression)
        self._files: dict[str, _File] = {}
        self.written: dict[str, Path] = {}
        """The file of each stream written so far."""

    def process(self, msg: beampipe.Message) -> None:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        hit = numeric(msg, "hit", where)
        if self.params.hits_only and not bool(hit.reshape(())):
            return None
        n = int(numeric(msg, "n_peaks", where).reshape(()))
        if n > self.params.max_peaks:
            raise ValueError(
                f"{where}: {n} peaks, more than params.max_peaks ({self.params.max_peaks})"
            )
        peaks = {key: numeric(msg, name, where) for key, name in CXI_PEAKS.items()}
        frame = self._frame(msg, where) if self.params.frames else None
        f = self._files.get(msg.stream) or self._open(msg.stream)
        row = f.frames
        f.result["nPeaks"].resize((row + 1,))
        f.result["nPeaks"][row] = n
        for key, values in peaks.items():
            padded = np.zeros(self.params.max_peaks, np.float32)
            padded[:n] = values[:n]
            f.result[key].resize((row + 1, self.params.max_peaks))
            f.result[key][row] = padded
        f.ids.resize((row + 1,))
        f.ids[row] = f"{msg.stream}//{msg.id}"
        if frame is not None:
            self._append_frame(f, frame, where)
        f.frames += 1
        return None

    def on_stream_end(self, stream: str) -> None:
        f = self._files.pop(stream, None)
        if f is not None:
            f.h5.close()

    def checkpoint(self) -> None:
        for f in self._files.values():
            f.h5.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.h5.close()
        self._files.clear()

    def _open(self, stream: str) -> _File:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_UNSAFE.sub('_', stream)}.cxi"
        f = self._files[stream] = _File(path, self.params.max_peaks)
        self.written[stream] = path
        return f

    def _frame(self, msg: beampipe.Message, where: str) -> np.ndarray:
        name = msg.metadata.get("frame")
        if not isinstance(name, str) or name not in msg.data:
            raise ValueError(
                f"{where}: a hit without its frame (no metadata 'frame' naming one): connect "
                "the peaks.find node's port 'hits' to this node (peaks.hits -> cxi), or set "
                "frames: false on this node"
            )
        frame = numeric(msg, name, where)
        if frame.ndim != 2:
            raise ValueError(f"{where}: frame {name!r} has shape {frame.shape}, not 2-D")
        return frame

    def _append_frame(self, f: _File, frame: np.ndarray, where: str) -> None:
        data: Any = f.data.get("data")
        if data is None:
            data = f.data.create_dataset(
                "data",
                (0, *frame.shape),
                frame.dtype,
                maxshape=(None, *frame.shape),
                chunks=(1, *frame.shape),
                **self._filters,
            )
        elif data.shape[1:] != frame.shape:
            raise ValueError(
                f"{where}: frame of shape {frame.shape}, the stream's first {data.shape[1:]}"
            )
        data.resize((f.frames + 1, *frame.shape))
        data[f.frames] = frame

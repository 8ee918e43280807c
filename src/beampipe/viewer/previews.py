"""What the viewer keeps of each output port: small previews of the items seen on the tap.

The viewer never holds the messages themselves. Per (node, output port) a :class:`PortPreview`
folds each item into:

* **points**: 0-d data items (one scan point per message) appended per stream into columns,
  next to the message ``id`` and the source timestamp ``t`` (unix s). Plotted against the axis
  the metadata names (``axes: [energy]`` -> mu(E)), else against time: a time series.
* **curves**: 1-D data items; per stream the latest array of each name, plotted against the
  first 1-D axis item of the same length the metadata names (``axes: [r, k, energy]``), else
  against the index.
* **waterfall**: the port's signal, when it is a 1-D item, per stream as rows of a heat map
  (:mod:`beampipe.viewer.waterfall`), offered as the item ``<signal> waterfall``.
* **images**: 2-D (or higher: a stack of 2-D slices, e.g. element maps) data items; only the
  latest of the port is kept, binned (:mod:`beampipe.viewer.images`), at most
  :data:`IMAGE_RATE` times per second (an item that comes sooner waits, replaced by newer ones,
  and the last of a stream is always binned).

``bytes`` items are not shown. Metadata ``signal`` names the item plotted first, ``axes`` the
x axis (the NeXus plotting conventions, https://manual.nexusformat.org/datarules.html) and
``units`` (``{q: "nm^-1"}``) the units of items, shown in the axis titles. The uncertainty of an
item ``K`` (drawn as a band) is item ``K_sigma`` or ``K_errors``, or ``sigma`` or ``errors``
when ``K`` is the signal (``azint``'s ``intensity`` and ``sigma``), of the same shape.
The newest :data:`MAX_STREAMS` streams are kept per port, each with at most :data:`MAX_POINTS`
points per column (beyond that every second point is dropped: the curve keeps its shape).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from beampipe.message import EndOfStream, Item, Message, StreamStart
from beampipe.viewer import waterfall
from beampipe.viewer.images import ImagePreview
from beampipe.viewer.waterfall import Waterfall

IMAGE_RATE = 2.0
"""Image previews binned per second and port, at most."""
MAX_STREAMS = 10
"""Streams kept per port (the oldest is forgotten)."""
MAX_POINTS = 50_000
"""Points kept per stream and column; beyond that every second point is dropped."""


def _kind(value: Any) -> str | None:
    """``points``, ``curves`` or ``images`` for a data item; None for what is not shown."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        return None
    if value.ndim == 0 or (value.ndim == 1 and value.size == 1):
        return "points"
    if value.ndim == 1:
        return "curves"
    return "images" if value.size else None


@dataclass
class _Columns:
    """Growing columns of one stream's 0-d items: name -> float64 buffer, ``n`` rows used."""

    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    n: int = 0

    def append(self, row: dict[str, float]) -> None:
        if self.n == MAX_POINTS:
            for name, buf in self.buffers.items():
                kept = buf[: self.n : 2].copy()
                self.buffers[name] = np.resize(kept, buf.size)
            self.n = math.ceil(self.n / 2)
        for name in row:
            if name not in self.buffers:
                self.buffers[name] = np.full(max(256, self.n * 2), np.nan)
        for name, buf in self.buffers.items():
            if self.n == buf.size:
                buf = self.buffers[name] = np.resize(buf, 2 * buf.size)
            buf[self.n] = row.get(name, np.nan)
        self.n += 1

    def column(self, name: str) -> np.ndarray | None:
        buf = self.buffers.get(name)
        return None if buf is None else buf[: self.n].copy()


@dataclass
class StreamPreview:
    """What a port showed of one stream."""

    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    """Of the stream start (or the first message)."""
    messages: int = 0
    last_id: int = 0
    finished: bool = False
    points: _Columns = field(default_factory=_Columns)
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    """Latest 1-D array per name (read-only views of the received buffers, never changed)."""
    waterfall: Waterfall = field(default_factory=Waterfall)
    """The curves of the port's signal, one row per message."""


class PortPreview:
    """The previews of one output port of one node. Not thread-safe: see :class:`Previews`.

    Attributes:
        version: incremented whenever something shown changes.
        messages: messages seen on the tap.
        images_binned: image previews made.
        images_skipped: frames replaced by a newer one before they were binned.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.streams: dict[str, StreamPreview] = {}
        self.images: dict[str, ImagePreview] = {}
        self.keys: dict[str, str] = {}
        """Data name -> ``points``, ``curves``, ``images`` or ``waterfall``, in order of
        appearance."""
        self.signal: str | None = None
        self.axes: list[str] = []
        self.units: dict[str, str] = {}
        """Item name -> unit, from the metadata's ``units``."""
        self.version = 0
        self.messages = 0
        self.images_binned = 0
        self.images_skipped = 0
        self._pending: Message | None = None
        self._last_binned = -math.inf

    # -- input ---------------------------------------------------------------------------------

    def add(self, item: Item) -> None:
        """Fold one item received on the tap into the previews."""
        if isinstance(item, StreamStart):
            self._stream(item.stream, item.metadata)
        elif isinstance(item, EndOfStream):
            stream = self._stream(item.stream, {})
            stream.finished = True
            if self._pending is not None and self._pending.stream == item.stream:
                self._bin(self._pending)
            self.version += 1
        else:
            self._message(item)

    def tick(self) -> None:
        """Bin the waiting frame if its time has come (call a few times per second)."""
        if self._pending is not None and self.clock() - self._last_binned >= 1.0 / IMAGE_RATE:
            self._bin(self._pending)

    def _stream(self, name: str, metadata: dict[str, Any]) -> StreamPreview:
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = StreamPreview(name, dict(metadata))
            while len(self.streams) > MAX_STREAMS:
                del self.streams[next(iter(self.streams))]
        self._plotting(metadata)
        return stream

    def _plotting(self, metadata: dict[str, Any]) -> None:
        signal, axes = metadata.get("signal"), metadata.get("axes")
        if isinstance(signal, str):
            self.signal = signal
        if isinstance(axes, str):
            axes = [axes]
        if isinstance(axes, list) and all(isinstance(a, str) for a in axes):
            self.axes = axes
        units = metadata.get("units")
        if isinstance(units, dict):
            self.units.update({str(k): str(v) for k, v in units.items() if isinstance(v, str)})

    def _message(self, msg: Message) -> None:
        self.messages += 1
        stream = self._stream(msg.stream, msg.metadata)
        stream.messages += 1
        stream.last_id = max(stream.last_id, msg.id)
        row: dict[str, float] = {}
        image = False
        for name, value in msg.data.items():
            kind = _kind(value)
            if kind is None:
                continue
            self.keys.setdefault(name, kind)
            if kind == "points":
                row[name] = float(value.reshape(-1)[0])
            elif kind == "curves":
                stream.curves[name] = value
                if name == self.signal:
                    stream.waterfall.add(msg.id, value)
                    self.keys.setdefault(waterfall.key(name), "waterfall")
            else:
                image = True
        if row:
            row["id"] = float(msg.id)
            if msg.timestamps:
                row["t"] = float(msg.timestamps[0][1])
            stream.points.append(row)
        if image:
            if self._pending is not None:
                self.images_skipped += 1
            self._pending = msg
            self.tick()
        self.version += 1

    def _bin(self, msg: Message) -> None:
        self._pending = None
        self._last_binned = self.clock()
        axes = msg.metadata.get("axes")
        axes = axes if isinstance(axes, list) else self.axes
        for name, value in msg.data.items():
            if _kind(value) == "images":
                self.images[name] = ImagePreview.make(name, value, msg, axes)
        self.images_binned += 1
        self.version += 1

    # -- output --------------------------------------------------------------------------------

    def default_key(self) -> str | None:
        """The item plotted first: the metadata's signal if seen, else an image, a curve or a
        point column, in that order."""
        if self.signal in self.keys:
            return self.signal
        for kind in ("images", "curves", "points"):
            for name, k in self.keys.items():
                if k == kind:
                    return name
        return None

    def payload(self, key: str | None, index: int | None = None) -> dict[str, Any]:
        """The JSON-able plot of data item ``key`` (None: :meth:`default_key`), as sent to the
        browser (see docs/viewer.md, "plot"); of a stack of images, slice ``index`` (None: the
        first). Arrays are numpy arrays (for ``orjson``)."""
        key = key if key in self.keys else self.default_key()
        out: dict[str, Any] = {
            "keys": self.keys,
            "key": key,
            "signal": self.signal,
            "units": self.units,
            "messages": self.messages,
            "version": self.version,
        }
        kind = self.keys.get(key) if key is not None else None
        out["kind"] = kind
        if kind == "images":
            image = self.images.get(key)  # type: ignore[arg-type]
            out["image"] = None if image is None else image.payload(index)
        elif kind == "points":
            out["axis"], out["traces"] = self._points(key)  # type: ignore[arg-type]
        elif kind == "curves":
            out["axis"], out["traces"] = self._curves(key)  # type: ignore[arg-type]
        elif kind == "waterfall":
            out["image"] = self._waterfall(index)
        return out

    def _axis(self, kind: str) -> str | None:
        """The first name of ``axes`` that is an item of this kind."""
        return next((a for a in self.axes if self.keys.get(a) == kind), None)

    def _errors(self, key: str) -> list[str]:
        """The names the uncertainty of ``key`` may have (module docstring)."""
        own = ["sigma", "errors"] if key == self.signal else []
        return [f"{key}_sigma", f"{key}_errors", *own]

    def _points(self, key: str) -> tuple[str, list[dict[str, Any]]]:
        axis = self._axis("points") or "time"
        traces = []
        for s in self.streams.values():
            y = s.points.column(key)
            if y is None:
                continue
            if axis == "time":
                t = s.points.column("t")
                x = t * 1000.0 if t is not None else s.points.column("id")
            else:
                x = s.points.column(axis)
            sigma = next(
                (c for c in map(s.points.column, self._errors(key)) if c is not None), None
            )
            traces.append(_trace(s, x, y, sigma))
        return axis, traces

    def _curves(self, key: str) -> tuple[str | None, list[dict[str, Any]]]:
        """Each stream's latest ``key`` against the first of ``axes`` of its length (``axes:
        [r, k]``: |chi(R)| against r, chi(k) against k), else against the index."""
        names = [a for a in self.axes if self.keys.get(a) == "curves"]
        used: str | None = None
        traces = []
        for s in self.streams.values():
            y = s.curves.get(key)
            if y is None:
                continue
            axis = next(
                (a for a in names if getattr(s.curves.get(a), "shape", None) == y.shape), None
            )
            x = s.curves[axis] if axis is not None else np.arange(y.size, dtype=np.float64)
            used = used or axis
            errors = (s.curves.get(name) for name in self._errors(key))
            sigma = next((e for e in errors if e is not None and e.shape == y.shape), None)
            traces.append(_trace(s, x, y, sigma))
        return used or self._axis("curves"), traces

    def _waterfall(self, index: int | None) -> dict[str, Any] | None:
        """The waterfall of the signal of stream number ``index`` of those that have one
        (None: the newest), with the slice fields naming the streams."""
        streams = [s for s in self.streams.values() if s.waterfall.n]
        if not streams or self.signal is None:
            return None
        index = index if index is not None and 0 <= index < len(streams) else len(streams) - 1
        s = streams[index]
        size = (s.waterfall.size,)
        axis = next((a for a in self.axes if getattr(s.curves.get(a), "shape", None) == size), None)
        image = s.waterfall.payload(self.signal, s.name, axis, s.curves.get(axis or ""))
        labels = [s.name for s in streams]
        return {**image, "slice": index, "slices": len(streams), "labels": labels, "label": s.name}


def _float64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _trace(
    s: StreamPreview, x: np.ndarray | None, y: np.ndarray, sigma: np.ndarray | None
) -> dict[str, Any]:
    x = np.arange(y.size, dtype=np.float64) if x is None else x
    return {
        "stream": s.name,
        "finished": s.finished,
        "last_id": s.last_id,
        "x": _float64(x),
        "y": _float64(y),
        "sigma": None if sigma is None else _float64(sigma),
    }

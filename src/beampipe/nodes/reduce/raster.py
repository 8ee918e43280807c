"""Maps on a regular raster: ``use: map``.

``map`` places each message of a stream (one scan point: e.g. the peak areas ``xrf.fit`` sends
for one spectrum) at its pixel of a regular ``ny`` x ``nx`` raster, and emits the maps every
``every`` points and at the end of the scan. Pixels not measured yet are NaN. It is a
:class:`beampipe.Reducer`: it runs as one process and receives every upstream replica's messages.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

import beampipe
from beampipe.nodes.columns import numeric

__all__ = ["Grid", "Map", "PositionError"]

log = logging.getLogger(__name__)


class PositionError(KeyError):
    """A message's position is missing from its metadata, not an integer, or outside the
    raster; the message names node, stream, id and the metadata keys present."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclass
class _Raster:
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    measured: np.ndarray | None = None
    names: list[str] | None = None
    process: dict[str, Any] | None = None
    repeated: int = 0


class Grid(BaseModel):
    """Motor positions onto pixels: ``x``, ``y``: [centre of the first pixel, step] in the
    positions' units (a step may be negative); ``units`` of the positions (``"um"``)."""

    model_config = ConfigDict(extra="forbid")
    x: tuple[float, float]
    y: tuple[float, float]
    units: str | None = None

    @model_validator(mode="after")
    def _steps(self) -> Grid:
        if self.x[1] == 0 or self.y[1] == 0 or not all(map(math.isfinite, (*self.x, *self.y))):
            raise ValueError("grid: steps must be finite and not 0")
        return self


class Map(beampipe.Reducer):
    """Maps of per-point values on a regular raster of ``shape = [ny, nx]`` pixels.

    Input: one message per scan point whose data hold each of ``fields`` (0-d, 1-D or 2-D, of
    the same shape in every message of a stream, e.g. ``xrf.fit``'s ``area`` of n element lines,
    or (elements, n) for a fit of each detector element), and whose position is, by the params:

    * ``x`` and ``y`` set: metadata ``x`` (column, 0..nx-1) and ``y`` (row, 0..ny-1), integers
      (or floats of integral value, as SPEC files store them); a dotted key (``positions.ix``)
      looks into a dict of the metadata (``mca_files``' ``positions``, ``xrf.deadtime``'s
      joined positions); a key not in the metadata may be a 0-d numeric data item;
    * ``index`` set: metadata ``index``, the 0-based pixel number in row-major order
      (``y * nx + x``);
    * neither: the message id: id 1 is pixel 0, in row-major order (a raster scan sending one
      message per point, in order).

    With ``grid``, ``x`` and ``y`` are motor positions (floats, in ``grid.units``): a point goes
    to the pixel whose centre is nearest (``floor((pos - start) / step + 0.5)``: exactly half-way
    goes to the pixel of higher index); a point more than half a step outside the raster is a
    :class:`PositionError`. Irregular positions are binned the same way.

    A pixel measured twice keeps its last value; that is counted (``repeated``) and warned about.

    Output, per stream (id = the highest id folded), every ``every`` points, every ``interval``
    seconds, and at the end of the stream:

    * data: each of ``fields`` as float64 maps, shape (*value shape, ny, nx): (n, ny, nx) for
      1-D values, (elements, n, ny, nx) for 2-D, (ny, nx) for 0-d ones, NaN where no point was
      measured; with ``split`` and a 1-D first field, its maps one by one, (ny, nx), named
      ``<field>_<name>`` (``area_Fe_K``: the name's runs of other characters than letters and
      digits become ``_``); ``measured`` (bool, (ny, nx)); ``y``
      (int64, (ny,)) and ``x`` (int64, (nx,)): the pixel indices, the maps' axes (with ``grid``:
      float64, the pixel centres in ``grid.units``, and metadata ``units``);
    * metadata: ``names`` (the input's metadata ``lines``, e.g. ``["Fe K", ...]``, naming the
      last axis of the values; None if it has none), ``shape`` ([ny, nx]), ``measured``,
      ``missing`` (pixels not measured), ``repeated`` (int), ``final`` (bool), ``signal`` (the
      first field), ``axes`` (``["y", "x"]`` after a ``"."`` per axis of the first field's
      values, the last one ``"names"`` when there are names: ``["names", "y", "x"]`` for 1-D);
      with ``split``, ``images`` (``{name: data name}``: the NeXus writer makes one NXdata per
      element map); ``process`` (the first input's, e.g. ``xrf.fit``'s fit program, parameters
      and configuration file), if it has one; with ``x`` and ``y``, ``long_names``
      (``{"x": "samx", "y": "samy"}``: the last part of their metadata keys, the motors'
      names, which the NeXus writer gives the axes as ``long_name``).

    At the end of a stream with missing pixels a warning names how many (the run report shows
    it).

    Raises:
        PositionError: (a ``KeyError``) a position is missing from the metadata, not an integer,
            or outside the raster; names stream and id.
        MissingColumn: (a ``KeyError``) a message lacks one of ``fields``.
        ValueError: a field's shape differs from the stream's first message's, or has more than
            2 dimensions.
    """

    class Params(beampipe.ReducerParams):
        """``shape``: [ny, nx] pixels. ``fields``: the data names mapped. ``x``, ``y``: metadata
        keys of the column and row indices; ``index``: metadata key of the row-major pixel
        number; none of them: the message id (1 = pixel 0). ``grid``: with ``x``/``y``, they
        are motor positions, binned onto the raster (:class:`Grid`). ``split``: also send each
        map of the first field as a 2-D array of its own, ``<field>_<name>`` (``area_Fe_K``)."""

        shape: tuple[int, int] = Field(..., description="[ny, nx]")
        fields: list[str] = Field(default_factory=lambda: ["area"], min_length=1)
        x: str | None = None
        y: str | None = None
        index: str | None = None
        split: bool = False
        grid: Grid | None = None

        @model_validator(mode="after")
        def _one_position(self) -> Map.Params:
            if (self.x is None) != (self.y is None):
                raise ValueError("give both x and y (the metadata keys of column and row)")
            if self.grid is not None and self.x is None:
                raise ValueError("grid bins motor positions: give x and y (their metadata keys)")
            if self.x is not None and self.index is not None:
                raise ValueError("give either x and y or index, not both")
            if clash := {"measured", "x", "y"} & set(self.fields):
                raise ValueError(f"fields {sorted(clash)}: names the output uses itself")
            if min(self.shape) < 1:
                raise ValueError(f"shape {list(self.shape)}: both sizes must be >= 1")
            return self

    params: Map.Params

    def start(self, group: str, metadata: dict[str, Any]) -> _Raster:
        return _Raster(measured=np.zeros(self.params.shape, dtype=bool))

    def reduce(self, state: _Raster, msg: beampipe.Message) -> _Raster:
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        row, col = self._pixel(msg, where)
        ny, nx = self.params.shape
        if not state.maps:
            for name in self.params.fields:
                value = numeric(msg, name, where)
                if value.ndim > 2:
                    raise ValueError(
                        f"{where}: field {name!r} has shape {value.shape}: not 0-d, 1-D or 2-D"
                    )
                state.maps[name] = np.full((*value.shape, ny, nx), np.nan)
            lines = msg.metadata.get("lines")
            state.names = [str(v) for v in lines] if isinstance(lines, list) else None
            process = msg.metadata.get("process")
            state.process = process if isinstance(process, dict) else None
        for name, image in state.maps.items():
            value = numeric(msg, name, where)
            if value.shape != image.shape[:-2]:
                raise ValueError(
                    f"{where}: field {name!r} has shape {value.shape}, the stream's first "
                    f"message {image.shape[:-2]}"
                )
            image[..., row, col] = value
        state.repeated += bool(state.measured[row, col])
        state.measured[row, col] = True
        return state

    def result(self, group: str, state: _Raster, final: bool) -> beampipe.Message:
        measured = int(np.count_nonzero(state.measured))
        missing = int(state.measured.size - measured)
        if final and missing:
            log.warning(
                "%s: stream %r: %d of %d pixels not measured (NaN in the maps)",
                self.name,
                group,
                missing,
                state.measured.size,
            )
        if final and state.repeated:
            log.warning(
                "%s: stream %r: %d pixels measured more than once (last value kept)",
                self.name,
                group,
                state.repeated,
            )
        data: dict[str, Any] = {k: v if final else v.copy() for k, v in state.maps.items()}
        data["measured"] = state.measured if final else state.measured.copy()
        first = self.params.fields[0]
        rank = state.maps[first].ndim - 2 if first in state.maps else 0
        ny, nx = self.params.shape
        grid = self.params.grid
        if grid is None:
            data["y"] = np.arange(ny, dtype=np.int64)
            data["x"] = np.arange(nx, dtype=np.int64)
        else:
            data["y"] = grid.y[0] + grid.y[1] * np.arange(ny, dtype=np.float64)
            data["x"] = grid.x[0] + grid.x[1] * np.arange(nx, dtype=np.float64)
        images = {}
        if self.params.split and state.names and rank == 1:
            for k, name in enumerate(state.names):
                key = f"{first}_{re.sub(r'[^A-Za-z0-9]+', '_', name).strip('_')}"
                data[key], images[name] = data[first][k], key
        metadata = {
            "names": state.names,
            "shape": list(self.params.shape),
            "measured": measured,
            "missing": missing,
            "repeated": state.repeated,
            "final": final,
            "signal": first,
            "axes": [*["."] * rank, "y", "x"],
        }
        if state.names and rank >= 1:  # the names run along the values' last axis
            metadata["axes"][rank - 1] = "names"
        if images:
            metadata["images"] = images
        if state.process is not None:
            metadata["process"] = state.process
        if grid is not None and grid.units:
            metadata["units"] = {"x": grid.units, "y": grid.units}
        if self.params.x is not None and self.params.y is not None:  # the motors' names
            keys = {"x": self.params.x, "y": self.params.y}
            metadata["long_names"] = {k: key.rsplit(".", 1)[-1] for k, key in keys.items()}
        return beampipe.Message(data=data, metadata=metadata)

    def _pixel(self, msg: beampipe.Message, where: str) -> tuple[int, int]:
        ny, nx = self.params.shape
        p = self.params
        keys = [p.y, p.x] if p.x is not None else [p.index] if p.index is not None else []
        values = []
        for key in keys:
            value = self._lookup(msg, key, where)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise PositionError(f"{where}: position {key!r} = {value!r} is not a number")
            grid = self.params.grid
            if grid is not None and math.isfinite(value):
                start, step = grid.y if len(values) == 0 else grid.x
                value = math.floor((value - start) / step + 0.5)  # the nearest pixel centre
            elif not math.isfinite(value) or value != int(value):
                raise PositionError(f"{where}: position {key!r} = {value!r} is not an integer")
            values.append(int(value))
        if len(values) == 2:
            row, col = values
        else:
            flat = values[0] if values else msg.id - 1
            row, col = divmod(flat, nx) if flat >= 0 else (-1, -1)
        if not (0 <= row < ny and 0 <= col < nx):
            given = dict(zip(keys, values, strict=True)) or {"id": msg.id}
            raise PositionError(
                f"{where}: position {given} is outside the raster of shape [ny, nx] = {[ny, nx]}"
            )
        return row, col

    @staticmethod
    def _lookup(msg: beampipe.Message, key: str, where: str) -> Any:
        """The position ``key`` of ``msg``: in its metadata (a dotted key looks into a dict),
        else a 0-d data item of that name (a source sending scan columns as data)."""
        value: Any = msg.metadata
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                item = msg.data.get(key)
                if isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iuf":
                    return item.item()
                raise PositionError(
                    f"{where}: no position {key!r} in the metadata nor as a 0-d data item; "
                    f"the metadata has {', '.join(msg.metadata) or '(none)'} (set the node's "
                    "params x/y or index; a dotted key such as 'positions.ix' looks into a dict)"
                )
            value = value[part]
        return value

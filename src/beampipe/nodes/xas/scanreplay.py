"""The base of the XAS scan-file sources ``xdi_replay`` and ``spec_replay``: one stream per scan,
one message per data row, with an energy axis in eV."""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, PositiveInt, model_validator

import beampipe
from beampipe.message import Item
from beampipe.nodes.files.base import FileReplay
from beampipe.nodes.xas.scanfile import EnergyParams, ScanTable, XdiFormatError, energy_ev

__all__ = ["ScanReplay"]

log = logging.getLogger(__name__)


class ScanReplay(FileReplay):
    """Sends scan tables (:class:`~beampipe.nodes.xas.scanfile.ScanTable`) as streams.

    Each row becomes a :class:`~beampipe.Message` (ids 1..n) whose ``data`` maps every column
    name to a 0-d float64 array, plus ``energy`` in eV when ``params.energy`` names the energy
    column (converted as ``energy_units`` says, see
    :func:`~beampipe.nodes.xas.scanfile.energy_ev`; it replaces a column called ``energy``).
    """

    class Params(FileReplay.Params, EnergyParams):
        """``columns``: names for the columns instead of the file's (one per column, in order);
        ``labels_line``: the 1-based line of the file whose words name the columns.
        ``time_column``: the column holding each point's acquisition time in seconds (for
        ``pace: realtime``). The energy params are :class:`EnergyParams`'s."""

        columns: list[str] | None = Field(None, min_length=1)
        labels_line: PositiveInt | None = None
        time_column: str = "time_pp"

        @model_validator(mode="after")
        def _one_naming(self) -> ScanReplay.Params:
            if self.columns is not None and self.labels_line is not None:
                raise ValueError("give either columns or labels_line, not both")
            return self

    params: ScanReplay.Params

    def send(
        self, path: Path, stream: str, table: ScanTable, meta: dict[str, Any]
    ) -> Generator[Item, None, int]:
        """The StreamStart (metadata ``meta`` plus ``columns``, ``units``, ``reader``,
        ``n_points`` and, with an energy column, ``energy_column`` and ``energy_units: eV``) and
        one message per row of ``table``; returns the number of rows.

        Raises:
            XdiFormatError: the energy or time column is not in the table; keV energies with
                ``energy_units: eV``.
        """
        p = self.params
        columns = table.labels
        values = {name: table.data[j] for j, name in enumerate(columns)}
        meta = {
            **meta,
            "columns": list(columns),
            "units": dict(table.units),
            "reader": table.reader,
            "n_points": int(table.data.shape[1]),
        }
        if p.energy is not None:
            if p.energy not in values:
                raise XdiFormatError(
                    path, 0, f"energy column {p.energy!r} not found; columns: {', '.join(columns)}"
                )
            try:
                values["energy"], note = energy_ev(values[p.energy], p, f"stream {stream!r}")
            except ValueError as exc:
                raise XdiFormatError(path, 0, str(exc)) from None
            if note:
                log.warning("%s: %s: %s", self.name, path, note)
            meta.update(energy_column=p.energy, energy_units="eV", energy_from=p.energy_units)
        tcol = None
        if p.pace == "realtime":
            if p.time_column not in values:
                raise XdiFormatError(
                    path,
                    0,
                    f"pace 'realtime' needs time column {p.time_column!r}; "
                    f"columns: {', '.join(columns)}",
                )
            tcol = values[p.time_column]
        yield beampipe.StreamStart(stream=stream, metadata=meta)
        n = table.data.shape[1]
        for i in range(n):
            self.wait(float(tcol[i]) if tcol is not None else None)
            data = {name: np.array(col[i]) for name, col in values.items()}
            yield beampipe.Message(data=data, stream=stream, id=i + 1)
        return n

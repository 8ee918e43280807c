"""XDI 1.0 files of processed spectra, for Athena, Larix and any XDI reader: ``use: xdi_writer``.

XDI: https://github.com/XraySpectroscopy/XAS-Data-Interchange (specification 1.0). Files are
checked by reading them back with xraylarch's ``read_xdi`` (the reference C library, libxdi) in
``tests/test_xas_xdi_writer.py``.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

import beampipe
from beampipe.nodes.columns import MissingColumn, column

__all__ = ["MissingColumn", "XdiWriter", "xdi_text"]

_UNSAFE = re.compile(r"[^\w.+-]")
_HEADER = {  # XDI field -> stream metadata key
    "Facility.name": "facility",
    "Beamline.name": "beamline",
    "Mono.name": "mono_crystal",
    "Scan.start_time": "start_time",
    "Scan.end_time": "end_time",
}


def _version() -> str:
    try:
        return version("beampipe")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def xdi_text(
    columns: dict[str, np.ndarray],
    units: dict[str, str],
    fields: dict[str, str],
    comments: list[str],
) -> str:
    """An XDI 1.0 file: version line, ``Column.N`` fields (with units where known), the other
    ``fields`` (``Namespace.tag``: value), the user comments after ``///``, the column labels
    line and one row per point, each value written with ``repr`` (so it reads back as the same
    float64)."""
    lines = [f"# XDI/1.0 beampipe/{_version()}"]
    for n, name in enumerate(columns, 1):
        unit = units.get(name)
        lines.append(f"# Column.{n}: {name}" + (f" {unit}" if unit else ""))
    lines += [f"# {key}: {value}" for key, value in fields.items()]
    lines.append("# ///")
    lines += [f"# {c}" for c in comments] or ["# written by beampipe"]
    lines.append("#" + "-" * 20)
    lines.append("# " + " ".join(columns))
    table = np.column_stack([np.asarray(v, dtype=np.float64) for v in columns.values()])
    lines += [" ".join(repr(float(x)) for x in row) for row in table]
    return "\n".join(lines) + "\n"


class XdiWriter(beampipe.Worker):
    """Writes each stream's spectrum to ``<directory>/<stream>.xdi`` (XDI 1.0).

    Input: messages with 1-D arrays of equal length (e.g. ``xas.normalize``'s: ``energy``,
    ``mu``, ``norm``). By default only the final one of a stream (metadata ``final: true``) is
    written; with ``final_only: false`` every message rewrites the file. Files are written to a
    temporary name and renamed, so a reader never sees half a file. Characters other than
    letters, digits and ``._+-`` in a stream name become ``_``.

    Header: ``Column.N: name units`` (units from the message's ``metadata["units"]``),
    ``Element.symbol``/``Element.edge`` (params), ``Scan.edge_energy`` (the message's ``e0``,
    eV), ``Facility.name``, ``Beamline.name``, ``Mono.name``, ``Scan.start_time``,
    ``Scan.end_time`` from the stream's metadata where present, and the stream name as comment.

    Raises:
        MissingColumn: (a ``KeyError``) a column is not in a message.
        ValueError: the columns are not 1-D of one length.
        OSError: the file cannot be written.
    """

    class Params(beampipe.Params):
        """``directory``: where the files go (created; ``~`` expanded, relative to the
        working directory, as output paths are). ``columns``: the data names written,
        in order (the first is the abscissa, normally ``energy``). ``final_only``: write only
        the final message of each stream. ``element``, ``edge``: XDI ``Element.symbol`` and
        ``Element.edge``."""

        directory: str = Field(min_length=1, pattern=r"^[^\x00]*$")
        columns: list[str] = Field(default_factory=lambda: ["energy", "mu", "norm"], min_length=1)
        final_only: bool = True
        element: str | None = Field(None, min_length=1, max_length=3)
        edge: str | None = Field(None, min_length=1, max_length=3)

    params: XdiWriter.Params
    inputs: ClassVar[tuple[str, ...] | None] = None
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: XdiWriter.Params, name: str = "") -> None:
        super().__init__(params, name)
        self.directory = Path(os.path.expanduser(params.directory)).absolute()
        self._headers: dict[str, dict[str, Any]] = {}
        self.written: dict[str, Path] = {}
        """The file of each stream written so far."""

    def on_stream_start(self, stream: str, metadata: dict[str, Any]) -> None:
        self._headers[stream] = metadata

    def on_stream_end(self, stream: str) -> None:
        self._headers.pop(stream, None)

    def process(self, msg: beampipe.Message) -> None:
        p = self.params
        if p.final_only and not msg.metadata.get("final"):
            return None
        where = f"{self.name}: stream {msg.stream!r}, id {msg.id}"
        cols = {c: column(msg, c, where) for c in p.columns}
        sizes = {c: v.shape for c, v in cols.items()}
        if any(v.ndim != 1 for v in cols.values()) or len(set(sizes.values())) != 1:
            raise ValueError(f"{where}: columns must be 1-D of one length: {sizes}")
        units = msg.metadata.get("units") or {}
        fields = {}
        if p.element:
            fields["Element.symbol"] = p.element
        if p.edge:
            fields["Element.edge"] = p.edge
        e0 = msg.metadata.get("e0")
        if isinstance(e0, int | float) and np.isfinite(e0):
            fields["Scan.edge_energy"] = f"{float(e0)!r} eV"
        header = self._headers.get(msg.stream, {})
        for key, meta in _HEADER.items():
            if header.get(meta):
                fields[key] = str(header[meta])
        text = xdi_text(cols, units, fields, [f"stream {msg.stream}, id {msg.id}"])
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_UNSAFE.sub('_', msg.stream)}.xdi"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self.written[msg.stream] = path
        return None

"""Replay of SPEC files, one stream per scan: ``use: spec_replay``.

A SPEC file (https://certif.com/spec_manual/user_1_4_1.html) holds many scans, each opened by a
``#S number command`` line and named by its ``#L`` line. They are read with silx's
``silx.io.specfile.SpecFile`` (the reader xraylarch's ``read_specfile`` uses).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import beampipe
from beampipe.message import Item
from beampipe.nodes.files.base import NoFilesMatched
from beampipe.nodes.xas.scanfile import SPEC_SCAN, ScanTable, XdiFormatError
from beampipe.nodes.xas.scanreplay import ScanReplay

__all__ = ["NoFilesMatched", "SpecReplay", "XdiFormatError", "read_spec"]


def _stem(path: str | os.PathLike[str]) -> str:
    return Path(path).name


def _unique(labels: list[str]) -> list[str]:
    """The names, a repeated one suffixed ``_2``, ``_3``, ... (``Seconds``, ``Seconds_2``)."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}_{seen[label]}")
    return out


def read_spec(path: str | os.PathLike[str]) -> list[tuple[str, ScanTable, dict[str, Any]]]:
    """The scans of a SPEC file, in file order: (scan key ``number.order``, e.g. ``"2.1"``, the
    columns, metadata ``{scan, command, header}``). Column names are the ``#L`` names as
    written; a repeated name gets ``_2``, ``_3``, ... (xraylarch's ``read_specfile`` keeps only
    one of them).

    Raises:
        XdiFormatError: silx cannot read the file, or it has no ``#S`` scan (not a SPEC file).
    """
    from silx.io.specfile import SfError, SpecFile

    with open(path, encoding="utf-8", errors="replace") as f:
        if not any(SPEC_SCAN.match(line) for line in f):
            raise XdiFormatError(path, 0, "no '#S' scan: not a SPEC file (use xdi_replay)")
    try:
        sf = SpecFile(str(path))
    except (SfError, OSError) as exc:
        raise XdiFormatError(path, 0, f"silx cannot read it as a SPEC file: {exc}") from None
    scans = []
    for scan in sf:
        data = np.asarray(scan.data, dtype=np.float64)
        labels = _unique(list(scan.labels))
        if data.ndim != 2 or data.shape[0] != len(labels):
            data = np.zeros((len(labels), 0))
        first = next((h for h in scan.scan_header if h.startswith("#S")), "#S")
        key = f"{scan.number}.{scan.order}"
        meta = {"scan": key, "command": first[2:].strip(), "header": list(scan.header)}
        scans.append(
            (key, ScanTable(labels, data, list(scan.header), [], "silx SpecFile", {}), meta)
        )
    return scans


class SpecReplay(ScanReplay):
    """Replays SPEC files: one stream per scan (``#S``), one message per data row.

    Streams, file after file (``paths`` as for ``xdi_replay``), scan after scan in file order:

    * :class:`~beampipe.StreamStart` named ``<file name>:<scan>.<order>`` (``GeO2.dat:2.1``);
      metadata ``file``, ``scan``, ``command`` (the ``#S`` line after ``#S``), ``header`` (the
      scan's header lines), ``columns`` (the ``#L`` names as written, repeats suffixed
      ``_2``...), ``reader: "silx
      SpecFile"``, ``n_points`` and the energy keys of
      :class:`~beampipe.nodes.xas.scanreplay.ScanReplay`.
    * One :class:`~beampipe.Message` per row, ids 1..n (the columns as 0-d float64, plus
      ``energy`` in eV with ``params.energy``).
    * :class:`~beampipe.EndOfStream` with ``next_stream`` = the next scan's stream.

    Params, pacing and errors are those of ``xdi_replay`` (``columns`` renames the columns of
    every scan; ``labels_line`` is refused: a ``ValueError`` when the node is created).

    Raises (from :meth:`generate`):
        XdiFormatError: a file is not a SPEC file (no ``#S``) or silx cannot read it; the
            energy or time column is missing from a scan; keV energies with ``energy_units: eV``.
    """

    params: ScanReplay.Params

    stream_name = staticmethod(_stem)

    def __init__(self, params: ScanReplay.Params, name: str = "") -> None:
        if params.labels_line is not None:
            raise ValueError(
                f"{name}: spec_replay takes the names from each scan's #L line; use columns to "
                "rename them (labels_line is for xdi_replay)"
            )
        super().__init__(params, name)

    def generate(self) -> Iterator[Item]:
        scans = [(path, *scan) for path in self.files for scan in read_spec(path)]
        for k, (path, key, table, meta) in enumerate(scans):
            stream = f"{path.name}:{key}"
            following = f"{scans[k + 1][0].name}:{scans[k + 1][1]}" if k + 1 < len(scans) else None
            self.pacer.restart()
            last_id = yield from self.replay_scan(path, stream, table, meta)
            yield beampipe.EndOfStream(stream=stream, last_id=last_id, next_stream=following)

    def replay_scan(
        self, path: Path, stream: str, table: ScanTable, meta: dict[str, Any]
    ) -> Generator[Item, None, int]:
        """The StreamStart and messages of one scan; returns n."""
        columns = self.params.columns
        if columns is not None:
            if len(columns) != len(table.labels):
                raise XdiFormatError(
                    path,
                    0,
                    f"scan {meta['scan']}: params.columns gives {len(columns)} names for "
                    f"{len(table.labels)} columns",
                )
            table.labels = list(columns)
        return (yield from self.send(path, stream, table, {"file": str(path), **meta}))

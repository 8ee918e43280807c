"""Replay of XAS scan files as streams: ``use: xdi_replay``.

Each file becomes one stream (one scan), each data line one :class:`~beampipe.Message`, sent at the
scan's own pace or as fast as the pipeline takes them. This reproduces, offline, the point stream a
beamline produces live (Dranspose's "record and replay").

The columns are read by xraylarch (:mod:`beampipe.nodes.xas.scanfile`: ``read_xdi`` for XDI 1.0,
``read_ascii`` for any other column file). The header's comment lines are interpreted for the
stream's metadata in two dialects:

* XDI 1.0 (https://github.com/XraySpectroscopy/XAS-Data-Interchange): ``# Namespace.tag: value``
  fields.
* The files written by the PETRA III P65 control software: free-form ``# key = value unit`` lines
  and a ``# Scan started at DD-MM-YYYY hh:mm:ss, finished at ...`` line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from datetime import datetime
from pathlib import Path
from typing import Any

from beampipe.message import Item
from beampipe.nodes.files.base import NoFilesMatched
from beampipe.nodes.xas.scanfile import XdiFormatError, read_scan
from beampipe.nodes.xas.scanreplay import ScanReplay

__all__ = ["NoFilesMatched", "XdiFormatError", "XdiReplay", "parse_header", "stream_name"]


_XDI_FIELD = re.compile(r"^(?P<key>[A-Za-z_][\w-]*\.[\w-]+)\s*:\s*(?P<value>.*)$")
_EQ_FIELD = re.compile(r"^(?P<key>[^=]+?)\s*=\s*(?P<value>.*)$")
# "Channel 1: gain 1E07V/A", "DCM Crystal: Si111"; the colon must be followed by a space and the key
# hold no comma, so "Scan started at 22-11-2020 01:47:54, ..." and "..., see: https://..." are not.
_COLON_FIELD = re.compile(r"^(?P<key>[^:=,]+?):\s+(?P<value>.*)$")
_SCAN_TIMES = re.compile(
    r"^scan started at (?P<start>.+?)(?:,\s*finished at (?P<end>.+?))?\s*$", re.IGNORECASE
)
_BEAMLINE = re.compile(
    r"^(?P<facility>.+?)\s+(?:extension\s+)?beamline\s+(?P<beamline>\S+)\s*$", re.IGNORECASE
)
_MODE = re.compile(r"^XAS\b.*\bMODE$", re.IGNORECASE)
_SEPARATOR = re.compile(r"^[-=/*\s]*$")
_TIME_FORMATS = ("%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


def stream_name(path: str | os.PathLike[str]) -> str:
    """The stream name of a file: its name without the ``.xdi`` suffix (``a/b.00001.xdi`` ->
    ``b.00001``)."""
    name = Path(path).name
    return name[:-4] if name.lower().endswith(".xdi") else name


def _iso(text: str) -> str:
    """``22-11-2020 01:47:54`` (day first, as P65 writes it) or an ISO string -> ISO 8601; text in
    no known format is returned stripped."""
    text = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).isoformat()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        return text


def _field(fields: dict[str, str], *keys: str) -> str | None:
    """The value of the first of ``keys`` present in ``fields`` (case-insensitive)."""
    lowered = {k.lower(): v for k, v in fields.items()}
    for key in keys:
        if key.lower() in lowered:
            return lowered[key.lower()]
    return None


def parse_header(comments: list[str], path: str | os.PathLike[str] = "") -> dict[str, Any]:
    """Interpret the comment lines before the data of an XDI file.

    Args:
        comments: the header lines with their leading ``#`` removed, in file order.
        path: the file, used for the title and in error messages.

    Returns:
        A JSON-able dict: ``header``
        (the lines, stripped), ``fields`` (``{key: value}`` from ``key = value [unit]``,
        ``Namespace.tag: value`` and ``Key: value`` lines; value as written, unit included),
        ``start_time``, ``end_time`` (ISO 8601, local time as written; None if absent),
        ``beamline``, ``facility``, ``mono_crystal``, ``scan_mode``, ``title`` (str or None).
    """
    header = [line.strip() for line in comments]
    fields: dict[str, str] = {}
    start = end = beamline = facility = mode = None
    for line in header:
        m = _XDI_FIELD.match(line) or _EQ_FIELD.match(line) or _COLON_FIELD.match(line)
        if m:
            fields.setdefault(m["key"].strip(), m["value"].strip())
        elif m := _SCAN_TIMES.match(line):
            start, end = _iso(m["start"]), _iso(m["end"]) if m["end"] else None
        elif m := _BEAMLINE.match(line):
            facility, beamline = m["facility"], m["beamline"]
        elif mode is None and _MODE.match(line):
            mode = line

    stem = stream_name(path) if path else ""
    title = f"{stem} ({mode})" if stem and mode else (stem or mode)
    return {
        "header": header,
        "fields": fields,
        "start_time": start or _opt_iso(_field(fields, "Scan.start_time")),
        "end_time": end or _opt_iso(_field(fields, "Scan.end_time")),
        "beamline": beamline or _field(fields, "Beamline.name"),
        "facility": facility or _field(fields, "Facility.name"),
        "mono_crystal": _field(fields, "DCM Crystal", "Mono.name"),
        "scan_mode": mode,
        "title": title or None,
    }


def _opt_iso(text: str | None) -> str | None:
    return _iso(text) if text else None


class XdiReplay(ScanReplay):
    """Replays XAS scan files (XDI or plain columns): one stream per file, one message per data
    line.

    Streams, in the order of ``paths`` (the matches of each pattern sorted by path, a file matched
    twice replayed once):

    * :class:`~beampipe.StreamStart` named after the file (:func:`stream_name`, e.g.
      ``20K_GOE_Fe_K_240.00000``), metadata = :func:`parse_header`'s dict plus ``file``
      (absolute path), ``columns`` (larch's names), ``units`` (XDI column units), ``reader``
      (``read_xdi`` or ``read_ascii``), ``n_points`` and, with ``params.energy``,
      ``energy_column``, ``energy_units: "eV"``, ``energy_from`` (the units converted from).
    * One :class:`~beampipe.Message` per data line, ids 1..n: ``data`` maps every column name to a
      0-d float64 array (units as in the file), plus ``energy`` in eV with ``params.energy``
      (see :class:`~beampipe.nodes.xas.scanreplay.ScanReplay`); ``metadata`` is ``{}``.
    * :class:`~beampipe.EndOfStream` with ``last_id = n`` and ``next_stream`` = the next file's
      stream (None after the last file).

    A file is read (with xraylarch) and checked when its stream begins.

    Pacing (``pace``): ``"max"`` sends as fast as downstream takes messages; ``"realtime"`` waits
    ``time_column / speedup`` seconds before each message after the first of a stream (the point's
    own acquisition time: it became available that long after the previous one); a number sends at
    that rate in Hz (``speedup`` is ignored). Waits follow a deadline schedule on a monotonic
    clock (``self.pacer``, a :class:`~beampipe.nodes.pacing.Pacer`), so time spent downstream is
    not added to them; after a backpressure stall the replay catches up, as a buffering detector
    would. Negative or non-finite times count as 0.

    Raises (from the constructor):
        NoFilesMatched: a pattern matches no file (also a ``FileNotFoundError`` and ``ValueError``).
        ValueError: two files would give the same stream name.

    Raises (from :meth:`generate`), naming the file and line and the cause:
        XdiFormatError: a SPEC file (use ``spec_replay``); a data row with another number of
            values than the others; a line that is not numbers between data rows; ``columns`` /
            ``labels_line`` that do not give one name per column; the energy column missing;
            keV energies with ``energy_units: eV``; ``pace: realtime`` without the file's
            ``time_column``.
        OSError: a file cannot be read.
    """

    params: ScanReplay.Params

    stream_name = staticmethod(stream_name)

    def replay(self, path: Path, stream: str) -> Generator[Item, None, int]:
        """The StreamStart and the messages of one file (see the class doc); returns n."""
        p = self.params
        table = read_scan(path, p.columns, p.labels_line)
        first = table.lines[0] - 1 if table.lines else 0
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read().split("\n")[:first]
        comments = [line.lstrip()[1:] for line in head if line.lstrip().startswith("#")]
        meta = {"file": str(path), **parse_header(comments, path)}
        return (yield from self.send(path, stream, table, meta))

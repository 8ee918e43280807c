"""Reading XAS scan files through xraylarch, and the energy axis in eV.

The columns of a scan file are read by xraylarch's own readers
(https://xraypy.github.io/xraylarch/xafs_readingdata.html): ``larch.io.read_xdi`` for XDI 1.0
files (first line ``# XDI/1.0``), ``larch.io.read_ascii`` for every other column file. Column
names are the ones larch gives (``read_ascii`` lower-cases them and replaces characters that are
not allowed in a name by ``_``; ``read_xdi`` keeps the ``Column.N`` names as written).

``read_ascii`` takes the data as the rows of numbers at the end of the file and everything above
the last line that is not a row of numbers as the header, so a broken line in the data silently
turns the rows above it into header; and it pads short rows with NaN. :func:`read_scan` checks
the file against what larch read and names the line and the cause instead.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat

import beampipe

__all__ = [
    "EnergyParams",
    "ScanTable",
    "XdiFormatError",
    "d_spacing",
    "energy_ev",
    "read_scan",
]

SPEC_SCAN = re.compile(r"^#S\s+\d+")
"""The ``#S number`` line that opens a scan in a SPEC file."""
_CRYSTAL = re.compile(r"^\s*(?P<name>[A-Za-z]+)\s*\(?\s*(?P<hkl>\d\s*\d\s*\d)\s*\)?\s*$")
KEV_BELOW = 200.0
"""Energies whose largest value is below this (in the file's units) are taken to be keV."""


class XdiFormatError(ValueError):
    """A scan file cannot be read as asked; the message starts with ``path:line:``.

    Attributes:
        path: the file.
        line: 1-based line number (0 if the problem is not tied to a line).
    """

    def __init__(self, path: str | os.PathLike[str], line: int, problem: str) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class ScanTable:
    """The columns of one scan file.

    Attributes:
        labels: the column names (larch's, or the ``columns`` override).
        data: float64, shape (len(labels), n): one row per column, one column per data line.
        header: the header lines as larch returns them (comment characters kept).
        lines: 1-based line number in the file of each data row (n values).
        reader: ``"read_xdi"`` or ``"read_ascii"``.
        units: the units of each column given by the file (XDI ``Column.N: name units``), by
            name; empty for plain column files.
    """

    labels: list[str]
    data: np.ndarray
    header: list[str]
    lines: list[int]
    reader: str
    units: dict[str, str]


def _larch(reader: str, path: Path, **kwargs: object) -> object:
    """Call ``larch.io.<reader>`` with its prints and warnings kept out of the node's output."""
    from larch import io as larch_io

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return getattr(larch_io, reader)(str(path), **kwargs)


def _data_lines(path: Path, lines: list[str]) -> tuple[list[int], int]:
    """The 0-based indices of the lines larch's ``read_ascii`` takes as data (same rule, same
    ``getfloats``), and the index of the last header line (-1 if none)."""
    from larch.io.columnfile import getfloats

    data: list[int] = []
    section = "FOOTER"
    header_end = -1
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not line:
            continue
        numbers = None not in getfloats(line)
        if section == "FOOTER" and numbers:
            section = "DATA"
        elif section == "DATA" and not numbers:
            header_end = i
            break
        if section == "DATA":
            data.append(i)
    data.reverse()
    return data, header_end


def _check_rows(path: Path, lines: list[str], data: list[int], header_end: int) -> None:
    """Raise where larch would silently drop rows or pad them with NaN."""
    from larch.io.columnfile import getfloats

    if not data:
        raise XdiFormatError(path, 0, "no data: no line at the end of the file is a row of numbers")
    ncol = len(getfloats(lines[data[-1]]))
    for i in data:
        n = len(getfloats(lines[i]))
        if n != ncol:
            raise XdiFormatError(
                path, i + 1, f"{n} values where the last data line has {ncol} (a short or long row)"
            )
    above = [j for j in range(header_end) if lines[j].strip()]
    if header_end >= 0 and above:
        before = lines[above[-1]].strip()
        if (
            before[0] not in "#;!%*<"
            and len(getfloats(before)) == ncol
            and None not in (getfloats(before))
        ):
            line = lines[header_end].strip()
            what = (
                "a comment line between data rows"
                if line[0] in "#;!%*<"
                else f"{line[:60]!r} is not a row of {ncol} numbers but has data rows above it"
            )
            raise XdiFormatError(
                path,
                header_end + 1,
                f"{what}: larch would take it and the {len(above)} lines above as the header and "
                "drop their data (remove or fix the line)",
            )


def _refuse_spec(path: Path, lines: list[str]) -> None:
    scans = [i + 1 for i, line in enumerate(lines) if SPEC_SCAN.match(line)]
    if scans:
        at = ", ".join(str(n) for n in scans[:5]) + (", ..." if len(scans) > 5 else "")
        raise XdiFormatError(
            path,
            scans[0],
            f"this is a SPEC file ({len(scans)} scan(s), '#S' at line {at}): "
            "replay it with 'use: spec_replay' (one stream per scan)",
        )


def read_scan(
    path: str | os.PathLike[str],
    columns: list[str] | None = None,
    labels_line: int | None = None,
) -> ScanTable:
    """Read the columns of a scan file with xraylarch (see the module doc).

    Args:
        path: the file.
        columns: names for the columns, in order, instead of the file's (as many as there are
            columns).
        labels_line: take the column names from this 1-based line of the file (its words,
            a leading comment character dropped) instead of larch's choice.

    Returns:
        The :class:`ScanTable`.

    Raises:
        XdiFormatError: a SPEC file (``#S`` lines); no data; a data row with another number of
            values than the others; a line that is not numbers between data rows; ``columns``
            or the labels line does not give one unique name per column; larch cannot read the
            file (its message, with the file).
        OSError: the file cannot be read.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    _refuse_spec(path, lines)
    xdi = re.match(r"\s*#\s*XDI/", text) is not None
    if xdi:
        try:
            group = _larch("read_xdi", path)
        except (ValueError, OSError) as exc:
            raise XdiFormatError(path, 0, f"larch read_xdi: {exc}".strip()) from None
        data = np.asarray(group.data, dtype=np.float64)
        if data.ndim != 2:
            raise XdiFormatError(path, 0, "no data rows")
        names = list(group.array_labels)
        units = {n: u for n, u in zip(names, getattr(group, "array_units", []), strict=False) if u}
        rows = [i for i, line in enumerate(lines) if line.strip() and line.lstrip()[0] != "#"]
        header = [line for line in lines if line.lstrip().startswith("#")]
    else:
        rows, header_end = _data_lines(path, lines)
        _check_rows(path, lines, rows, header_end)
        group = _larch("read_ascii", path)
        data = np.asarray(group.data, dtype=np.float64)
        names, units, header = list(group.array_labels), {}, list(group.header)
    if data.shape[1] != len(rows):
        raise XdiFormatError(
            path, 0, f"larch read {data.shape[1]} data rows where the file has {len(rows)}"
        )
    if labels_line is not None:
        if not 1 <= labels_line <= len(lines):
            raise XdiFormatError(path, 0, f"labels_line {labels_line}: the file has {len(lines)}")
        columns = lines[labels_line - 1].strip().lstrip("#;!%*").split()
        where = f"line {labels_line}"
    else:
        where = "params.columns"
    if columns is not None:
        if len(columns) != data.shape[0] or len(set(columns)) != len(columns):
            raise XdiFormatError(
                path,
                labels_line or 0,
                f"{where} gives {len(columns)} names ({', '.join(columns)}) for "
                f"{data.shape[0]} columns; one unique name per column is needed",
            )
        units = {}
        names = list(columns)
    return ScanTable(
        names, data, header, [i + 1 for i in rows], "read_xdi" if xdi else "read_ascii", units
    )


class EnergyParams(beampipe.Params):
    """The energy axis of a scan file: ``energy``: the column (None: no energy axis is made);
    ``energy_units``: ``eV``, ``keV``, ``auto`` (keV if every value is below 200, with a
    warning) or ``deg`` (monochromator Bragg angle, converted with the crystal's d-spacing);
    ``mono``: the crystal, e.g. ``Si(111)`` (d-spacing from xraydb), or ``d_spacing`` in
    Angstrom."""

    energy: str | None = None
    energy_units: Literal["eV", "keV", "auto", "deg"] = "eV"
    mono: str = Field("Si(111)", min_length=1)
    d_spacing: PositiveFloat | None = None


def d_spacing(mono: str) -> float:
    """The lattice-plane spacing of a monochromator crystal, in Angstrom, from xraydb: the
    kinematic Bragg angle theta that ``xraydb.darwin_width`` gives at 10 keV, d = hc / (2 E
    sin theta).

    Args:
        mono: ``Si(111)``, ``Si 311``, ``Ge(220)``, ``C(111)`` (the crystals xraydb knows).

    Raises:
        ValueError: the name is not of that form or xraydb has no such crystal.
    """
    import xraydb
    from xraydb.utils import PLANCK_HC

    m = _CRYSTAL.match(mono)
    if not m:
        raise ValueError(f"mono {mono!r}: expected a crystal like 'Si(111)'")
    hkl = tuple(int(c) for c in m["hkl"].replace(" ", ""))
    try:
        theta = xraydb.darwin_width(10000.0, m["name"].title(), hkl).theta
    except KeyError:
        raise ValueError(f"mono {mono!r}: xraydb knows Si, Ge and C crystals") from None
    return PLANCK_HC / (2 * 10000.0 * math.sin(theta))


def energy_ev(
    values: np.ndarray, params: EnergyParams, where: str
) -> tuple[np.ndarray, str | None]:
    """The energies of a column in eV, and a warning to show (or None).

    ``eV``: as they are, but an error if every value is below 200 (keV, most likely);
    ``keV``: times 1000; ``auto``: times 1000 if every value is below 200; ``deg``:
    ``PLANCK_HC / (2 d sin(angle))`` (xraydb's hc, the d-spacing of ``mono`` or ``d_spacing``),
    as larch's Larix converts angles.

    Raises:
        ValueError: keV values with ``energy_units: eV`` (names ``where`` and the range).
    """
    from xraydb.utils import PLANCK_HC

    values = np.asarray(values, dtype=np.float64)
    units = params.energy_units
    top = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if units == "deg":
        d = params.d_spacing or d_spacing(params.mono)
        return PLANCK_HC / (2 * d * np.sin(np.deg2rad(values))), None
    if units == "keV":
        return values * 1000.0, None
    if top < KEV_BELOW:
        lo = float(np.nanmin(values))
        if units == "eV":
            raise ValueError(
                f"{where}: energies {lo:g} to {top:g} look like keV, not eV; set the source's "
                "params energy_units: keV (or auto)"
            )
        return values * 1000.0, f"{where}: energies {lo:g} to {top:g} taken as keV (auto)"
    return values, None

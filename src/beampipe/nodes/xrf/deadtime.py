"""Dead-time correction of multi-element XRF spectra, their sum over the elements, and the
motor positions of the same trigger: ``use: xrf.deadtime``.

Each element's spectrum is multiplied by its dead-time correction factor, as PyMca does for XIA
files (``PyMca5.PyMcaCore.XiaEdf.XiaEdfCountFile.correct``: counts x ICR / OCR) and as the
Xspress3 driver's ``DTFactor`` is applied (xraylarch, ``larch.xrmmap``: counts x dtfactor):

* ``dt_factor``: the factor the file holds (Xspress3 ``CHAN{k}DTFactor``);
* ``icr_ocr``: ICR / OCR (input and output count rates of the element's pulse processor);
* ``live_time``: real time / live time (the fraction of the real time the processor was live).

The corrected spectra are then summed over the elements (``elements: sum``) or kept per
element (``elements: each``, for a fit of each element).

The spectra come as one (elements, channels) item (a detector file) or as one 1-D item per
element (live sources: an EPICS IOC serves one waveform PV per element, ASAP::O one substream
per element), named by a list (``spectrum: [mca1, mca2]``) and stacked in that order; the
dead-time data then likewise come as one 0-d item per element (``icr: [icr1, icr2]``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

import beampipe
from beampipe.nodes.columns import column, numeric

__all__ = ["DeadTimeError", "PositionsMissing", "XrfDeadTime"]

log = logging.getLogger(__name__)

FACTORS = {
    "dt_factor": ("dt_factor",),
    "icr_ocr": ("icr", "ocr"),
    "live_time": ("real_time", "live_time"),
}
"""Correction -> the data it needs (the params naming their items), numerator first."""

Names = str | list[str]
"""One data item, or one per element (stacked in the order listed)."""


class DeadTimeError(ValueError):
    """A message lacks the dead-time data its correction needs, or they do not match its
    spectra; the message names node, stream, id and what the message has."""


class PositionsMissing(KeyError):
    """The positions of a spectrum's trigger did not arrive on the ``positions`` port; names
    node, stream and id."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class XrfDeadTime(beampipe.Worker):
    """Dead-time corrected spectra of a multi-element detector, summed or per element, with the
    positions of the same trigger.

    Input port ``in``: one scan point per message: data ``spectrum`` (name set by the param),
    (elements, channels) or (channels,) for one element, counts; and the dead-time data of
    ``correction``, each (elements,) (``mca_files`` sends them from detector files:
    ``dt_factor``, ``icr``, ``ocr``, ``live_time``, ``real_time``). Or, with ``spectrum`` a
    list of names, one (channels,) item per element, stacked in the order listed, and the
    dead-time data as one item of one value per element where their param is a list of names
    (a live source: ``epics_source`` in ``snapshot`` mode sends one item per PV). The 0-d
    numeric items named by ``positions`` become entries of the output's metadata
    ``positions``.

    Input port ``positions`` (optional): the motor or encoder positions of the same trigger
    (same stream and id: the runtime forms one event of both), e.g. ``hdf5_replay`` of a
    positions table (``rows: true``) or any source sending 0-d values: every 0-d numeric data
    item, each value of a 1-D item named by ``position_names``, and the entries of a metadata
    ``positions`` dict become the output's metadata ``positions`` (``{name: float}``, which the
    ``map`` reducer reads as ``x: positions.samx``).

    Output, per point (stream and id kept): data ``spectrum`` (named by the param, or
    ``spectrum`` when the param is a list; float64: (channels,), the sum of
    the corrected spectra of the elements kept, for ``elements: sum``; (elements, channels) for
    ``each``) and ``dt_factor`` (float64, (elements,): the factors applied, 1 for
    ``correction: none``); metadata: the spectrum message's, plus ``positions``, ``correction``
    (the one applied) and ``kept_elements`` (the 0-based indices of the elements kept).

    An element whose OCR or live time is 0 gets the factor 1 (as PyMca's XiaEdf does), with a
    warning naming node, stream, id and element.

    Raises:
        DeadTimeError: the data of ``correction`` are missing or not of shape (elements,)
            (an item of a list: not one value); ``correction: auto`` finds none of them; the
            items of a ``spectrum`` list are not 1-D of the same channels.
        PositionsMissing: (a ``KeyError``) the ``positions`` port is connected but the event
            came without its part (``events.timeout`` passed, or the stream ended).
        ValueError: ``select`` names an element the spectra do not have; a positions item is
            neither 0-d nor 1-D, or a 1-D one does not match ``position_names``.
        MissingColumn: (a ``KeyError``) no ``spectrum`` entry (or an item of its list), or no
            item of ``positions``.
    """

    inputs = ("in", "positions")
    events = True

    class Params(beampipe.Params):
        """``correction``: ``auto`` (the first of ``dt_factor``, ``icr_ocr``, ``live_time``
        whose data the message has; none of them is an error), ``dt_factor``, ``icr_ocr``,
        ``live_time`` or ``none``. ``elements``: ``sum`` or ``each``. ``select``: the
        0-based elements kept (None: all; leave out a noisy or dead element). ``spectrum``: the
        data name of the spectra, or a list of one name per element (stacked in that order).
        ``dt_factor``, ``icr``, ``ocr``, ``real_time``, ``live_time``: the data names of the
        dead-time data, or (with ``spectrum`` a list) a list of as many names, one 0-d item per
        element. ``positions``: 0-d data items of the spectra message put into the metadata
        ``positions`` (motor positions a live source sends as data). ``position_names``: names
        of the values of a 1-D item on the ``positions`` port, in order (``[samx, samy]``)."""

        correction: Literal["auto", "dt_factor", "icr_ocr", "live_time", "none"] = "auto"
        elements: Literal["sum", "each"] = "sum"
        select: list[int] | None = None
        spectrum: Names = "spectrum"
        dt_factor: Names = "dt_factor"
        icr: Names = "icr"
        ocr: Names = "ocr"
        real_time: Names = "real_time"
        live_time: Names = "live_time"
        positions: list[str] = Field(default_factory=list)
        position_names: list[str] | None = None

        @field_validator("spectrum")
        @classmethod
        def _spectrum_items(cls, value: Names) -> Names:
            if isinstance(value, list) and not value:
                raise ValueError("an empty list: name one data item per element")
            if isinstance(value, list) and len(set(value)) != len(value):
                raise ValueError(f"{value}: a name is listed twice")
            return value

        @field_validator("dt_factor", "icr", "ocr", "real_time", "live_time")
        @classmethod
        def _one_per_element(cls, value: Names, info: ValidationInfo) -> Names:
            spectrum = info.data.get("spectrum")
            if not isinstance(value, list) or spectrum is None:
                return value
            if not isinstance(spectrum, list):
                raise ValueError(
                    f"a list of {len(value)} names needs spectrum as a list of the elements' "
                    f"items; spectrum is {spectrum!r}, one (elements, channels) item: give "
                    f"{info.field_name} one (elements,) item's name"
                )
            if len(value) != len(spectrum):
                raise ValueError(
                    f"{len(value)} names for the {len(spectrum)} elements of spectrum "
                    f"{spectrum}: one per element, in the same order"
                )
            return value

    params: XrfDeadTime.Params

    def process(self, event: beampipe.Event) -> beampipe.Message:
        where = f"{self.name}: stream {event.stream!r}, id {event.id}"
        if "in" in event.missing:
            raise DeadTimeError(
                f"{where}: positions without a spectrum of the same trigger (the spectra "
                "source sent no message of this id before events.timeout or the stream's end)"
            )
        msg = event.messages["in"]
        counts = self._counts(msg, where)
        correction, factor = self._factor(msg, counts.shape[0], where)
        keep = self._kept(counts.shape[0], where)
        corrected = counts[keep] * factor[keep, np.newaxis]
        spectrum = corrected.sum(axis=0) if self.params.elements == "sum" else corrected
        metadata = {
            **msg.metadata,
            "correction": correction,
            "kept_elements": [int(k) for k in keep],
        }
        port = "positions" in event.messages or "positions" in event.missing
        if port or self.params.positions:
            metadata["positions"] = {
                **msg.metadata.get("positions", {}),
                **{k: float(self._value(msg, k, where)) for k in self.params.positions},
                **(self._positions(event, where) if port else {}),
            }
        name = self.params.spectrum if isinstance(self.params.spectrum, str) else "spectrum"
        return beampipe.Message(data={name: spectrum, "dt_factor": factor}, metadata=metadata)

    def _counts(self, msg: beampipe.Message, where: str) -> np.ndarray:
        """The spectra of ``msg`` as (elements, channels) float64."""
        names = self.params.spectrum
        if isinstance(names, str):
            counts = column(msg, names, where)
            if counts.ndim == 1:
                counts = counts[np.newaxis]
            if counts.ndim != 2:
                raise DeadTimeError(
                    f"{where}: spectrum of shape {counts.shape}: (elements, channels) or "
                    "(channels,) expected"
                )
            return counts
        items = [column(msg, name, where) for name in names]
        for name, item in zip(names, items, strict=True):
            if item.shape != items[0].shape or item.ndim != 1:
                raise DeadTimeError(
                    f"{where}: spectrum item {name!r} of shape {item.shape} (item "
                    f"{names[0]!r}: {items[0].shape}): the elements' spectra must be 1-D, of "
                    "the same channels"
                )
        return np.stack(items)

    def _value(self, msg: beampipe.Message, name: str, where: str) -> np.float64:
        """The one value of the data item ``name`` (0-d, or 1 value), float64."""
        value = numeric(msg, name, where, kinds="iuf")
        if value.size != 1:
            raise DeadTimeError(
                f"{where}: item {name!r} of shape {value.shape}: one value (0-d) expected"
            )
        return np.float64(value.reshape(()))

    def _names(self, key: str) -> list[str]:
        """The data names of the dead-time data ``key`` (one, or one per element)."""
        names = getattr(self.params, key)
        return [names] if isinstance(names, str) else names

    def _factor(self, msg: beampipe.Message, n: int, where: str) -> tuple[str, np.ndarray]:
        correction = self.params.correction
        if correction == "none":
            return correction, np.ones(n)
        if correction == "auto":
            correction = next(
                (
                    c
                    for c, keys in FACTORS.items()
                    if all(n in msg.data for k in keys for n in self._names(k))
                ),
                "",
            )
            if not correction:
                wanted = "; or ".join(
                    ", ".join(n for k in keys for n in self._names(k)) for keys in FACTORS.values()
                )
                raise DeadTimeError(
                    f"{where}: no dead-time data in the message (it has "
                    f"{', '.join(msg.data)}); correction 'auto' looks for {wanted} (set "
                    "correction: none to sum uncorrected)"
                )
        needed = [n for k in FACTORS[correction] for n in self._names(k)]
        if not all(k in msg.data for k in needed):
            raise DeadTimeError(
                f"{where}: correction {correction!r} needs {' and '.join(needed)}; the message "
                f"has {', '.join(msg.data)} (set correction to what the detector file holds, "
                "or the params naming its items)"
            )
        values = [self._rates(msg, key, n, where) for key in FACTORS[correction]]
        if len(values) == 1:
            return correction, values[0].copy()
        top, bottom = values
        zero = bottom == 0
        if zero.any():
            log.warning(
                "%s: %s is 0 for element(s) %s: factor 1 used (no correction), as PyMca does",
                where,
                FACTORS[correction][1],
                ", ".join(str(k) for k in np.flatnonzero(zero)),
            )
        return correction, np.divide(top, bottom, out=np.ones(n), where=~zero)

    def _rates(self, msg: beampipe.Message, key: str, n: int, where: str) -> np.ndarray:
        """The dead-time data ``key`` of ``msg``, float64 (n,): one item, or one per element."""
        names = getattr(self.params, key)
        if isinstance(names, list):
            return np.array([self._value(msg, name, where) for name in names])
        value = column(msg, names, where).reshape(-1)
        if value.shape != (n,):
            raise DeadTimeError(
                f"{where}: {names} has {value.size} values for {n} elements' spectra"
            )
        return value

    def _kept(self, n: int, where: str) -> np.ndarray:
        select = self.params.select
        if select is None:
            return np.arange(n)
        wrong = [k for k in select if not 0 <= k < n]
        if wrong:
            raise ValueError(f"{where}: select names element(s) {wrong}; the spectra have {n}")
        return np.asarray(select, dtype=np.int64)

    def _positions(self, event: beampipe.Event, where: str) -> dict[str, float]:
        if "positions" in event.missing:
            raise PositionsMissing(
                f"{where}: no positions of this trigger arrived on port 'positions' (none "
                "before events.timeout or the stream's end): does the positions source send "
                "the same stream names and ids as the spectra? (events: {incomplete: drop} "
                "skips such points, counted)"
            )
        msg = event.messages["positions"]
        out: dict[str, Any] = {k: float(v) for k, v in msg.metadata.get("positions", {}).items()}
        for name in msg.data:
            value = numeric(msg, name, where, kinds="iuf")
            if value.ndim == 0:
                out[name] = float(value)
                continue
            names = self.params.position_names
            if value.ndim != 1 or names is None or len(names) != value.size:
                raise ValueError(
                    f"{where}: positions item {name!r} of shape {value.shape}: give "
                    f"position_names, one name per value of a 1-D item (have "
                    f"{names if names is not None else 'none'})"
                )
            out.update(zip(names, map(float, value), strict=True))
        return out

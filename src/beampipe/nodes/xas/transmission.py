"""X-ray absorption spectroscopy, per scan point: ``use: xas.transmission``.

``xas.transmission`` turns the ion-chamber readings of each scan point into mu(E) (stateless: may
run as several replicas). Column defaults follow PETRA III P65 (see
``examples/xas-p65/data/README.md``): ``enc_energy`` (eV), ``vfc01`` = I0, ``vfc02`` = It (after
the sample), ``vfc03`` = Iref (after the reference foil), ``vfc04`` = If (fluorescence).
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field, model_validator

import beampipe
from beampipe.nodes.columns import MissingColumn, column

__all__ = ["MissingColumn", "Transmission"]


class Transmission(beampipe.Worker):
    """Transmission, reference and fluorescence signals of one scan point.

    Input data (names set by the params; any equal shapes, usually 0-d; converted to float64):
    energy (eV) and the readings I0, It, Iref, If.

    Output data, all float64 of the input shape:

    * ``energy``: the energy, eV.
    * ``mu = ln(I0 / It)``: sample absorption (transmission).
    * ``mu_ref = ln(It / Iref)``: reference-foil absorption, for energy calibration (left out
      with ``iref: null``).
    * ``fluorescence = If / I0`` (left out with ``if: null``).
    * ``i0``, ``it``, ``iref``, ``if``: the raw readings, passed on (those not switched off).
      With ``if`` a list of channels, ``if`` is their dead-time-corrected sum, as xraylarch's
      ``larch.io.sum_fluor_channels``: ``sum(roi * icr / (ocr * ltime))`` over the channels in
      order (a missing ``icr``, ``ocr`` or ``ltime`` list counts as 1), or
      ``sum(roi * dtfactor)`` with given dead-time factors.

    metadata ``{"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}``; stream and id
    are the input message's. Computed with numpy (``np.log(i0 / it)``); readings <= 0 give
    nan / +-inf without warnings, so one bad point does not stop a scan.

    Raises:
        MissingColumn: (a ``KeyError``) a column is not in the message; names it and those
            present.
        TypeError: a column holds bytes or a non-numeric array.
    """

    class Params(beampipe.Params):
        """Names of the input columns. ``if`` (fluorescence) is spelt ``if_`` in Python.
        ``iref: null`` / ``if: null``: the file has no such channel (no ``mu_ref`` /
        ``fluorescence``). ``if`` may list the ROI columns of a multi-element detector;
        ``icr``, ``ocr``, ``ltime`` (input and output count rates, live time) or ``dtfactor``
        (dead-time factors) then list one column per channel, in the same order."""

        model_config = ConfigDict(populate_by_name=True)

        energy: str = "enc_energy"
        i0: str = "vfc01"
        it: str = "vfc02"
        iref: str | None = "vfc03"
        if_: str | list[str] | None = Field("vfc04", alias="if")
        icr: list[str] | None = None
        ocr: list[str] | None = None
        ltime: list[str] | None = None
        dtfactor: list[str] | None = None

        @model_validator(mode="after")
        def _channels(self) -> Transmission.Params:
            lists = {k: getattr(self, k) for k in ("icr", "ocr", "ltime", "dtfactor")}
            given = {k: v for k, v in lists.items() if v is not None}
            if not given:
                return self
            if not isinstance(self.if_, list):
                raise ValueError(f"{', '.join(given)} need 'if' to be a list of ROI columns")
            if self.dtfactor is not None and len(given) > 1:
                raise ValueError("give dtfactor or icr/ocr/ltime, not both")
            for key, names in given.items():
                if len(names) != len(self.if_):
                    raise ValueError(
                        f"{key} lists {len(names)} columns, 'if' {len(self.if_)}: one per channel"
                    )
            return self

    params: Transmission.Params

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        p = self.params
        energy, i0, it = (column(msg, name, self.name) for name in (p.energy, p.i0, p.it))
        data = {"energy": energy}
        with np.errstate(divide="ignore", invalid="ignore"):
            data["mu"] = np.asarray(np.log(i0 / it))
            iref = column(msg, p.iref, self.name) if p.iref is not None else None
            if_ = self._fluorescence(msg) if p.if_ is not None else None
            if iref is not None:
                data["mu_ref"] = np.asarray(np.log(it / iref))
            if if_ is not None:
                data["fluorescence"] = np.asarray(if_ / i0)
        data.update(i0=i0, it=it)
        if iref is not None:
            data["iref"] = iref
        if if_ is not None:
            data["if"] = if_
        metadata = {"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}
        return beampipe.Message(data=data, metadata=metadata)

    def _fluorescence(self, msg: beampipe.Message) -> np.ndarray:
        """If: one column, or the dead-time-corrected sum of the channels (larch's formula and
        order of operations)."""
        p = self.params
        if isinstance(p.if_, str):
            return column(msg, p.if_, self.name)

        def get(names: list[str] | None, j: int) -> np.ndarray | float:
            return 1.0 if names is None else column(msg, names[j], self.name)

        total: np.ndarray | float = 0.0
        for j, roi in enumerate(p.if_):
            droi = column(msg, roi, self.name)
            if p.dtfactor is not None:
                total = total + droi * get(p.dtfactor, j)
            else:
                total = total + droi * get(p.icr, j) / (get(p.ocr, j) * get(p.ltime, j))
        return np.asarray(total, dtype=np.float64)

"""X-ray absorption spectroscopy, per scan point: ``use: xas.transmission``.

``xas.transmission`` turns the ion-chamber readings of each scan point into mu(E) (stateless: may
run as several replicas). Column defaults follow PETRA III P65 (see
``examples/xas-p65/data/README.md``): ``enc_energy`` (eV), ``vfc01`` = I0, ``vfc02`` = It (after
the sample), ``vfc03`` = Iref (after the reference foil), ``vfc04`` = If (fluorescence).
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field

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
        ``fluorescence``)."""

        model_config = ConfigDict(populate_by_name=True)

        energy: str = "enc_energy"
        i0: str = "vfc01"
        it: str = "vfc02"
        iref: str | None = "vfc03"
        if_: str | None = Field("vfc04", alias="if")

    params: Transmission.Params

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        p = self.params
        energy, i0, it = (column(msg, name, self.name) for name in (p.energy, p.i0, p.it))
        data = {"energy": energy}
        with np.errstate(divide="ignore", invalid="ignore"):
            data["mu"] = np.asarray(np.log(i0 / it))
            iref = column(msg, p.iref, self.name) if p.iref is not None else None
            if_ = column(msg, p.if_, self.name) if p.if_ is not None else None
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

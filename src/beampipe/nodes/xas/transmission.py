"""X-ray absorption spectroscopy, per scan point: ``use: xas.transmission``.

``xas.transmission`` turns the ion-chamber readings of each scan point into mu(E) (stateless: may
run as several replicas). Column defaults follow PETRA III P65 (see
``examples/xas-p65/data/README.md``): ``enc_energy`` (eV), ``VFC01`` = I0, ``VFC02`` = It (after
the sample), ``VFC03`` = Iref (after the reference foil), ``VFC04`` = If (fluorescence).
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
    * ``mu_ref = ln(It / Iref)``: reference-foil absorption, for energy calibration.
    * ``fluorescence = If / I0``.
    * ``i0``, ``it``, ``iref``, ``if``: the raw readings, passed on.

    metadata ``{"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}``; stream and id
    are the input message's. Computed with numpy (``np.log(i0 / it)``); readings <= 0 give
    nan / +-inf without warnings, so one bad point does not stop a scan.

    Raises:
        MissingColumn: (a ``KeyError``) a column is not in the message; names it and those
            present.
        TypeError: a column holds bytes or a non-numeric array.
    """

    class Params(beampipe.Params):
        """Names of the input columns. ``if`` (fluorescence) is spelt ``if_`` in Python."""

        model_config = ConfigDict(populate_by_name=True)

        energy: str = "enc_energy"
        i0: str = "VFC01"
        it: str = "VFC02"
        iref: str = "VFC03"
        if_: str = Field("VFC04", alias="if")

    params: Transmission.Params

    def process(self, msg: beampipe.Message) -> beampipe.Message:
        p = self.params
        energy, i0, it, iref, if_ = (
            column(msg, name, self.name) for name in (p.energy, p.i0, p.it, p.iref, p.if_)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = np.log(i0 / it)
            mu_ref = np.log(it / iref)
            fluorescence = if_ / i0
        data = {
            "energy": energy,
            "mu": np.asarray(mu),
            "mu_ref": np.asarray(mu_ref),
            "fluorescence": np.asarray(fluorescence),
            "i0": i0,
            "it": it,
            "iref": iref,
            "if": if_,
        }
        metadata = {"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}
        return beampipe.Message(data=data, metadata=metadata)

"""How an azimuthally integrated pattern was made: the ``process`` metadata that
``azint.integrate1d`` / ``azint.integrate2d`` put on each result, from which ``nexus_writer``
writes the NXprocess of its NXazint1d / NXazint2d view (docs/nexus.md, "NXazint1d")."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from beampipe.nodes.azint.geometry import AzintParams

__all__ = ["REFERENCE", "process_metadata"]

REFERENCE = (
    "G. Ashiotis, A. Deschildre, Z. Nawaz, J. P. Wright, D. Karkoulis, F. E. Picca and "
    "J. Kieffer, The fast azimuthal integration Python library: pyFAI, J. Appl. Cryst. 48 "
    "(2015) 510-519, https://doi.org/10.1107/S1600576715004306"
)
"""The citation pyFAI asks for."""

_OPTIONS = (
    "unit",
    "npt",
    "npt_azim",
    "method",
    "polarization_factor",
    "solid_angle",
    "error_model",
    "monitor",
    "radial_range",
    "azimuth_range",
    "mask",
    "mask_bits",
    "dark",
    "flat",
)
"""The params recorded as the integration's parameters (the geometry goes apart)."""


def process_metadata(params: AzintParams, integrator: Any, method: list[str]) -> dict[str, Any]:
    """The ``process`` metadata of a node's results (JSON-able, made once per replica).

    ``program`` (``pyFAI``), ``version`` (pyFAI's), ``reference`` (:data:`REFERENCE`),
    ``applied`` (``solid_angle``, ``polarization``, ``normalization`` (always: pyFAI divides
    each bin by its pixels' share), ``monitor``: booleans), ``geometry`` (pyFAI's
    ``get_config()``: ``dist``, ``poni1``, ``poni2`` (m), ``rot1``..``rot3`` (rad),
    ``wavelength`` (m), ``detector``, ``detector_config``), ``poni`` (the PONI file's text, or
    the geometry of the params written as pyFAI writes a PONI file) and ``parameters`` (the
    node's integration params, paths as given; ``method``: ``method``, the one pyFAI runs
    (``[split, algo, impl]``, and the OpenCL device's name on one), also for ``method:
    auto``; ``poni_file``: the PONI file's path).
    """
    import pyFAI
    from pyFAI.io.ponifile import PoniFile

    if params.poni is not None:
        poni = Path(params.poni).read_text()
    else:
        text = io.StringIO()
        PoniFile(integrator).write(text)
        poni = text.getvalue()
    options = params.model_dump()
    parameters = {k: options[k] for k in _OPTIONS if options.get(k) is not None}
    parameters["method"] = method
    for key in ("radial_range", "azimuth_range"):
        if key in parameters:
            parameters[key] = list(parameters[key])
    if params.poni is not None:
        parameters["poni_file"] = params.poni
    return {
        "program": "pyFAI",
        "version": pyFAI.version,
        "reference": REFERENCE,
        "applied": {
            "solid_angle": params.solid_angle,
            "polarization": params.polarization_factor is not None,
            "normalization": True,
            "monitor": params.monitor is not None,
        },
        "geometry": integrator.get_config(),
        "poni": poni,
        "parameters": parameters,
    }

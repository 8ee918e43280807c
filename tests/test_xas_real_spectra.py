"""Eleven real spectra from ten beamlines (tests/data/xas), through the nodes as a pipeline runs
them (replay -> transmission -> normalize / exafs): every array and scalar equals xraylarch's
``pre_edge`` (exact) and ``autobk`` + ``xftf`` (rtol 1e-9) run directly on the same arrays, read
with larch's own readers. Covers plain columns, XDI, keV and mono-angle files, transmission and
fluorescence."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import beampipe
from beampipe.nodes.xas.exafs import Exafs
from beampipe.nodes.xas.normalize import Normalize
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"
PF_D = 3.13551  # the Si(111) d-spacing the Photon Factory files state (Angstrom)

# file -> energy column, its units, I0, It (transmission) or If (fluorescence), mode
SPECTRA = {
    "APS12BM_2019.dat": ("energy", "keV", "i0", "i1", "mu"),
    "APS13ID_2008.dat": ("energy", "eV", "i0", "i1", "mu"),
    "APS20BM_2001.dat": ("mono_energy", "eV", "i0", "i1", "mu"),
    "CLSHXMA.dat": ("energyfeedback", "eV", "detector1", "detector2", "mu"),
    "ESRF_BM08_LISA_2021.dat": ("ebraggenergy", "eV", "i0_eh1", "i1_eh1", "mu"),
    "NSLS_XDAC_2011.dat": ("energy", "eV", "i0", "it", "mu"),
    "PF9A_2022.dat": ("angle_read", "deg", "col4", "col5", "fluorescence"),
    "PFBL12C_2005.dat": ("angle_read", "deg", "col4", "col5", "mu"),
    "SSRL1_2006.dat": ("achieved_energy", "eV", "i0", "i1", "mu"),
    "cu_metal_rt.xdi": ("energy", "eV", "i0", "itrans", "mu"),
    "v_foil.xdi": ("energy", "eV", "i0", "i1", "mu"),
}


def pipeline_points(name: str) -> list:
    energy, units, i0, it, _ = SPECTRA[name]
    source = {"paths": [str(DATA / name)], "energy": energy, "energy_units": units}
    if units == "deg":
        source["d_spacing"] = PF_D
    items = run(XdiReplay, params=source, name="scan").items()
    params = {"energy": "energy", "i0": i0, "it": it, "iref": None, "if": it}
    return run(Transmission, items, params=params, name="mu").items()


def larch_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Energy (eV) and the signal, from larch's reader, as the nodes prepare them: finite
    points, sorted by energy when they are not."""
    from larch.io import read_ascii, read_xdi
    from larch.utils.physical_constants import DEG2RAD, PLANCK_HC

    energy, units, i0, it, signal = SPECTRA[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = read_xdi(str(DATA / name)) if name.endswith(".xdi") else read_ascii(str(DATA / name))
    e = getattr(g, energy)
    e = {"eV": e, "keV": e * 1000.0}.get(units)
    if e is None:
        e = PLANCK_HC / (2 * PF_D * np.sin(DEG2RAD * getattr(g, energy)))
    with np.errstate(divide="ignore", invalid="ignore"):
        y = (
            np.log(getattr(g, i0) / getattr(g, it))
            if signal == "mu"
            else (getattr(g, it) / getattr(g, i0))
        )
    good = np.isfinite(e) & np.isfinite(y)
    e, y = e[good], y[good]
    if np.any(np.diff(np.argsort(e)) != 1):
        order = np.argsort(e)
        e, y = e[order], y[order]
    return e, y


BEAMLINES = {  # file -> (facility, beamline), from tests/data/xas/README.md
    "APS12BM_2019.dat": ("APS", "12-BM"),
    "APS13ID_2008.dat": ("APS", "13-ID"),
    "APS20BM_2001.dat": ("APS", "20-BM"),
    "CLSHXMA.dat": ("CLS", "HXMA"),
    "ESRF_BM08_LISA_2021.dat": ("ESRF", "BM08"),
    "NSLS_XDAC_2011.dat": ("NSLS", "X-23A2"),
    "PF9A_2022.dat": ("KEK PF", "BL9A"),
    "PFBL12C_2005.dat": ("KEK PF", "BL12C"),
    "SSRL1_2006.dat": ("SSRL", "(not stated in the file)"),
    "cu_metal_rt.xdi": ("APS", "13-ID"),
    "v_foil.xdi": ("APS", "13-BM-D"),
}


def test_eleven_spectra_from_ten_beamlines_of_six_facilities():
    assert set(BEAMLINES) == set(SPECTRA)
    assert len({f for f, _ in BEAMLINES.values()}) == 6
    assert len(set(BEAMLINES.values())) == 10


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_normalize_equals_larch_pre_edge(name):
    from larch import Group
    from larch.xafs import pre_edge

    signal = SPECTRA[name][4]
    out = run(
        Normalize, pipeline_points(name), params={"every": 100000, "mu": signal}, name="norm"
    ).messages()
    assert len(out) == 1 and out[0].metadata["final"]
    got = out[0]
    energy, mu = larch_arrays(name)
    ref = Group()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre_edge(energy, mu, group=ref)
    np.testing.assert_array_equal(got.data["energy"], energy)
    np.testing.assert_array_equal(got.data["mu"], mu)
    for key in ("norm", "pre_edge", "post_edge", "flat"):
        np.testing.assert_array_equal(got.data[key], getattr(ref, key), err_msg=key)
    assert got.metadata["e0"] == float(ref.e0)
    assert got.metadata["edge_step"] == float(ref.edge_step)


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_exafs_equals_larch_autobk_and_xftf(name):
    from larch import Group
    from larch.xafs import autobk, pre_edge, xftf

    signal = SPECTRA[name][4]
    out = run(
        Exafs, pipeline_points(name), params={"every": 100000, "mu": signal}, name="exafs"
    ).messages()
    assert len(out) == 1
    got = out[0]
    energy, mu = larch_arrays(name)
    ref = Group()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre_edge(energy, mu, group=ref)
        autobk(energy, mu, group=ref, rbkg=1.0, kweight=1.0, kmin=0.0)
        xftf(
            ref.k,
            ref.chi,
            group=ref,
            kmin=2.0,
            kmax=min(12.0, ref.k[-1]),
            kweight=2.0,
            dk=1.0,
            window="kaiser",
            rmax_out=10.0,
        )
    for key in ("bkg", "k", "chi", "r", "chir_mag"):
        np.testing.assert_allclose(
            got.data[key], getattr(ref, key), rtol=1e-9, atol=1e-12, err_msg=key
        )
    assert isinstance(got, beampipe.Message) and got.metadata["e0"] == float(ref.e0)

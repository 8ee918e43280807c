"""``xdi_replay`` on real scan files of other beamlines (tests/data/xas, shipped by xraylarch):
every column equals xraylarch's ``read_ascii`` / ``read_xdi`` called directly; energy units,
angles, optional channels and errors that name the cause and the line."""

from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import beampipe
from beampipe.nodes.xas.scanfile import XdiFormatError, d_spacing
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"

# file -> (energy column as larch names it, energy_units)
REAL = {
    "APS12BM_2019.dat": ("energy", "keV"),
    "APS13ID_2008.dat": ("energy", "eV"),
    "APS20BM_2001.dat": ("mono_energy", "eV"),
    "CLSHXMA.dat": ("energyfeedback", "eV"),
    "ESRF_BM08_LISA_2021.dat": ("ebraggenergy", "eV"),
    "NSLS_XDAC_2011.dat": ("energy", "eV"),
    "PF9A_2022.dat": ("angle_read", "deg"),
    "PFBL12C_2005.dat": ("angle_read", "deg"),
    "SSRL1_2006.dat": ("achieved_energy", "eV"),
    "cu_metal_rt.xdi": ("energy", "eV"),
    "fe_xanes_8ch.xdi": ("Energy", "eV"),
    "v_foil.xdi": ("energy", "eV"),
}


def larch_read(path: Path):
    from larch.io import read_ascii, read_xdi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_xdi(str(path)) if path.suffix == ".xdi" else read_ascii(str(path))


def replay_items(path: Path, **params) -> list:
    return run(XdiReplay, params={"paths": [str(path)], **params}, name="scan").items()


def columns_of(items: list) -> dict[str, np.ndarray]:
    msgs = [i for i in items if isinstance(i, beampipe.Message)]
    return {k: np.array([m.data[k] for m in msgs]) for k in msgs[0].data}


def test_twelve_real_files_from_eight_beamlines_equal_larch():
    assert len(REAL) >= 10
    for name, (energy, units) in REAL.items():
        path = DATA / name
        group = larch_read(path)
        items = replay_items(path, energy=energy, energy_units=units)
        start, end = items[0], items[-1]
        assert start.metadata["columns"] == list(group.array_labels), name
        assert start.metadata["reader"] == ("read_xdi" if name.endswith(".xdi") else "read_ascii")
        n = group.data.shape[1]
        assert start.metadata["n_points"] == n and end.last_id == n, name
        got = columns_of(items)
        for j, label in enumerate(group.array_labels):
            if label == "energy" and units != "eV":
                continue  # replaced by the energy in eV
            np.testing.assert_array_equal(got[label], group.data[j], err_msg=f"{name} {label}")
        raw = group.data[list(group.array_labels).index(energy)]
        if units == "keV":
            np.testing.assert_array_equal(got["energy"], raw * 1000.0)
        elif units == "eV":
            np.testing.assert_array_equal(got["energy"], raw)
        assert start.metadata["energy_units"] == "eV"
        assert 1000 < np.median(got["energy"]) < 30000, name


def test_angle_to_energy_as_larch_larix_with_the_header_d_spacing():
    from larch.io import guess_beamline
    from larch.utils.physical_constants import DEG2RAD, PLANCK_HC

    for name in ("PF9A_2022.dat", "PFBL12C_2005.dat"):
        group = larch_read(DATA / name)
        bl = guess_beamline(group.header)(group.header)
        bl.get_array_labels()
        monod = bl.mono_dspace
        assert monod == 3.13551
        got = columns_of(
            replay_items(DATA / name, energy="angle_read", energy_units="deg", d_spacing=monod)
        )
        expected = PLANCK_HC / (2 * monod * np.sin(DEG2RAD * group.angle_read))
        np.testing.assert_array_equal(got["energy"], expected)
        # with the crystal named: xraydb's Si(111) d-spacing, 2e-5 A from the header's
        by_crystal = columns_of(replay_items(DATA / name, energy="angle_read", energy_units="deg"))
        np.testing.assert_allclose(by_crystal["energy"], expected, rtol=1e-5)
    assert d_spacing("Si(111)") == pytest.approx(5.4309 / math.sqrt(3), rel=1e-9)
    assert d_spacing("Si 311") == pytest.approx(5.4309 / math.sqrt(11), rel=1e-9)
    with pytest.raises(ValueError, match="expected a crystal like 'Si\\(111\\)'"):
        d_spacing("silicon")


def test_kev_without_auto_is_an_error_naming_the_file(caplog):
    path = DATA / "APS12BM_2019.dat"
    with pytest.raises(XdiFormatError) as err:
        replay_items(path, energy="energy")
    assert str(err.value) == (
        f"{path}: stream 'APS12BM_2019.dat': energies 6.339 to 6.98474 look like keV, not eV; "
        "set the source's params energy_units: keV (or auto)"
    )
    with caplog.at_level(logging.WARNING):
        got = columns_of(replay_items(path, energy="energy", energy_units="auto"))
    assert "energies 6.339 to 6.98474 taken as keV (auto)" in caplog.text
    np.testing.assert_array_equal(got["energy"], larch_read(path).energy * 1000.0)
    # auto leaves eV alone
    got = columns_of(
        replay_items(DATA / "SSRL1_2006.dat", energy="achieved_energy", energy_units="auto")
    )
    np.testing.assert_array_equal(
        got["energy"], larch_read(DATA / "SSRL1_2006.dat").achieved_energy
    )


def test_spec_file_given_to_xdi_replay_names_the_cause():
    path = DATA / "ESRF_SNBL_2013.dat"
    with pytest.raises(XdiFormatError) as err:
        replay_items(path)
    assert str(err.value) == (
        f"{path}:15: this is a SPEC file (2 scan(s), '#S' at line 15, 496): replay it with "
        "'use: spec_replay' (one stream per scan)"
    )


def test_columns_override_and_labels_line():
    path = DATA / "ESRF_BM08_LISA_2021.dat"
    names = ["e", "i0", "i1", "mu", "i1b", "iref", "muref"]
    items = replay_items(path, columns=names)
    assert items[0].metadata["columns"] == names
    np.testing.assert_array_equal(columns_of(items)["iref"], larch_read(path).ir_eh2)
    with pytest.raises(XdiFormatError, match=r"params.columns gives 2 names \(a, b\) for 7"):
        replay_items(path, columns=["a", "b"])
    # PF BL12C: larch names the last two columns col4, col5; line 17 names them "2" and "3"
    pf = DATA / "PFBL12C_2005.dat"
    line = pf.read_text().split("\n")[16]
    assert line.split()[0] == "Angle(c)"
    items = replay_items(pf, labels_line=17)
    assert items[0].metadata["columns"] == ["Angle(c)", "Angle(o)", "time/s", "2", "3"]
    np.testing.assert_array_equal(columns_of(items)["3"], larch_read(pf).col5)
    with pytest.raises(ValueError, match="either columns or labels_line"):
        XdiReplay.Params(paths=[str(pf)], columns=["a"], labels_line=3)


def test_transmission_without_reference_or_fluorescence_channels():
    path = DATA / "APS13ID_2008.dat"
    group = larch_read(path)
    msgs = [i for i in replay_items(path, energy="energy") if isinstance(i, beampipe.Message)]
    out = run(
        Transmission,
        msgs,
        params={"energy": "energy", "i0": "i0", "it": "i1", "iref": None, "if": None},
        name="mu",
    ).messages()
    assert set(out[0].data) == {"energy", "mu", "i0", "it"}
    mu = np.array([o.data["mu"] for o in out])
    np.testing.assert_array_equal(mu, np.log(group.i0 / group.i1))


def test_short_row_names_the_line(tmp_path):
    text = (DATA / "ESRF_BM08_LISA_2021.dat").read_text().split("\n")
    text[10] = " ".join(text[10].split()[:5])
    path = tmp_path / "short.dat"
    path.write_text("\n".join(text))
    with pytest.raises(XdiFormatError) as err:
        replay_items(path)
    assert re.fullmatch(
        rf"{re.escape(str(path))}:11: 5 values where the last data line has 7 \(a short or long "
        r"row\)",
        str(err.value),
    )

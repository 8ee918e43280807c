"""The SAXS/WAXS example of NSLS-II LiX (issue 18), run as its pipeline file says: I(q) of the
Pilatus 1M SAXS and WAXS2 frames of a silver behenate scan, divided by the em1 monitor of the same
frame, written as NXazint1d.

The geometry comes from the file's py4xs ``detectors`` attribute, converted into PONI files by
``examples/saxs-lix/lix_geometry.py``: the committed PONI files and masks are what the script
makes, and they put the AgBH (00l) rings where the calibrant has them. The written patterns equal
pyFAI's ``integrate1d`` called directly on the same frames with the same PONI, mask and options
(rtol 1e-6), and the direct result divided by the monitor; nxcheck finds no error in the file nor
in its NXazint1d views."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck
from pyFAI.calibrant import get_calibrant
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from beampipe.config import load_pipeline
from beampipe.nodes.azint.geometry import chosen_method, load_pyfai

LIX = REPO / "examples" / "saxs-lix"
PIPELINE = LIX / "azint.yaml"
FILE = LIX / "data" / "AgBH-2020Aug16.h5"
SCAN = "AgBH_2020Aug16/primary/data"
DETECTORS = {"saxs": ("saxs", "pil1M_image"), "waxs": ("waxs2", "pilW2_image")}
"""Port -> (PONI and mask name, frame dataset)."""
RTOL = 1e-6

load_pyfai()
sys.path.insert(0, str(LIX))
import lix_geometry  # noqa: E402  (the example's script, beside its pipeline)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("lix-azint")
    result = beampipe("run", str(PIPELINE), cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "finished: 1/1 streams, 3 messages" in result.stderr, result.stderr
    assert "warning" not in result.stderr, result.stderr
    return cwd / "out" / "saxs-lix-azint.nxs"


def test_the_ponis_and_masks_are_what_the_script_makes_from_the_file(tmp_path):
    lix_geometry.write(tmp_path)
    for name in ("saxs", "waxs2"):
        made, committed = AzimuthalIntegrator(), AzimuthalIntegrator()
        made.load(str(tmp_path / f"{name}.poni"))
        committed.load(str(LIX / f"{name}.poni"))
        assert made.get_config() == committed.get_config()
    with h5py.File(tmp_path / "masks.h5") as made, h5py.File(LIX / "masks.h5") as committed:
        for name in ("saxs", "waxs2"):
            np.testing.assert_array_equal(made[name][()], committed[name][()])


def test_the_conversion_follows_py4xs_conventions():
    detectors = lix_geometry.read_detectors(FILE)
    saxs, waxs = detectors["_SAXS"], detectors["_WAXS2"]
    # SAXS: py4xs turns the frame once (np.rot90): its (x 489.715, y 775.75) is column
    # 980 - 775.75, row 489.715 of the frame as stored; WAXS2 is not turned
    assert lix_geometry.beam_centre(saxs, (1043, 981)) == (980 - 775.75, 489.715)
    assert lix_geometry.beam_centre(waxs, (1043, 981)) == (649.4, 577.5)
    g = lix_geometry.geometry(saxs, (1043, 981))
    np.testing.assert_allclose(g.dist, 19.829845704475016 * 1043 * 172e-6, rtol=1e-12)
    np.testing.assert_allclose([g.poni1, g.poni2], [490.215 * 172e-6, 204.75 * 172e-6])
    assert (g.rot1, g.rot2, g.rot3) == (0, 0, 0)
    np.testing.assert_allclose(g.wavelength, 0.8189142958822383e-10, rtol=1e-12)
    with pytest.raises(ValueError, match="det_tilt 2 is not converted"):
        lix_geometry.geometry({**saxs, "exp_para": {**saxs["exp_para"], "det_tilt": 2}}, (1, 1))
    with pytest.raises(ValueError, match=r"turned 1 times are 1043 x 981, py4xs says 981"):
        lix_geometry.beam_centre(waxs | {"exp_para": {**waxs["exp_para"], "flip": 1}}, (1043, 981))
    # the py4xs mask covers the module gaps: nearly every pixel the Pilatus marks -1
    with h5py.File(FILE) as f:
        gaps = f[f"{SCAN}/pil1M_image"][0] == -1
    assert lix_geometry.mask(saxs)[gaps].mean() > 0.99


def test_the_agbh_rings_fall_where_the_calibrant_has_them():
    q1 = 2 * np.pi / get_calibrant("AgBh").dspacing[0]
    rings = lix_geometry.ring_positions(FILE, LIX)
    assert [n for n, _ in rings["saxs"]] == [1, 2, 3]
    assert [n for n, _ in rings["waxs2"]] == [3, 4, 5, 6, 7, 8, 9]
    for name, found in rings.items():
        for n, q in found:
            assert abs(q / (n * q1) - 1) < 0.006, (name, n, q)


def direct(port: str, normalization_factor: float = 1.0) -> tuple[np.ndarray, object]:
    """(the frame, pyFAI's integrate1d of it with the node's PONI, mask and options)."""
    params = load_pipeline(PIPELINE).node_params(port)
    name, frames = DETECTORS[port]
    with h5py.File(FILE) as f, h5py.File(LIX / "masks.h5") as masks:
        frame, mask = f[f"{SCAN}/{frames}"][0], masks[name][()] != 0
    ai = AzimuthalIntegrator()
    ai.load(str(LIX / f"{name}.poni"))
    result = ai.integrate1d(
        frame,
        params.npt,
        unit=params.unit,
        method=chosen_method(params.method, 1).method,
        mask=mask,
        correctSolidAngle=params.solid_angle,
        polarization_factor=params.polarization_factor,
        error_model=params.error_model,
        normalization_factor=normalization_factor,
    )
    return frame, result


@pytest.mark.parametrize("port", ["saxs", "waxs"])
def test_patterns_equal_pyfai_divided_by_the_monitor(written, port):
    with h5py.File(FILE) as f:
        i0 = float(f[f"{SCAN}/em1_sum_all_mean_value"][0])
    _, want = direct(port, normalization_factor=i0)
    _, raw = direct(port)
    with h5py.File(written) as f:
        group = f[f"AgBH_2020Aug16/{port}"]
        assert list(group["id"]) == [1]
        assert group["intensity"].shape == (1, load_pipeline(PIPELINE).node_params(port).npt)
        np.testing.assert_allclose(group["intensity"][0], want.intensity, rtol=RTOL)
        np.testing.assert_allclose(group["sigma"][0], want.sigma, rtol=RTOL)
        np.testing.assert_allclose(group["q"][()], want.radial, rtol=RTOL)
        np.testing.assert_allclose(group["intensity"][0], raw.intensity / i0, rtol=RTOL)
        assert group["monitor"][()].tolist() == [i0]


@pytest.mark.parametrize("port", ["saxs", "waxs"])
def test_nxazint1d_view_holds_the_patterns_geometry_and_options(written, port):
    import pyFAI

    name = DETECTORS[port][0]
    with h5py.File(written) as f:
        sub = f[f"AgBH_2020Aug16/{port}_azint"]
        assert sub["definition"].asstr()[()] == "NXazint1d"
        applied = {k: bool(sub[f"{k}_applied"][()]) for k in ("solid_angle", "polarization")}
        assert applied == {"solid_angle": True, "polarization": False}
        assert bool(sub["normalization_applied"][()]) and bool(sub["monitor_applied"][()])
        data, group = sub["data"], f[f"AgBH_2020Aug16/{port}"]
        assert data.attrs["signal"] == "I" and list(data.attrs["axes"]) == [".", "radial_axis"]
        np.testing.assert_array_equal(data["I"][()], group["intensity"][()])
        np.testing.assert_array_equal(data["I_errors"][()], group["sigma"][()])
        np.testing.assert_array_equal(data["radial_axis"][()], group["q"][()])
        assert data["radial_axis"].attrs["long_name"] == "q"
        assert data["radial_axis"].attrs["units"] == "1/angstrom"
        assert data["I"].attrs["units"] == "arbitrary units"
        np.testing.assert_array_equal(sub["monitor/data"][()], group["monitor"][()])
        reduction = sub["reduction"]
        assert reduction["program"].asstr()[()] == "pyFAI"
        assert reduction["version"].asstr()[()] == pyFAI.version
        assert "J. Appl. Cryst. 48" in reduction["reference"].asstr()[()]
        given = reduction["input"]
        assert given["poni"].asstr()[()] == (LIX / f"{name}.poni").read_text()
        assert given["poni_file"].asstr()[()] == str(LIX / f"{name}.poni")
        assert given["unit"].asstr()[()] == "q_A^-1" and given["monitor"].asstr()[()] == "i0"
        assert given["dist"].attrs["units"] == "m"
        mono = sub["instrument/monochromator"]
        np.testing.assert_allclose(mono["wavelength"][()], 0.8189142958822383)
        np.testing.assert_allclose(mono["energy"][()], 12.398419843320026 / 0.8189142958822383)
        assert sub["instrument/name"].asstr()[()] == "LiX (16-ID)"


def test_nxcheck_finds_no_error_in_the_file_nor_its_nxazint1d_views(written):
    errors, report = nxcheck(written)
    assert errors == 0, report
    for port in DETECTORS:
        errors, report = nxcheck(written, "-a", "-p", f"/AgBH_2020Aug16/{port}_azint")
        assert errors == 0, report
        assert "NXazint1d" in report

"""examples/xrf-map end to end with ``beampipe run`` (separate processes, 2 fit replicas): the
maps in the NeXus file equal PyMca's fit run directly on each spectrum of the scan file, placed
at the scan's pixel indices; the missing pixel is NaN and the run warns about it; nxcheck finds
no error."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck
from PyMca5.PyMcaIO import ConfigDict, specfilewrapper
from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory

EXAMPLE = REPO / "examples" / "xrf-map"


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cwd = tmp_path_factory.mktemp("run")
    result = beampipe("run", str(EXAMPLE / "pipeline.yaml"), "--set", "spectra.pace=max", cwd=cwd)
    return result, cwd / "out" / "xrf-map.nxs"


def test_maps_equal_pymca_directly(done: tuple) -> None:
    result, path = done
    assert result.returncode == 0, result.stderr
    assert "1 of 20 pixels not measured" in result.stderr
    config = ConfigDict.ConfigDict()
    config.read(str(EXAMPLE / "data" / "Steel.cfg"))
    config["fit"]["linearfitflag"] = 1
    scan = specfilewrapper.Specfile(str(EXAMPLE / "data" / "scan.mca"))[0]
    table = np.asarray(scan.data())
    with h5py.File(path, "r") as f:
        maps = f["scan_mca/maps"]
        area, sigma, chisq = (maps[k][()] for k in ("area", "area_sigma", "chisq"))
        measured = maps["measured"][()]
        fe = maps["area_Fe_Ka"][()]  # split: true, one map per line, named by it
        assert maps.attrs["signal"] == "area"
        assert list(maps.attrs["axes"]) == ["names", "y", "x"]
        names = list(maps["names"].asstr()[()])  # the element lines, the maps' first axis
        images = {  # one NXdata per element line, its map hard-linked, for viewers
            f[f"scan_mca/{k}/title"].asstr()[()]: f[f"scan_mca/{k}"]
            for k in f["scan_mca"]
            if k.startswith("maps_")
        }
        assert list(images) == names
        for k, name in enumerate(names):
            image = images[name]
            signal = image.attrs["signal"]
            assert image[signal] == maps[signal] and image["x"] == maps["x"]  # the same objects
            np.testing.assert_array_equal(image[signal][()], maps["area"][k])
            assert list(image.attrs["axes"]) == ["y", "x"]
        np.testing.assert_array_equal(maps["x"][()], [0.0, 0.5, 1.0, 1.5, 2.0])
        np.testing.assert_array_equal(maps["y"][()], [0.0, 0.5, 1.0, 1.5])
        assert maps["x"].attrs["units"] == "um" and maps["y"].attrs["units"] == "um"
        assert (maps["x"].attrs["long_name"], maps["y"].attrs["long_name"]) == ("samx", "samy")
    assert area.shape[1:] == (4, 5) and scan.nbmca() == 19
    for j in range(scan.nbmca()):
        fit = ClassMcaTheory.ClassMcaTheory()
        conf = fit.configure(config)
        y = np.asarray(scan.mca(j + 1))
        fit.setData(
            np.arange(y.size, dtype=float), y, xmin=conf["fit"]["xmin"], xmax=conf["fit"]["xmax"]
        )
        fit.estimate()
        ref = fit.startfit(digest=1)[1]
        ix, iy = int(table[0, j]), int(table[1, j])
        np.testing.assert_allclose(
            area[:, iy, ix], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(
            sigma[:, iy, ix], [ref[g]["sigmaarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(chisq[iy, ix], ref["chisq"], rtol=1e-6)
    assert not measured[2, 3] and measured.sum() == 19
    assert names == list(ref["groups"])
    np.testing.assert_array_equal(fe, area[names.index("Fe Ka")])
    assert np.all(np.isnan(area[:, 2, 3])) and np.isnan(chisq[2, 3])


def test_nxcheck_finds_no_error(done: tuple) -> None:
    result, path = done
    assert result.returncode == 0, result.stderr
    errors, text = nxcheck(Path(path))
    assert errors == 0, text


def test_nxprocess_holds_pymca_and_the_cfg(done: tuple) -> None:
    import PyMca5

    result, path = done
    assert result.returncode == 0, result.stderr
    with h5py.File(path, "r") as f:
        process = f["scan_mca/xrf_fit"]
        assert process.attrs["NX_class"] == "NXprocess"
        assert process["program"].asstr()[()] == "PyMca"
        assert process["version"].asstr()[()] == PyMca5.version()
        config = process["config"]  # NXnote: the .cfg file's text, byte for byte
        assert config.attrs["NX_class"] == "NXnote"
        assert config["data"].asstr()[()].encode() == (EXAMPLE / "data" / "Steel.cfg").read_bytes()
        assert config["type"].asstr()[()] == "text/plain; charset=utf-8"
        assert config["file_name"].asstr()[()].endswith("Steel.cfg")
        parameters = process["parameters"]
        assert parameters.attrs["NX_class"] == "NXparameters"
        assert parameters["mode"].asstr()[()] == "linear"
        assert (parameters["xmin"][()], parameters["xmax"][()]) == (200, 1432)
        assert parameters["energy"][()] == 16.0 and parameters["energy"].attrs["units"] == "keV"
        assert not parameters["concentrations"][()]
        # the results: the fits (port fit) and the maps made of them (port maps)
        assert process["fit"] == f["scan_mca/fit"] and process["maps"] == f["scan_mca/maps"]


def test_fitted_spectra_as_nxfluo(done: tuple) -> None:
    # port fit: one row per spectrum (xrf.fit with keep_spectrum), equal to PyMca run directly;
    # the NXfluo view links the spectra and gives their energy from the .cfg's calibration
    result, path = done
    assert result.returncode == 0, result.stderr
    config = ConfigDict.ConfigDict()
    config.read(str(EXAMPLE / "data" / "Steel.cfg"))
    scan = specfilewrapper.Specfile(str(EXAMPLE / "data" / "scan.mca"))[0]
    with h5py.File(path, "r") as f:
        fit = f["scan_mca/fit"]
        ids, spectra, area = fit["id"][()], fit["spectrum"][()], fit["area"][()]
        lines = list(fit["lines"].asstr()[()])
        assert list(fit.attrs["axes"]) == ["id", "lines"]
        fluo = f["scan_mca/fluo"]
        assert fluo["definition"].asstr()[()] == "NXfluo"
        detector = fluo["instrument/fluorescence"]
        np.testing.assert_array_equal(detector["data"][()], spectra)
        energy = detector["energy"][()]
        assert detector["energy"].attrs["units"] == "keV"
        np.testing.assert_array_equal(fluo["data/data"][()], spectra)
        assert fluo["data/energy"] == detector["energy"]
        wavelength = fluo["instrument/monochromator/wavelength"]
        assert wavelength.attrs["units"] == "angstrom"
        assert wavelength[()] == pytest.approx(12.398419843320026 / 16.0, rel=1e-12)
        assert fluo["instrument/source/probe"].asstr()[()] == "x-ray"
        assert fluo["sample/name"].asstr()[()].startswith("steel")
        # the scan's positions and monitor counts of each spectrum, from its metadata
        positions = {k: fit[k][()] for k in ("samx", "samy", "I0")}
        np.testing.assert_array_equal(fluo["monitor/data"][()], positions["I0"])
    assert sorted(ids) == list(range(1, 20))
    table = np.asarray(scan.data())  # columns ix iy samx samy I0, one row per spectrum
    for k, label in enumerate(("samx", "samy", "I0"), start=2):
        np.testing.assert_array_equal(positions[label], table[k, ids - 1])
    channel = np.arange(spectra.shape[1], dtype=float)
    zero, gain = config["detector"]["zero"], config["detector"]["gain"]
    np.testing.assert_allclose(energy, zero + gain * channel, rtol=1e-12)
    config["fit"]["linearfitflag"] = 1
    for row, spectrum_id in enumerate(ids):
        y = np.asarray(scan.mca(int(spectrum_id)))
        np.testing.assert_array_equal(spectra[row], y)
        pymca = ClassMcaTheory.ClassMcaTheory()
        conf = pymca.configure(config)
        pymca.setData(channel, y, xmin=conf["fit"]["xmin"], xmax=conf["fit"]["xmax"])
        pymca.estimate()
        ref = pymca.startfit(digest=1)[1]
        assert lines == list(ref["groups"])
        np.testing.assert_allclose(area[row], [ref[g]["fitarea"] for g in lines], rtol=1e-6)


def test_nxfluo_check(done: tuple) -> None:
    # the NXfluo application definition is met: start_time from the scan's #D line
    result, path = done
    assert result.returncode == 0, result.stderr
    errors, text = nxcheck(Path(path), "-a", "-p", "/scan_mca/fluo")
    assert errors == 0, text
    with h5py.File(path, "r") as f:
        start = f["scan_mca/fluo/start_time"].asstr()[()]
    date = specfilewrapper.Specfile(str(EXAMPLE / "data" / "scan.mca"))[0].date()
    assert datetime.fromisoformat(start) == datetime.strptime(date, "%a %b %d %H:%M:%S %Y")

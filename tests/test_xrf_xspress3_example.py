"""examples/xrf-map/pipeline-xspress3.yaml end to end with ``beampipe run`` (separate
processes; 2 fit replicas): a 4-element Xspress3 file and the motor positions of its points,
replayed from a file of their own, are joined per trigger by ``xrf.deadtime``; the maps in the
NeXus file equal PyMca's fit run directly on the dead-time corrected sum (numpy on the file's
arrays), placed at the pixel nearest each point's positions; nxcheck finds no error. Positions
missing for a point stop the run with an error naming node, stream and id."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck
from test_xrf_fit import direct_fit

EXAMPLE = REPO / "examples" / "xrf-map"
PIPELINE = EXAMPLE / "pipeline-xspress3.yaml"
SPECTRA = EXAMPLE / "data" / "xspress3" / "scan_0002.h5"
POSITIONS = EXAMPLE / "data" / "positions" / "scan_0002.h5"


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cwd = tmp_path_factory.mktemp("run")
    result = beampipe("run", str(PIPELINE), "--set", "spectra.pace=max", cwd=cwd)
    return result, cwd / "out" / "xrf-map-xspress3.nxs"


def test_maps_equal_pymca_on_the_corrected_sum(done: tuple) -> None:
    result, path = done
    assert result.returncode == 0, result.stderr
    with h5py.File(SPECTRA, "r") as f:
        counts = f["entry/instrument/detector/data"][()].astype(np.float64)
        factors = np.stack(
            [f[f"entry/instrument/NDAttributes/CHAN{k}DTFactor"][()] for k in range(1, 5)], 1
        )
    with h5py.File(POSITIONS, "r") as f:
        table = f["entry/scan/positions"][()]
    with h5py.File(path, "r") as f:
        maps = f["scan_0002/maps"]
        area, sigma, chisq = (maps[k][()] for k in ("area", "area_sigma", "chisq"))
        measured = maps["measured"][()]
        np.testing.assert_array_equal(maps["x"][()], [0.0, 0.5, 1.0, 1.5, 2.0])
    assert measured.all() and area.shape[1:] == (4, 5)
    for i in range(counts.shape[0]):
        ref = direct_fit("Steel.spe", "linear", (counts[i] * factors[i][:, None]).sum(0))
        ix, iy = (int(np.floor(v / 0.5 + 0.5)) for v in table[i])  # the nearest pixel centre
        np.testing.assert_allclose(
            area[:, iy, ix], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(
            sigma[:, iy, ix], [ref[g]["sigmaarea"] for g in ref["groups"]], rtol=1e-6
        )
        np.testing.assert_allclose(chisq[iy, ix], ref["chisq"], rtol=1e-6)


def test_nxcheck_finds_no_error(done: tuple) -> None:
    result, path = done
    assert result.returncode == 0, result.stderr
    errors, text = nxcheck(Path(path))
    assert errors == 0, text


def test_positions_missing_for_a_point(tmp_path: Path) -> None:
    (tmp_path / "data" / "xspress3").mkdir(parents=True)
    (tmp_path / "data" / "positions").mkdir()
    shutil.copy(PIPELINE, tmp_path)
    shutil.copy(EXAMPLE / "data" / "Steel.cfg", tmp_path / "data")
    shutil.copy(SPECTRA, tmp_path / "data" / "xspress3")
    with (
        h5py.File(POSITIONS, "r") as f,
        h5py.File(tmp_path / "data" / "positions" / POSITIONS.name, "w") as g,
    ):
        g["entry/scan/positions"] = f["entry/scan/positions"][:-1]  # the last point's is lost
    result = beampipe(
        "run", str(tmp_path / PIPELINE.name), "--set", "spectra.pace=max", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    for part in ("PositionsMissing", "deadtime: stream 'scan_0002', id 20", "port 'positions'"):
        assert part in result.stderr, result.stderr


def test_each_element_fitted(tmp_path: Path) -> None:
    # elements: each: every element's corrected spectrum fitted; maps (elements, lines, ny, nx)
    result = beampipe(
        "run",
        str(PIPELINE),
        "--set",
        "spectra.pace=max",
        "--set",
        "deadtime.elements=each",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "xrf-map-xspress3.nxs"
    with h5py.File(SPECTRA, "r") as f:
        counts = f["entry/instrument/detector/data"][()].astype(np.float64)
        factors = np.stack(
            [f[f"entry/instrument/NDAttributes/CHAN{k}DTFactor"][()] for k in range(1, 5)], 1
        )
    with h5py.File(POSITIONS, "r") as f:
        table = f["entry/scan/positions"][()]
    with h5py.File(path, "r") as f:
        maps = f["scan_0002/maps"]
        area, chisq = maps["area"][()], maps["chisq"][()]
        assert list(maps.attrs["axes"]) == [".", "names", "y", "x"]  # elements, lines, y, x
        assert maps.attrs["names_indices"] == 1 and len(maps["names"]) == area.shape[1]
    assert area.shape[0] == 4 and area.shape[2:] == (4, 5) and chisq.shape == (4, 4, 5)
    for i in (0, 7, 19):
        ix, iy = (int(np.floor(v / 0.5 + 0.5)) for v in table[i])
        for k in range(4):
            ref = direct_fit("Steel.spe", "linear", counts[i, k] * factors[i, k])
            np.testing.assert_allclose(
                area[k, :, iy, ix], [ref[g]["fitarea"] for g in ref["groups"]], rtol=1e-6
            )
            np.testing.assert_allclose(chisq[k, iy, ix], ref["chisq"], rtol=1e-6)
    errors, text = nxcheck(path)
    assert errors == 0, text

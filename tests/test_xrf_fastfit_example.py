"""examples/xrf-map/pipeline-fast.yaml end to end with ``beampipe run`` (separate processes, 2
fit replicas, ``mode: fast``, batches of up to 8 spectra): the maps in the NeXus file equal
PyMca's ``FastXRFLinearFit`` called directly on the scan's spectra, placed at the scan's pixel
indices: with ``refit: false`` the fit of the whole stack of 19 spectra at once; with the
example's ``refit: true`` the fit of each spectrum (PyMca's refit of negative areas is done
spectrum by spectrum, see beampipe.nodes.xrf.stackfit). The missing pixel is NaN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe, nxcheck
from PyMca5.PyMcaIO import specfilewrapper
from PyMca5.PyMcaPhysics.xrf import FastXRFLinearFit

EXAMPLE = REPO / "examples" / "xrf-map"


@pytest.fixture(scope="module", params=[True, False], ids=["refit", "norefit"])
def done(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cwd = tmp_path_factory.mktemp("run")
    sets = ["--set", "spectra.pace=max"]
    if not request.param:
        sets += ["--set", "fit.refit=false"]
    result = beampipe("run", str(EXAMPLE / "pipeline-fast.yaml"), *sets, cwd=cwd)
    return request.param, result, cwd / "out" / "xrf-map-fast.nxs"


def direct(y: np.ndarray, refit: bool) -> Any:
    fit = FastXRFLinearFit.FastXRFLinearFit()
    fit.setFitConfigurationFile(str(EXAMPLE / "data" / "Steel-snip.cfg"))
    return fit.fitMultipleSpectra(y=y, refit=refit)


def test_maps_equal_pymca_fast_fit_directly(done: tuple) -> None:
    refit, result, path = done
    assert result.returncode == 0, result.stderr
    assert "1 of 20 pixels not measured" in result.stderr
    scan = specfilewrapper.Specfile(str(EXAMPLE / "data" / "scan.mca"))[0]
    table = np.asarray(scan.data())
    stack = np.stack([np.asarray(scan.mca(j + 1)) for j in range(scan.nbmca())]).astype(float)
    with h5py.File(path, "r") as f:
        maps = f["scan_mca/maps"]
        area, sigma = maps["area"][()], maps["area_sigma"][()]
        fe = maps["area_Fe_Ka"][()]
        assert "chisq" not in maps and list(maps.attrs["axes"]) == ["names", "y", "x"]
    if refit:
        fits = [direct(y, refit=True) for y in stack]
        want = np.concatenate([r["parameters"] for r in fits], axis=1)
        want_sigma = np.concatenate([r["uncertainties"] for r in fits], axis=1)
        labels = list(fits[0].labels("parameters"))
    else:
        whole = direct(stack, refit=False)
        want, want_sigma = whole["parameters"], whole["uncertainties"]
        labels = list(whole.labels("parameters"))
    first = len(labels) - area.shape[0]  # the background's parameters come first
    assert area.shape == (15, 4, 5) and stack.shape[0] == 19
    for j in range(stack.shape[0]):
        ix, iy = int(table[0, j]), int(table[1, j])
        np.testing.assert_allclose(area[:, iy, ix], want[first:, j], rtol=1e-6)
        np.testing.assert_allclose(sigma[:, iy, ix], want_sigma[first:, j], rtol=1e-6)
    np.testing.assert_array_equal(fe, area[labels[first:].index("Fe Ka")])
    assert np.all(np.isnan(area[:, 2, 3]))
    assert (np.nan_to_num(area) >= 0).all() if refit else (area < 0).any()


def test_nxcheck_finds_no_error(done: tuple) -> None:
    _, result, path = done
    assert result.returncode == 0, result.stderr
    errors, text = nxcheck(Path(path))
    assert errors == 0, text

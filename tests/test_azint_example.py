"""The powder integration example end to end (issue 18): ``examples/powder-xpd/integrate.yaml``
run as its README says, on the Ni frame of NSLS-II XPD; its I(q) equals pyFAI's ``integrate1d``
called directly, and its peaks sit where the beamline's own pattern (``Ni_chi_file.chi``, made
by pdfstream with the pyFAI of 2020) has them.

Tolerances found and why: see examples/powder-xpd/README.md. The peak positions of the 14 fcc Ni
reflections below 11.3 1/A, refined by a parabola through each highest bin and its neighbours,
agree within 0.0024 1/A (an eighth of a bin): checked at 0.005. The intensities differ by a scale
that varies with q (other software, other binning); the profiles correlate at 0.990: checked at
0.98."""

from __future__ import annotations

import fabio
import h5py
import numpy as np
import pytest
from conftest import REPO, beampipe
from pyFAI.integrator.azimuthal import AzimuthalIntegrator

from beampipe.nodes.azint.geometry import load_pyfai

EXAMPLE = REPO / "examples" / "powder-xpd"
DATA = EXAMPLE / "data"
NI_A = 3.524
"""The lattice constant of fcc Ni (A), for the expected reflections."""
HKL = [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2), (4, 0, 0), (3, 3, 1)]
HKL += [(4, 2, 0), (4, 2, 2), (5, 1, 1), (4, 4, 0), (5, 3, 1), (6, 0, 0), (6, 2, 0)]

load_pyfai()


@pytest.fixture(scope="module")
def pattern(tmp_path_factory) -> dict[str, np.ndarray]:
    """The example run as its README says: the pattern it wrote."""
    cwd = tmp_path_factory.mktemp("xpd-azint")
    done = beampipe("run", str(EXAMPLE / "integrate.yaml"), cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert "finished: 1/1 streams, 1 messages" in done.stderr, done.stderr
    assert "warning" not in done.stderr, done.stderr
    with h5py.File(cwd / "out" / "powder-xpd-azint.nxs") as f:
        group = f["Ni_img_file_tiff/pattern"]
        return {k: group[k][()] for k in ("intensity", "sigma", "q", "id")}


def peak(q: np.ndarray, y: np.ndarray, near: float) -> float:
    """The position of the highest bin within 4 bins of ``near``, refined by the parabola
    through it and its two neighbours."""
    j = int(np.searchsorted(q, near))
    i = j - 4 + int(np.argmax(y[j - 4 : j + 5]))
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    return float(q[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (q[i + 1] - q[i]))


def test_the_example_pattern_equals_pyfai_integrate1d_called_directly(pattern):
    with fabio.open(str(DATA / "Ni_img_file.tiff.gz")) as img:
        frame = np.asarray(img.data)
    with fabio.open(str(DATA / "mask_file.tiff.gz")) as img:
        mask = np.asarray(img.data)
    ai = AzimuthalIntegrator()
    ai.load(str(DATA / "Ni_poni_file.poni"))
    want = ai.integrate1d(
        frame, 1480, unit="q_A^-1", mask=mask, polarization_factor=0.99, error_model="poisson"
    )
    assert list(pattern["id"]) == [1]
    np.testing.assert_allclose(pattern["intensity"][0], want.intensity, rtol=1e-6)
    np.testing.assert_allclose(pattern["sigma"][0], want.sigma, rtol=1e-6)
    np.testing.assert_allclose(pattern["q"][()], want.radial, rtol=1e-6)


def test_the_example_peaks_match_the_beamline_pattern_and_fcc_ni(pattern):
    chi = np.loadtxt(DATA / "Ni_chi_file.chi", comments="#")
    assert chi.shape == (1480, 2)
    q, intensity = pattern["q"][()], pattern["intensity"][0]
    expected = [2 * np.pi * np.sqrt(np.dot(hkl, hkl)) / NI_A for hkl in HKL]
    ours = np.array([peak(q, intensity, t) for t in expected])
    theirs = np.array([peak(chi[:, 0], chi[:, 1], t) for t in expected])
    np.testing.assert_allclose(ours, theirs, atol=0.005)
    np.testing.assert_allclose(ours, expected, atol=0.005)
    band = (chi[:, 0] > 1) & (chi[:, 0] < 25)
    profile = np.interp(chi[band, 0], q, intensity)
    assert np.corrcoef(profile, chi[band, 1])[0, 1] >= 0.98

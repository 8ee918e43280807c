"""``xas.deglitch`` on real scans: a glitch inserted into a real scan is found and removed and
nothing else; the result equals xraylarch's ``remove_spikes_medfilt1d`` called directly."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

import beampipe
from beampipe.nodes.xas.deglitch import Deglitch
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"
SCAN = DATA / "APS20BM_2001.dat"
GLITCH = 200  # index of the point made a glitch


def mu_items(glitch: float = 1.0) -> list:
    items = run(XdiReplay, params={"paths": [str(SCAN)], "energy": "mono_energy"}, name="s").items()
    params = {"energy": "energy", "i0": "i0", "it": "i1", "iref": None, "if": None}
    out = run(Transmission, items, params=params, name="mu").items()
    msgs = [i for i in out if isinstance(i, beampipe.Message)]
    msgs[GLITCH].data["mu"] = msgs[GLITCH].data["mu"] * glitch
    return out


def larch_mu() -> tuple[np.ndarray, np.ndarray]:
    from larch.io import read_ascii

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = read_ascii(str(SCAN))
    return g.mono_energy, np.log(g.i0 / g.i1)


def test_the_real_scan_has_no_glitch():
    (out,) = run(Deglitch, mu_items(), name="dg").messages()
    assert out.metadata["n_glitches"] == 0
    _, mu = larch_mu()
    np.testing.assert_array_equal(out.data["mu"], mu)


def test_an_inserted_glitch_is_replaced_as_larch_does_and_listed(caplog):
    from larch.math.deglitch import remove_spikes_medfilt1d

    with caplog.at_level(logging.WARNING):
        (out,) = run(Deglitch, mu_items(1.3), name="dg").messages()
    energy, mu = larch_mu()
    mu[GLITCH] *= 1.3
    expected = remove_spikes_medfilt1d(mu, backend="silx", kernel_size=3, threshold=0.1)
    np.testing.assert_array_equal(out.data["mu"], expected)
    np.testing.assert_array_equal(out.data["glitch_index"], [GLITCH])
    np.testing.assert_array_equal(out.data["glitch_energy"], [energy[GLITCH]])
    np.testing.assert_array_equal(out.data["glitch_mu"], [mu[GLITCH]])
    assert out.metadata["n_glitches"] == 1
    untouched = np.arange(mu.size) != GLITCH
    np.testing.assert_array_equal(out.data["mu"][untouched], mu[untouched])  # nothing else
    assert f"1 glitch(es) replaced at {energy[GLITCH]:g} eV" in caplog.text


def test_remove_mode_leaves_the_glitch_out():
    (out,) = run(Deglitch, mu_items(1.3), params={"mode": "remove"}, name="dg").messages()
    energy, mu = larch_mu()
    keep = np.arange(mu.size) != GLITCH
    np.testing.assert_array_equal(out.data["energy"], energy[keep])
    np.testing.assert_array_equal(out.data["mu"], mu[keep])


def test_kernel_size_must_be_odd():
    with pytest.raises(ValueError, match="kernel_size must be odd, not 4"):
        Deglitch.Params(kernel_size=4)

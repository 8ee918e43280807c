"""``xas.transmission`` and ``xas.normalize`` on the real P65 scans, driven by the runtime's rules
(:mod:`beampipe.testing`)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

import beampipe
from beampipe.nodes.columns import MissingColumn
from beampipe.nodes.xas.normalize import NormalizationError, Normalize
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import Harness, run

DATA = Path(__file__).resolve().parents[1] / "examples" / "xas-p65" / "data"
SCAN0 = DATA / "20K_GOE_Fe_K_240.00000.xdi"
SCAN1 = DATA / "20K_GOE_Fe_K_240.00001.xdi"


def scan(*paths: Path) -> list:
    """What the replay of ``paths`` sends."""
    return run(XdiReplay, params={"paths": [str(p) for p in paths]}, name="scan").items()


def mu_items(*paths: Path) -> list:
    """What the transmission worker sends for the replay of ``paths``."""
    return run(Transmission, scan(*paths), name="mu").items()


def larch_reference(path: Path, **kwargs):
    from larch import Group
    from larch.xafs import pre_edge

    d = np.loadtxt(path)
    energy, mu = d[:, 0], np.log(d[:, 10] / d[:, 11])
    group = Group()
    pre_edge(energy, mu, group=group, **kwargs)
    return energy, mu, group


# -- transmission ---------------------------------------------------------------------------------


def test_transmission_equals_numpy_on_real_rows():
    d = np.loadtxt(SCAN0)
    msgs = [i for i in scan(SCAN0) if isinstance(i, beampipe.Message)]
    out = run(Transmission, msgs, name="mu").messages()
    assert [o.id for o in out] == [m.id for m in msgs]
    assert {o.stream for o in out} == {"20K_GOE_Fe_K_240.00000"}
    got = {k: np.array([o.data[k] for o in out]) for k in out[0].data}
    assert set(got) == {"energy", "mu", "mu_ref", "fluorescence", "i0", "it", "iref", "if"}
    np.testing.assert_array_equal(got["energy"], d[:, 0])
    np.testing.assert_array_equal(got["mu"], np.log(d[:, 10] / d[:, 11]))
    np.testing.assert_array_equal(got["mu_ref"], np.log(d[:, 11] / d[:, 12]))
    np.testing.assert_array_equal(got["fluorescence"], d[:, 13] / d[:, 10])
    for k, col in (("i0", 10), ("it", 11), ("iref", 12), ("if", 13)):
        np.testing.assert_array_equal(got[k], d[:, col])
    assert all(v.shape == () and v.dtype == np.float64 for v in out[0].data.values())
    assert out[0].metadata == {"signal": "mu", "axes": ["energy"], "units": {"energy": "eV"}}


def test_transmission_params_and_missing_column():
    p = Transmission.Params.model_validate({"if": "fluo", "i0": "I0"})
    assert (p.if_, p.i0, p.it) == ("fluo", "I0", "vfc02")
    assert Transmission.Params(if_="x").if_ == "x"
    with pytest.raises(ValueError):
        Transmission.Params.model_validate({"i_0": "x"})
    tx = Transmission(Transmission.Params(it="It"), name="mu")
    msg = beampipe.Message(data={"enc_energy": 7000.0, "vfc01": 1.0, "vfc03": 1.0, "vfc04": 1.0})
    with pytest.raises(KeyError) as err:
        tx.process(msg)
    assert isinstance(err.value, MissingColumn)
    assert str(err.value) == (
        "mu: no column 'It' in the message data; available: enc_energy, vfc01, vfc03, vfc04 "
        "(set the node's params to pick other columns)"
    )


def test_transmission_bad_readings_give_nan_not_errors():
    tx = Transmission(Transmission.Params(), name="mu")
    data = {"enc_energy": 7000.0, "vfc01": 0.0, "vfc02": 1.0, "vfc03": -1.0, "vfc04": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tx.process(beampipe.Message(data=data))
    assert out.data["mu"] == -np.inf
    assert np.isnan(out.data["mu_ref"])
    assert out.data["fluorescence"] == np.inf


# -- normalize ------------------------------------------------------------------------------------

PARAMS = {"pre1": -150.0, "pre2": -30.0, "norm1": 50.0, "norm2": 300.0, "nnorm": 2}


@pytest.mark.parametrize("larch_params", [{}, PARAMS], ids=["larch-defaults", "ranges"])
def test_normalize_final_equals_larch_on_whole_scan(larch_params):
    node = Normalize(Normalize.Params(every=500, **larch_params), name="normalize")
    out = run(node, mu_items(SCAN0)).messages()
    energy, mu, ref = larch_reference(SCAN0, **larch_params)
    final = out[-1]
    assert final.metadata["final"] is True
    assert (final.stream, final.id) == ("20K_GOE_Fe_K_240.00000", len(energy))
    assert final.metadata["n_points"] == len(energy)
    assert final.metadata["e0"] == pytest.approx(ref.e0, rel=1e-9)
    assert final.metadata["edge_step"] == pytest.approx(ref.edge_step, rel=1e-9)
    np.testing.assert_array_equal(final.data["energy"], energy)
    np.testing.assert_array_equal(final.data["mu"], mu)
    for key in ("norm", "pre_edge", "post_edge", "flat"):
        np.testing.assert_allclose(final.data[key], getattr(ref, key), rtol=1e-9)
        assert final.data[key].dtype == np.float64 and final.data[key].shape == energy.shape
    assert final.metadata["units"] == {"energy": "eV", "e0": "eV"}
    assert (final.metadata["signal"], final.metadata["axes"]) == ("norm", ["energy"])
    assert 7100 < final.metadata["e0"] < 7140  # Fe K edge


def test_normalize_emits_every_n_points():
    node = Normalize(Normalize.Params(every=400), name="normalize")
    out = run(node, mu_items(SCAN0)).messages()
    n = 1942
    assert [m.metadata["final"] for m in out] == [False] * (len(out) - 1) + [True]
    partial = out[:-1]
    # emissions at 400, 800, ... points; the first (before the edge) may be skipped
    assert [m.id for m in partial] == [k for k in range(400, n + 1, 400)][-len(partial) :]
    assert len(partial) + node.skipped == n // 400
    assert len(partial) >= 3
    for m in partial:
        assert m.stream == "20K_GOE_Fe_K_240.00000"
        assert m.metadata["n_points"] == m.id == m.data["energy"].size == m.data["norm"].size


def test_normalize_skips_failing_partial_spectra():
    node = Normalize(Normalize.Params(every=5), name="normalize")
    out = run(node, mu_items(SCAN0)).messages()
    assert node.skipped > 0  # the first few 5-point spectra cannot be normalised
    assert len(out) - 1 + node.skipped == 1942 // 5
    assert out[-1].metadata["final"] is True


def test_normalize_interleaved_streams_do_not_mix():
    a, b = mu_items(SCAN0), mu_items(SCAN1)
    separate = {}
    for items in (a, b):
        out = run(Normalize, items, params={"every": 300}, name="n").messages()
        separate[out[-1].stream] = out
    # interleave: both streams open, their messages alternating, then both close
    msgs_a, msgs_b = a[1:-1], b[1:-1]
    mixed = [a[0], b[0]]
    for k in range(max(len(msgs_a), len(msgs_b))):
        mixed += msgs_a[k : k + 1] + msgs_b[k : k + 1]
    mixed += [b[-1], a[-1]]
    out = run(Normalize, mixed, params={"every": 300}, name="n").messages()
    for stream, expected in separate.items():
        got = [m for m in out if m.stream == stream]
        assert [(m.id, m.metadata) for m in got] == [(m.id, m.metadata) for m in expected]
        np.testing.assert_array_equal(got[-1].data["norm"], expected[-1].data["norm"])


def test_normalize_unsorted_and_non_finite_points():
    """Out-of-order energies are sorted as larch does; nan points are left out and counted."""
    path = DATA / "p65_testfile.xdi"  # its first two energies are in decreasing order
    items = mu_items(path)
    bad = items[5]
    bad.data["mu"] = np.array(np.nan)
    out = run(Normalize, items, params={"every": 10_000}, name="n").messages()
    assert len(out) == 1
    final = out[0]
    assert final.metadata["n_dropped"] == 1
    d = np.delete(np.loadtxt(path), 4, axis=0)  # message 5 = row 4
    energy, mu = d[:, 0], np.log(d[:, 10] / d[:, 11])
    order = np.argsort(energy)
    from larch import Group
    from larch.xafs import pre_edge

    ref = Group()
    pre_edge(energy, mu, group=ref)
    np.testing.assert_array_equal(final.data["energy"], energy[order])
    np.testing.assert_allclose(final.data["norm"], ref.norm, rtol=1e-9)
    assert np.all(np.diff(final.data["energy"]) > 0)


def test_normalize_final_failure_raises_and_empty_stream_emits_nothing():
    node = Normalize(Normalize.Params(), name="normalize")
    node.on_stream_start("s", {})
    node.process(beampipe.Message(data={"energy": 7000.0, "mu": 1.0}, stream="s", id=1))
    with pytest.raises(NormalizationError, match="stream 's' \\(1 points\\)"):
        node.on_stream_end("s")
    node.on_stream_start("empty", {})
    assert node.on_stream_end("empty") is None
    assert node._spectra == {}


def test_normalize_params():
    p = Normalize.Params(pre_edge=(-150, -30), post_edge=(50, 300), make_flat=False)
    assert p.larch_kwargs() == {
        "pre1": -150.0,
        "pre2": -30.0,
        "norm1": 50.0,
        "norm2": 300.0,
        "make_flat": False,
    }
    assert Normalize.Params().larch_kwargs() == {}
    with pytest.raises(ValueError, match="either pre_edge or pre1/pre2"):
        Normalize.Params(pre_edge=(-150, -30), pre1=-100)
    with pytest.raises(ValueError):
        Normalize.Params(every=0)


def test_normalize_missing_column_and_chunks(caplog):
    node = Normalize(Normalize.Params(every=3), name="normalize")
    with pytest.raises(MissingColumn, match=r"no column 'mu'.*available: energy, mux"):
        node.process(beampipe.Message(data={"energy": 1.0, "mux": 1.0}, stream="s", id=1))
    # one message may carry several points; buffers grow past their initial size
    d = np.loadtxt(SCAN0)
    energy, mu = d[:, 0], np.log(d[:, 10] / d[:, 11])
    harness = Harness(Normalize, {"every": 1000}, name="normalize")
    chunks = [
        beampipe.Message(
            data={"energy": energy[start : start + 300], "mu": mu[start : start + 300]},
            stream="c",
            id=k,
        )
        for k, start in enumerate(range(0, len(energy), 300), start=1)
    ]
    out = harness.feed([beampipe.StreamStart("c", {}), *chunks]).messages()
    with caplog.at_level(logging.WARNING):
        out += harness.feed([beampipe.EndOfStream("c", len(chunks))]).messages()
    assert [m.metadata["n_points"] for m in out] == [1200, 1942]
    assert [m.id for m in out] == [4, 7]
    assert not caplog.records  # the final pre_edge on a whole scan does not warn
    np.testing.assert_array_equal(out[-1].data["mu"], mu)

"""``xas.exafs`` on real scans of other beamlines: chi(k) and chi(R) equal xraylarch's
``pre_edge`` + ``autobk`` + ``xftf`` called directly on the same arrays; partial scans give no
chi and no error; a real ``beampipe run`` writes them."""

from __future__ import annotations

import logging
import textwrap
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import beampipe

import beampipe as bp
from beampipe.nodes.xas.exafs import Exafs
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"

# file -> (energy column, i0, it) as larch names them
SCANS = {
    "cu_metal_rt.xdi": ("energy", "i0", "itrans"),
    "APS20BM_2001.dat": ("mono_energy", "i0", "i1"),
    "SSRL1_2006.dat": ("achieved_energy", "i0", "i1"),
}


def mu_messages(name: str) -> list[bp.Message]:
    energy, i0, it = SCANS[name]
    items = run(
        XdiReplay, params={"paths": [str(DATA / name)], "energy": energy}, name="scan"
    ).items()
    params = {"energy": "energy", "i0": i0, "it": it, "iref": None, "if": None}
    return run(Transmission, items, params=params, name="mu").items()


def larch_exafs(energy: np.ndarray, mu: np.ndarray, **p):
    from larch import Group
    from larch.xafs import autobk, pre_edge, xftf

    group = Group()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre_edge(energy, mu, group=group)
        autobk(
            energy,
            mu,
            group=group,
            rbkg=p.get("rbkg", 1.0),
            kweight=p.get("kweight", 1.0),
            kmin=0.0,
        )
        xftf(
            group.k,
            group.chi,
            group=group,
            kmin=2.0,
            kmax=min(p.get("ft_kmax", 12.0), group.k[-1]),
            kweight=2.0,
            dk=1.0,
            window="kaiser",
            rmax_out=10.0,
        )
    return group


@pytest.mark.parametrize("name", sorted(SCANS))
def test_final_chi_equals_larch_on_the_same_arrays(name):
    from larch.io import read_ascii, read_xdi

    params = {"every": 100000, "rbkg": 1.1, "kweight": 2.0}
    out = run(Exafs, mu_messages(name), params=params, name="exafs").messages()
    assert len(out) == 1 and out[0].metadata["final"] is True
    got = out[0].data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = read_xdi(str(DATA / name)) if name.endswith(".xdi") else read_ascii(str(DATA / name))
    energy, i0, it = (getattr(g, c) for c in SCANS[name])
    mu = np.log(i0 / it)
    order = np.argsort(energy) if np.any(np.diff(energy) < 0) else slice(None)
    energy, mu = energy[order], mu[order]
    ref = larch_exafs(energy, mu, rbkg=1.1, kweight=2.0)
    np.testing.assert_array_equal(got["energy"], energy)
    np.testing.assert_array_equal(got["mu"], mu)
    for key in ("bkg", "k", "chi", "r", "chir_mag", "chir_re", "chir_im"):
        np.testing.assert_allclose(got[key], getattr(ref, key), rtol=1e-9, atol=0, err_msg=key)
    assert out[0].metadata["e0"] == float(ref.e0)
    assert out[0].metadata["edge_step"] == float(ref.edge_step)
    # a real first shell: |chi(R)| peaks between 1 and 3 Angstrom
    assert 1.0 < got["r"][np.argmax(got["chir_mag"])] < 3.0


def test_partial_scan_gives_no_chi_then_chi_while_it_runs(caplog):
    msgs = mu_messages("cu_metal_rt.xdi")
    points = [m for m in msgs if isinstance(m, bp.Message)]
    node = Exafs(Exafs.Params(every=40), name="exafs")
    outs = [node.process(m) for m in points]
    emitted = [o for o in outs if o is not None]
    # the edge (Cu K, 8979 eV) is crossed near point 100 of 408: the first chi comes later
    first = next(i for i, o in enumerate(outs) if o is not None)
    assert points[first].data["energy"] > 8979 + 34  # k > 3 1/A beyond kmin
    assert node.not_exafs >= 2 and node.skipped == 0
    assert len(emitted) >= 5 and all(not o.metadata["final"] for o in emitted)
    final = node.on_stream_end(points[0].stream)
    assert final is not None and final.metadata["final"] and final.id == points[-1].id
    # a XANES-only scan: no chi at the end either, a warning and no error
    node = Exafs(Exafs.Params(every=1000), name="exafs")
    for m in points[:110]:  # up to 9008 eV: past the edge, k < 3 1/A
        node.process(m)
    with caplog.at_level(logging.WARNING):
        assert node.on_stream_end(points[0].stream) is None
    assert "has no EXAFS region: no chi(k)" in caplog.text


PIPELINE = """\
name: exafs
nodes:
  scan:
    use: xdi_replay
    params: {{paths: [{path}], energy: energy}}
  mu:
    use: xas.transmission
    params: {{energy: energy, i0: i0, it: itrans, iref: null, if: null}}
  exafs:
    use: xas.exafs
    params: {{every: 100, rbkg: 1.1, kweight: 2}}
  nexus:
    use: nexus_writer
    params: {{path: out/exafs.nxs, groups: {{chi: {{mode: replace}}}}}}
connections:
  - scan.out -> mu.in
  - mu.out -> exafs.in
  - exafs.out -> nexus.chi
"""


def test_beampipe_run_writes_the_final_chi(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(PIPELINE.format(path=DATA / "cu_metal_rt.xdi")))
    result = beampipe("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = run(
        Exafs,
        mu_messages("cu_metal_rt.xdi"),
        params={"every": 100, "rbkg": 1.1, "kweight": 2.0},
        name="exafs",
    ).messages()[-1]
    with h5py.File(tmp_path / "out" / "exafs.nxs", "r") as f:  # chi: an external link
        chi = f["cu_metal_rt"]["chi"]
        np.testing.assert_array_equal(chi["chir_mag"][()], out.data["chir_mag"])
        np.testing.assert_array_equal(chi["chi"][()], out.data["chi"])
        assert list(chi.attrs["axes"]) == ["r"] and chi.attrs["signal"] == "chir_mag"


def test_viewer_plots_chi_against_k_and_chir_against_r():
    from beampipe.viewer.previews import PortPreview

    out = run(Exafs, mu_messages("cu_metal_rt.xdi"), params={"every": 100}, name="exafs").items()
    preview = PortPreview()
    for item in out:
        preview.add(item)
    assert preview.default_key() == "chir_mag"
    for key, axis in (("chir_mag", "r"), ("chi", "k"), ("bkg", "energy")):
        plot = preview.payload(key)
        assert plot["kind"] == "curves" and plot["axis"] == axis, key
        final = out[-2]
        np.testing.assert_array_equal(plot["traces"][0]["x"], final.data[axis])
        np.testing.assert_array_equal(plot["traces"][0]["y"], final.data[key])

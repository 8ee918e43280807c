"""``xdi_writer``: XDI files of normalised real spectra, read back by xraylarch's ``read_xdi``
(libxdi, the XDI reference reader) with the same arrays."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import beampipe

from beampipe.nodes.xas.normalize import Normalize
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.nodes.xas.xdiwriter import XdiWriter
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"

SCANS = {  # file -> energy, i0, it
    "cu_metal_rt.xdi": ("energy", "i0", "itrans"),
    "APS13ID_2008.dat": ("energy", "i0", "i1"),
    "SSRL1_2006.dat": ("achieved_energy", "i0", "i1"),
}


def read_xdi(path: Path):
    from larch.io import read_xdi as larch_read_xdi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return larch_read_xdi(str(path))


@pytest.mark.parametrize("name", sorted(SCANS))
def test_written_file_reads_back_in_larch_with_the_same_arrays(tmp_path, name):
    energy, i0, it = SCANS[name]
    items = run(
        XdiReplay, params={"paths": [str(DATA / name)], "energy": energy}, name="scan"
    ).items()
    mu = run(
        Transmission,
        items,
        params={"energy": "energy", "i0": i0, "it": it, "iref": None, "if": None},
        name="mu",
    ).items()
    normalized = run(Normalize, mu, params={"every": 100}, name="norm").items()
    final = [m for m in normalized if getattr(m, "metadata", {}).get("final")][-1]
    writer = XdiWriter(
        XdiWriter.Params(directory=str(tmp_path), element="Cu", edge="K"), name="xdi"
    )
    run(writer, normalized)
    path = writer.written[final.stream]
    assert path == tmp_path / f"{final.stream}.xdi"
    g = read_xdi(path)
    assert list(g.array_labels) == ["energy", "mu", "norm"]
    assert list(g.array_units) == ["eV", "", ""]
    for key in ("energy", "mu", "norm"):
        np.testing.assert_array_equal(getattr(g, key), final.data[key], err_msg=key)
    assert g.attrs["scan"]["edge_energy"] == f"{final.metadata['e0']!r} eV"
    assert g.attrs["element"] == {"symbol": "Cu", "edge": "K"}


def test_only_final_spectra_and_bad_columns(tmp_path):
    writer = XdiWriter(XdiWriter.Params(directory=str(tmp_path)), name="xdi")
    import beampipe as bp

    writer.process(
        bp.Message(
            data={"energy": np.arange(3.0), "mu": np.ones(3), "norm": np.ones(3)}, stream="s", id=1
        )
    )
    assert writer.written == {}
    msg = bp.Message(
        data={"energy": np.arange(3.0), "mu": np.ones(2), "norm": np.ones(3)},
        metadata={"final": True},
        stream="s",
        id=2,
    )
    with pytest.raises(ValueError, match="xdi: stream 's', id 2: columns must be 1-D of one"):
        writer.process(msg)


PIPELINE = """\
name: export
nodes:
  scan: {{use: xdi_replay, params: {{paths: [{path}], energy: energy}}}}
  mu: {{use: xas.transmission, params: {{energy: energy, i0: i0, it: itrans, iref: null,
        if: null}}}}
  normalize: {{use: xas.normalize, params: {{every: 100}}}}
  xdi: {{use: xdi_writer, params: {{directory: out/xdi, element: Cu, edge: K}}}}
connections:
  - scan.out -> mu.in
  - mu.out -> normalize.in
  - normalize.out -> xdi.in
"""


def test_beampipe_run_exports_xdi_that_larch_reads(tmp_path):
    from larch import Group
    from larch.xafs import pre_edge

    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(PIPELINE.format(path=DATA / "cu_metal_rt.xdi")))
    result = beampipe("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    g = read_xdi(tmp_path / "out" / "xdi" / "cu_metal_rt.xdi")
    src = read_xdi(DATA / "cu_metal_rt.xdi")
    ref = Group()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre_edge(src.energy, np.log(src.i0 / src.itrans), group=ref)
    np.testing.assert_array_equal(g.energy, src.energy)
    np.testing.assert_array_equal(g.norm, ref.norm)

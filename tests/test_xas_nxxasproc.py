"""The NeXus writer's NXxasproc view of ``xas.normalize``'s spectrum, on a real XDI scan (APS
13-ID, whose header names the sample): nxcheck finds 0 errors, and the linked data are the
normalised spectrum."""

from __future__ import annotations

import textwrap
from pathlib import Path

import h5py
import numpy as np
from conftest import beampipe, nxcheck

DATA = Path(__file__).resolve().parent / "data" / "xas"

PIPELINE = """\
name: proc
nodes:
  scan: {{use: xdi_replay, params: {{paths: [{path}], energy: energy}}}}
  mu: {{use: xas.transmission, params: {{energy: energy, i0: i0, it: itrans, iref: null,
        if: null}}}}
  normalize: {{use: xas.normalize, params: {{every: 100, pre_edge: [-150, -30],
               post_edge: [50, 300]}}}}
  nexus: {{use: nexus_writer, params: {{path: out/proc.nxs,
          groups: {{normalized: {{mode: replace}}}}}}}}
connections:
  - scan.out -> mu.in
  - mu.out -> normalize.in
  - normalize.out -> nexus.normalized
"""


def test_nxxasproc_passes_nxcheck_with_the_normalised_spectrum(tmp_path):
    from larch import __version__ as larch_version

    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(PIPELINE.format(path=DATA / "cu_metal_rt.xdi")))
    result = beampipe("run", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    nxs = tmp_path / "out" / "proc.nxs"
    errors, text = nxcheck(nxs, "-a", "-p", "/cu_metal_rt/xasproc")
    assert errors == 0, text
    assert nxcheck(nxs)[0] == 0
    with h5py.File(nxs, "r") as f:
        sub = f["cu_metal_rt/xasproc"]
        assert sub["definition"].asstr()[()] == "NXxasproc"
        reduction = sub["XAS_data_reduction"]
        assert reduction["version"].asstr()[()] == larch_version
        assert "pre_edge" in reduction["program"].asstr()[()]
        params = reduction["parameters"]
        assert params["raw_file"].asstr()[()] == str(DATA / "cu_metal_rt.xdi")
        assert (params["pre1"][()], params["norm2"][()]) == (-150, 300)
        normalized = f["cu_metal_rt/normalized"]
        np.testing.assert_array_equal(sub["data/data"][()], normalized["norm"][()])
        np.testing.assert_array_equal(sub["data/energy"][()], normalized["energy"][()])
        assert sub["sample/name"].asstr()[()]

"""``xas.normalize`` refuses degenerate results of real scans with an error naming the stream and
the likely cause; in a pipeline the node's ``on_error`` policy applies to it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import beampipe

from beampipe.nodes.xas.normalize import NormalizationError, Normalize, degenerate
from beampipe.nodes.xas.transmission import Transmission
from beampipe.nodes.xas.xdi import XdiReplay
from beampipe.testing import run

DATA = Path(__file__).resolve().parent / "data" / "xas"


def final_error(
    name: str, columns: dict, source: dict | None = None, keep=None, norm: dict | None = None
) -> str:
    items = run(XdiReplay, params={"paths": [str(DATA / name)], **(source or {})}, name="s").items()
    params = {"iref": None, "if": None, **columns}
    mu = run(Transmission, items, params=params, name="mu").items()
    if keep is not None:
        mu = [m for m in mu if not hasattr(m, "data") or keep(float(m.data["energy"]))]
    with pytest.raises(NormalizationError) as err:
        run(Normalize, mu, params={"every": 100000, **(norm or {})}, name="norm").items()
    return str(err.value)


def test_kev_energies_name_the_cause():
    text = final_error("APS12BM_2019.dat", {"energy": "energy", "i0": "i0", "it": "i1"})
    assert text == (
        "norm: stream 'APS12BM_2019.dat' (492 points): degenerate normalisation: energies "
        "6.339 to 6.98474 look like keV, not eV (set the source's energy_units: keV or auto)"
    )


def test_a_scan_that_stops_at_the_edge_has_no_post_edge_window():
    text = final_error(
        "SSRL1_2006.dat",
        {"energy": "achieved_energy", "i0": "i0", "it": "i1"},
        keep=lambda e: e < 25525,
        norm={"post_edge": [50, 300]},
    )
    assert text.startswith("norm: stream 'SSRL1_2006.dat' (")
    assert "degenerate normalisation: " in text
    assert "0 point(s) in the post-edge window e0+50 to e0+300 eV" in text
    assert "the scan does not cover it" in text


def test_edge_step_and_nan_causes():
    from larch import Group

    energy = np.linspace(7000.0, 7500.0, 101)
    details = Group(pre1=-100.0, pre2=-30.0, norm1=50.0, norm2=300.0)
    group = Group(e0=7112.0, edge_step=-0.2, pre_edge_details=details, norm=np.zeros(101))
    assert degenerate(energy, group) == (
        "edge step -0.2 <= 0: no absorption edge (or I0 and It swapped)"
    )
    group.edge_step, group.norm[5] = 1.0, np.nan
    assert degenerate(energy, group) == "NaN in the normalised spectrum"
    group.e0 = np.nan
    assert degenerate(energy, group) == "non-finite result: e0=nan, edge_step=1.0"


PIPELINE = """\
name: degenerate
nodes:
  scan: {{use: xdi_replay, params: {{paths: [{paths}]}}}}
  mu: {{use: xas.transmission, params: {{energy: {energy}, i0: i0, it: i1, iref: null,
        if: null}}}}
  normalize: {{use: xas.normalize, params: {{every: 1000}}, on_error: {policy}}}
  nexus: {{use: nexus_writer, params: {{path: out/d.nxs, groups: {{n: {{mode: replace}}}}}}}}
connections:
  - scan.out -> mu.in
  - mu.out -> normalize.in
  - normalize.out -> nexus.n
"""


@pytest.mark.parametrize("policy", ["fail_fast", "skip"])
def test_on_error_applies_to_the_degenerate_final_spectrum(tmp_path, policy):
    """The keV file replayed without ``energy_units``: its raw energy column reaches
    xas.normalize."""
    path = tmp_path / "pipeline.yaml"
    paths = f"{DATA / 'APS12BM_2019.dat'}, {DATA / 'APS13ID_2008.dat'}"
    path.write_text(textwrap.dedent(PIPELINE.format(paths=paths, energy="energy", policy=policy)))
    result = beampipe("run", str(path), cwd=tmp_path)
    cause = "energies 6.339 to 6.98474 look like keV"
    if policy == "fail_fast":
        assert result.returncode == 1
        assert "normalize" in result.stderr and "APS12BM_2019.dat" in result.stderr
        assert cause in result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr
    records = [
        json.loads(line)
        for line in (tmp_path / "degenerate.dead-letters.jsonl").read_text().splitlines()
    ]
    assert [(r["node"], r["stream"], r["id"]) for r in records] == [
        ("normalize", "APS12BM_2019.dat", 492)
    ]
    assert cause in records[0]["error"]

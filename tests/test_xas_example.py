"""The README's example end to end: five real P65 scans through separate processes into NeXus.

Every value the pipeline wrote is compared with the same computation done directly: numpy for
mu, xraylarch's ``pre_edge`` for the normalisation.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import EXAMPLE, beampipe, nxcheck
from larch import Group
from larch.xafs import pre_edge
from nexusformat.nexus import nxload

from beampipe.config import load_pipeline

SCANS = sorted((EXAMPLE / "data").glob("20K_GOE_Fe_K_240.*.xdi"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the example at full speed from an unrelated folder; return (result, nexus file)."""
    cwd = tmp_path_factory.mktemp("run")
    result = beampipe(
        "run",
        str(EXAMPLE / "pipeline.yaml"),
        "--set",
        "scan.pace=max",
        cwd=cwd,
    )
    return result, cwd / "out" / "xas-p65.nxs"


def _entries(path: Path) -> dict[str, str]:
    with h5py.File(path, "r") as f:
        return {f[name]["entry_identifier"][()].decode(): name for name in f}


def test_run_succeeds_with_one_line_per_stream_and_a_summary(run):
    result, path = run
    assert result.returncode == 0, result.stderr
    for scan in SCANS:
        assert re.search(rf"✓ {re.escape(scan.stem)}\s+\d+ msgs\s+\d+ msg/s", result.stderr)
    messages = sum(np.loadtxt(s).shape[0] for s in SCANS)
    assert f"finished: 5/5 streams, {messages} messages" in result.stderr
    assert "output: out/xas-p65.nxs" in result.stderr
    assert sorted(_entries(path)) == [s.stem for s in SCANS]


@pytest.mark.parametrize("scan", SCANS, ids=lambda p: p.stem)
def test_points_equal_numpy_on_the_same_file(run, scan):
    _, path = run
    columns = np.loadtxt(scan)
    with h5py.File(path, "r") as f:
        points = f[_entries(path)[scan.stem]]["points"]
        np.testing.assert_array_equal(points["id"][()], np.arange(1, len(columns) + 1))
        np.testing.assert_array_equal(points["energy"][()], columns[:, 0])
        np.testing.assert_array_equal(points["mu"][()], np.log(columns[:, 10] / columns[:, 11]))
        np.testing.assert_array_equal(points["mu_ref"][()], np.log(columns[:, 11] / columns[:, 12]))
        assert points.attrs["signal"] == "mu"
        assert points["energy"].attrs["units"] == "eV"


@pytest.mark.parametrize("scan", SCANS, ids=lambda p: p.stem)
def test_final_normalisation_equals_larch_on_the_whole_scan(run, scan):
    _, path = run
    params = load_pipeline(EXAMPLE / "pipeline.yaml").node_params("normalize")
    columns = np.loadtxt(scan)
    energy, mu = columns[:, 0], np.log(columns[:, 10] / columns[:, 11])
    expected = Group()
    pre_edge(
        energy,
        mu,
        group=expected,
        pre1=params.pre1,
        pre2=params.pre2,
        norm1=params.norm1,
        norm2=params.norm2,
    )
    with h5py.File(path, "r") as f:
        entry = f[_entries(path)[scan.stem]]
        normalized = entry["normalized"]
        assert entry.attrs["default"] == "normalized"
        assert normalized.attrs["signal"] == "norm"
        assert int(normalized["n_points"][()]) == len(columns)
        np.testing.assert_allclose(normalized["e0"][()], expected.e0, rtol=1e-9)
        assert normalized["e0"].attrs["units"] == "eV"
        np.testing.assert_allclose(normalized["edge_step"][()], expected.edge_step, rtol=1e-9)
        np.testing.assert_array_equal(normalized["energy"][()], energy)
        np.testing.assert_allclose(normalized["norm"][()], expected.norm, rtol=1e-9)


def test_file_reopens_with_nexusformat_and_nxcheck_finds_no_error(run):
    _, path = run
    root = nxload(str(path))
    entry = root[_entries(path)[SCANS[0].stem]]
    assert entry.plottable_data.nxsignal.nxname == "norm"
    errors, report = nxcheck(path)
    assert errors == 0, report

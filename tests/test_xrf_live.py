"""XRF spectra arriving live, fitted and mapped by a real ``beampipe run``:

* over EPICS Channel Access: the soft IOC of examples/xrf-map/scan_ioc.py (caproto, loopback
  only, ports chosen free) plays the mesh scan data/scan.mca point by point (motor positions,
  then the MCA spectrum, then the point counter; the points back to back, no wait between
  them); examples/xrf-map/pipeline-epics.yaml
  (``epics_source`` snapshot -> ``xrf.fit`` with ``positions`` -> ``map`` -> ``nexus_writer``);
* over ASAP::O (the FAKE of its documented client API, tests/fakes/asapo_fake): one message per
  spectrum (PyMca's XRFSpectrum.mca scaled per point, int32, ``dtype``/``shape`` meta) with the
  motor positions in the message's meta -> ``asapo_source`` -> ``xrf.fit`` -> ``map``; a
  message without its position stops the run, naming node, stream and id;
* from an HDF5 spectrum stack (one row per point, raster order) -> ``hdf5_replay`` ->
  ``xrf.fit`` -> ``map`` (pixels by message id).

In each, the written maps equal PyMca's fit called directly on the same spectra, placed at the
same positions (rtol 1e-6); a pixel never measured is NaN and counted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from caproto import CaprotoTimeoutError
from caproto.sync.client import read
from conftest import REPO, nxcheck
from conftest import beampipe as run_cli
from test_asapo import Fake, source
from test_asapo import broker as broker  # the fake broker fixture, used by name
from test_epics import _stop, _udp_port_taken, loopback_ca_env
from test_xrf_fit import DATA, direct_fit, read_spectrum

import beampipe
from beampipe.nodes.xrf.fit import XrfFit
from beampipe.testing import run

EXAMPLE = REPO / "examples" / "xrf-map"
READY_TIMEOUT = 60.0


def place(
    maps: h5py.Group, points: list[tuple[int, int, np.ndarray]], name: str, shape: tuple[int, int]
) -> None:
    """Assert that the maps of ``maps`` equal PyMca's direct fit of each ``(row, col, counts)``
    at its pixel (rtol 1e-6) and are NaN at the pixels of no point."""
    area, sigma, chisq = (maps[k][()] for k in ("area", "area_sigma", "chisq"))
    measured = maps["measured"][()]
    assert area.shape[1:] == shape
    for row, col, counts in points:
        ref = direct_fit(name, "linear", counts)
        lines = list(ref["groups"])
        np.testing.assert_allclose(area[:, row, col], [ref[g]["fitarea"] for g in lines], rtol=1e-6)
        np.testing.assert_allclose(
            sigma[:, row, col], [ref[g]["sigmaarea"] for g in lines], rtol=1e-6
        )
        np.testing.assert_allclose(chisq[row, col], ref["chisq"], rtol=1e-6)
    want = np.zeros(shape, dtype=bool)
    for row, col, _ in points:
        want[row, col] = True
    np.testing.assert_array_equal(measured, want)
    assert np.all(np.isnan(area[:, ~want])) and np.all(np.isnan(chisq[~want]))


# -- xrf.fit passes positions on -------------------------------------------------------------


def test_fit_passes_positions_given_as_data() -> None:
    y = read_spectrum("Steel.spe")
    msg = beampipe.Message(
        data={"mca": y.astype(np.int32), "samx": np.float64(1.5), "samy": np.int32(2)},
        stream="s",
        id=1,
    )
    params = {"config": str(DATA / "Steel.cfg"), "spectrum": "mca", "positions": ["samx", "samy"]}
    (out,) = run(XrfFit, [msg], params=params, name="fit").messages()
    assert out.data["samx"] == 1.5 and out.data["samx"].dtype == np.float64
    assert out.data["samy"] == 2.0 and out.data["samy"].shape == ()
    with pytest.raises(KeyError, match=r"fit: stream 's', id 1.*'samz'"):
        run(XrfFit, [msg], params={**params, "positions": ["samz"]}, name="fit")
    with pytest.raises(ValueError, match=r"fit: stream 's', id 1: position 'mca' has shape"):
        run(XrfFit, [msg], params={**params, "positions": ["mca"]}, name="fit")
    with pytest.raises(ValueError, match=r"positions \['area'\]: names the output uses itself"):
        XrfFit.Params(config=str(DATA / "Steel.cfg"), positions=["area"])


def test_positions_that_clash_with_the_output_fail_at_validate(tmp_path: Path) -> None:
    (tmp_path / "pipeline.yaml").write_text(f"""\
nodes:
  spectra: {{use: hdf5_replay, params: {{paths: [scan.h5], key: spectrum}}}}
  fit:
    use: xrf.fit
    params: {{config: {DATA / "Steel.cfg"}, positions: [samx, chisq]}}
connections:
  - spectra.out -> fit.in
""")
    done = run_cli("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode != 0
    err = " ".join(done.stderr.split())
    assert "pipeline.yaml:5: node 'fit': param 'positions'" in err, err
    assert "positions ['chisq']: names the output uses itself" in err, err


# -- EPICS -----------------------------------------------------------------------------------


def serve_ioc(
    argv: list[str], ready: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A repeater and the soft IOC ``python argv...`` on free loopback ports, with this test's
    Channel Access environment in ``os.environ`` (inherited by ``beampipe run``); yields
    ``folder`` once the PV ``ready`` answers, and stops both after."""
    env = loopback_ca_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log = folder / "ioc.log"
    with open(log, "w") as out:
        repeater = subprocess.Popen(
            [sys.executable, "-m", "caproto.commandline.repeater", "--quiet"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        ioc = subprocess.Popen(
            [sys.executable, *argv, "--interfaces", "127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert ioc.poll() is None, f"the scan IOC exited:\n{log.read_text()}"
            try:
                read(ready, repeater=False, timeout=5)
                break
            except (CaprotoTimeoutError, TimeoutError, ConnectionError):
                assert time.monotonic() < deadline, f"IOC not ready:\n{log.read_text()}"
        yield folder
    finally:
        _stop(ioc)
        _stop(repeater)
    repeater_port = int(env["EPICS_CA_REPEATER_PORT"])
    assert not _udp_port_taken(repeater_port), "a Channel Access repeater is left running"


@pytest.fixture
def scan_ioc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """examples/xrf-map/scan_ioc.py served (``serve_ioc``); yields the folder."""
    # the points back to back: none may be lost or merged
    argv = [str(EXAMPLE / "scan_ioc.py"), "-q", "--period", "0"]
    yield from serve_ioc(argv, "XRF:point", tmp_path, monkeypatch)


def test_epics_spectra_are_fitted_and_mapped(scan_ioc: Path) -> None:
    from PyMca5.PyMcaIO import specfilewrapper

    done = run_cli("run", str(EXAMPLE / "pipeline-epics.yaml"), cwd=scan_ioc, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 20 pixels not measured" in done.stderr
    scan = specfilewrapper.Specfile(str(EXAMPLE / "data" / "scan.mca"))[0]
    table = np.asarray(scan.data())  # ix iy samx samy I0
    points = [
        (round(table[3, j] / 0.5), round(table[2, j] / 0.5), np.asarray(scan.mca(j + 1)))
        for j in range(scan.nbmca())
    ]
    path = scan_ioc / "out" / "xrf-map-epics.nxs"
    with h5py.File(path, "r") as f:
        maps = f["scan_0001/maps"]
        place(maps, points, "Steel.spe", (4, 5))
        np.testing.assert_array_equal(maps["x"][()], [0.0, 0.5, 1.0, 1.5, 2.0])
        assert maps["x"].attrs["units"] == "um"
    errors, text = nxcheck(path)
    assert errors == 0, text


# -- ASAP::O ---------------------------------------------------------------------------------

SCALE = {(0, 0): 1.0, (0, 1): 0.5, (0, 2): 0.25, (1, 0): 2.0, (1, 2): 0.75}  # (1, 1) never sent


def asapo_pipeline(endpoint: str, config: str) -> str:
    """asapo_source -> xrf.fit (2 replicas) -> map (samx, samy in mm on a 2 x 3 grid) ->
    nexus_writer (out/maps.nxs)."""
    return f"""\
name: xrf-map-asapo
nodes:
  spectra: {{use: asapo_source, params: {source(endpoint, data_name="spectrum")}}}
  fit:
    use: xrf.fit
    replicas: 2
    params: {{config: {DATA / config}, mode: linear}}
  maps:
    use: map
    check_finite: false
    params:
      shape: [2, 3]
      fields: [area, area_sigma, chisq]
      x: samx
      y: samy
      grid: {{x: [10.0, 2.0], y: [0.0, -1.0], units: mm}}
      every: 2
  nexus:
    use: nexus_writer
    params: {{path: out/maps.nxs, groups: {{maps: {{mode: replace}}}}, xas: null}}
connections:
  - spectra.out -> fit.in
  - fit.out -> maps.in
  - maps.out -> nexus.maps
"""


def test_asapo_spectra_are_fitted_and_mapped(folder: Path, broker) -> None:
    fake: Fake = broker()
    y = read_spectrum("XRFSpectrum.mca")
    points, items = [], []
    for i, ((row, col), factor) in enumerate(SCALE.items(), start=1):
        counts = np.round(factor * y).astype(np.int32)
        points.append((row, col, counts))
        meta = {"dtype": "<i4", "shape": [counts.size], "samx": 10.0 + 2.0 * col, "samy": -row}
        items.append((i, counts, meta))
    fake.produce("scan_0007", items, finish=(len(items), None))
    (folder / "pipeline.yaml").write_text(asapo_pipeline(fake.endpoint, "XRFSpectrum.cfg"))
    done = run_cli("run", "pipeline.yaml", cwd=folder, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 6 pixels not measured" in done.stderr
    with h5py.File(folder / "out" / "maps.nxs", "r") as f:
        place(f["scan_0007/maps"], points, "XRFSpectrum.mca", (2, 3))


def test_asapo_spectrum_without_its_position_stops_the_run(folder: Path, broker) -> None:
    fake: Fake = broker()
    counts = read_spectrum("Steel.spe").astype(np.int32)
    meta = {"dtype": "<i4", "shape": [counts.size]}
    items = [(1, counts, {**meta, "samx": 10.0, "samy": 0.0}), (2, counts, {**meta, "samx": 12.0})]
    fake.produce("scan_0008", items, finish=(2, None))
    (folder / "pipeline.yaml").write_text(asapo_pipeline(fake.endpoint, "Steel.cfg"))
    done = run_cli("run", "pipeline.yaml", cwd=folder, timeout=600)
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "maps: stream 'scan_0008', id 2: no position 'samy'" in text, text


# -- HDF5 replay -----------------------------------------------------------------------------


def test_hdf5_replay_of_a_spectrum_stack_is_fitted_and_mapped(tmp_path: Path) -> None:
    # a raster of 2 x 3 points, one spectrum per row of the stack, in row-major order
    y = read_spectrum("Steel.spe")
    factors = [1.0, 0.5, 0.25, 2.0, 1.5, 0.75]
    stack = np.stack([np.round(f * y) for f in factors]).astype(np.uint32)
    with h5py.File(tmp_path / "scan_0003.h5", "w") as f:
        ds = f.create_dataset("entry/fluo/data", data=stack)
        ds.attrs["interpretation"] = "spectrum"
    (tmp_path / "pipeline.yaml").write_text(f"""\
name: xrf-map-replay
nodes:
  spectra:
    use: hdf5_replay
    params: {{paths: [scan_0003.h5], dataset: entry/fluo/data, key: spectrum}}
  fit:
    use: xrf.fit
    replicas: 2
    params: {{config: {DATA / "Steel.cfg"}}}
  maps:
    use: map
    check_finite: false
    params: {{shape: [2, 3], fields: [area, area_sigma, chisq]}}
  nexus:
    use: nexus_writer
    params: {{path: out/maps.nxs, groups: {{maps: {{mode: replace}}}}, xas: null}}
connections:
  - spectra.out -> fit.in
  - fit.out -> maps.in
  - maps.out -> nexus.maps
""")
    done = run_cli("run", "pipeline.yaml", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    points = [(k // 3, k % 3, stack[k]) for k in range(len(factors))]
    with h5py.File(tmp_path / "out" / "maps.nxs", "r") as f:
        place(f["scan_0003/maps"], points, "Steel.spe", (2, 3))

"""Multi-element XRF detectors on the live paths: one data item per element.

A live source sends each element of the detector as an item of its own (an EPICS IOC serves one
waveform PV per element with per-element ICR/OCR PVs; ``epics_source`` in ``snapshot`` mode
sends them as separate data items of one message). ``xrf.deadtime`` with ``spectrum: [mca1,
...]`` (and ``icr``/``ocr``/``dt_factor`` lists) stacks them in that order:

* in process: equal to numpy on the same arrays and to the stacked (elements, channels) path of
  a detector file (``mca_files`` of examples/xrf-map/data/xspress3), exactly; lists of other
  lengths refused at ``validate``, naming the param; a missing or ill-shaped item named with
  node, stream and id;
* through a real ``beampipe run``: the soft IOC tests/xrf_elements_ioc.py (caproto, loopback
  only) plays a 2 x 3 raster (one point never measured) of 4 elements: PyMca's real steel
  spectrum scaled per point and per element, divided by each element's ICR/OCR dead-time
  factor and rounded; ``epics_source`` snapshot -> ``xrf.deadtime`` (sum, ``icr_ocr``) ->
  ``xrf.fit`` -> ``map`` -> ``nexus_writer``. The maps equal PyMca's fit called directly on
  the numpy-corrected sum, placed at the positions (rtol 1e-6); the unmeasured pixel is NaN;
* through a real ``beampipe run`` from ASAP::O (the fake of its client API,
  tests/fakes/asapo_fake): one dataset per point, one substream per element (``asapo_source``
  with ``dataset: true`` sends ``spectrum_1`` ... ``spectrum_4``) -> ``xrf.deadtime`` (sum,
  ``correction: none``) -> ``xrf.fit`` -> ``map``: the maps equal PyMca's direct fit of the
  numpy sum.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO
from conftest import beampipe as run_cli
from test_asapo import Fake, source
from test_asapo import broker as broker  # the fake broker fixture, used by name
from test_xrf_detectors import xspress3 as xspress3  # the mca_files fixture, used by name
from test_xrf_fit import DATA, read_spectrum
from test_xrf_live import place, serve_ioc

import beampipe
from beampipe.nodes.columns import MissingColumn
from beampipe.nodes.xrf.deadtime import DeadTimeError, XrfDeadTime
from beampipe.testing import run

IOC = REPO / "tests" / "xrf_elements_ioc.py"
MCA = [f"mca{k}" for k in range(1, 5)]


def split(msg: beampipe.Message, **items: str) -> beampipe.Message:
    """``msg`` with its (elements, ...) items ``{name: prefix}`` sent as one item per element,
    ``<prefix>1``, ``<prefix>2``, ... (as a live source sends them)."""
    data = {k: v for k, v in msg.data.items() if k not in items}
    for name, prefix in items.items():
        for k, value in enumerate(msg.data[name], start=1):
            data[f"{prefix}{k}"] = value
    return beampipe.Message(data=data, metadata=msg.metadata, stream=msg.stream, id=msg.id)


def test_items_per_element_equal_the_stacked_path_and_numpy(
    xspress3: list[beampipe.Message],
) -> None:
    dtf = [f"dtf{k}" for k in range(1, 5)]
    items = [split(m, spectrum="mca", dt_factor="dtf") for m in xspress3[:4]]
    assert items[0].data["mca1"].ndim == 1 and items[0].data["dtf1"].ndim == 0
    for params in ({}, {"elements": "each"}, {"select": [0, 2]}):
        stacked = run(XrfDeadTime, xspress3[:4], params, name="dt", ports=["in"]).messages()
        listing = {**params, "spectrum": MCA, "dt_factor": dtf}
        listed = run(XrfDeadTime, items, listing, name="dt", ports=["in"]).messages()
        for got, want, raw in zip(listed, stacked, xspress3, strict=False):
            np.testing.assert_array_equal(got.data["spectrum"], want.data["spectrum"])
            np.testing.assert_array_equal(got.data["dt_factor"], want.data["dt_factor"])
            assert got.metadata["correction"] == "dt_factor"
            keep = params.get("select", [0, 1, 2, 3])
            corrected = raw.data["spectrum"][keep] * raw.data["dt_factor"][keep, None]
            if "elements" not in params:
                corrected = corrected.sum(0)
            np.testing.assert_array_equal(got.data["spectrum"], corrected)


def test_icr_ocr_items_and_positions_from_the_same_message() -> None:
    y = read_spectrum("Steel.spe")
    counts = np.stack([np.round(f * y) for f in (1.0, 0.5, 0.25)]).astype(np.int32)
    icr, ocr = np.array([5000.0, 4000.0, 3000.0]), np.array([4000.0, 4000.0, 0.0])
    data = {f"mca{k + 1}": counts[k] for k in range(3)}
    data |= {f"icr{k + 1}": np.float64(icr[k]) for k in range(3)}
    data |= {f"ocr{k + 1}": np.float64(ocr[k]) for k in range(3)}
    data |= {"samx": np.float64(1.5), "samy": np.int32(-2)}
    msg = beampipe.Message(data=data, stream="s", id=4)
    params = {
        "spectrum": MCA[:3],
        "icr": ["icr1", "icr2", "icr3"],
        "ocr": ["ocr1", "ocr2", "ocr3"],
        "positions": ["samx", "samy"],
    }
    results = run(XrfDeadTime, [msg], params, name="dt", ports=["in"])
    (out,) = results.messages()
    factor = np.array([1.25, 1.0, 1.0])  # an OCR of 0: factor 1, warned about
    np.testing.assert_array_equal(out.data["dt_factor"], factor)
    np.testing.assert_array_equal(out.data["spectrum"], (counts * factor[:, None]).sum(0))
    assert out.metadata["correction"] == "icr_ocr"  # found by auto
    assert out.metadata["positions"] == {"samx": 1.5, "samy": -2.0}
    assert any("dt: stream 's', id 4" in w and "element(s) 2" in w for w in results.warnings)


def test_bad_items_named_with_node_stream_and_id() -> None:
    y = np.arange(8.0)
    ok = {"mca1": y, "mca2": y, "dtf1": np.float64(1.0), "dtf2": np.float64(2.0)}
    params = {"spectrum": MCA[:2], "dt_factor": ["dtf1", "dtf2"]}

    def fails(data: dict, error: type, match: str) -> None:
        msg = beampipe.Message(data=data, stream="s", id=3)
        with pytest.raises(error, match=match):
            run(XrfDeadTime, [msg], params, name="dt", ports=["in"])

    fails({**ok, "mca2": y[:6]}, DeadTimeError, r"dt: stream 's', id 3: spectrum item 'mca2'")
    fails({**ok, "dtf2": np.ones(2)}, DeadTimeError, r"dt: stream 's', id 3: item 'dtf2' of shape")
    missing = {k: v for k, v in ok.items() if k != "mca2"}
    fails(missing, MissingColumn, r"mca2")
    no_rates = {k: v for k, v in ok.items() if k != "dtf1"}
    fails(no_rates, DeadTimeError, r"id 3: no dead-time data .* looks for dtf1, dtf2; or icr, ocr")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{spectrum: [mca1, mca2], icr: [i1], ocr: [o1, o2]}", "param 'icr'"),
        ("{spectrum: mca, dt_factor: [d1, d2]}", "param 'dt_factor'"),
        ("{spectrum: [mca1, mca1]}", "param 'spectrum'"),
    ],
)
def test_lists_of_other_lengths_fail_at_validate(tmp_path: Path, params: str, message: str) -> None:
    (tmp_path / "pipeline.yaml").write_text(f"""\
nodes:
  beam: {{use: hdf5_replay, params: {{paths: [scan.h5], key: spectrum}}}}
  dt: {{use: xrf.deadtime, params: {params}}}
connections:
  - beam.out -> dt.in
""")
    done = run_cli("validate", "pipeline.yaml", cwd=tmp_path)
    assert done.returncode != 0
    err = " ".join(done.stderr.split())
    assert f"pipeline.yaml:3: node 'dt': {message}" in err, err


# -- a real run against a soft IOC of 4 elements ---------------------------------------------

SCALE = {(0, 0): 1.0, (0, 1): 0.5, (0, 2): 0.25, (1, 0): 2.0, (1, 2): 0.75}  # (1, 1) never sent
ELEMENTS = np.array([1.0, 0.8, 0.6, 0.3])  # each element's share of the point's spectrum


def scan() -> dict[str, np.ndarray]:
    """The IOC's points: positions (um, 0.5 um raster), per-element counts and count rates."""
    y = read_spectrum("Steel.spe")
    rows = [
        (row, col, f * ELEMENTS[:, None] * y / (1.0 + 0.05 * (row + col + np.arange(4)))[:, None])
        for (row, col), f in SCALE.items()
    ]
    icr = np.array([[2.0e5 + 1e4 * k + 3e3 * i for k in range(4)] for i in range(len(rows))])
    ocr = icr / (1.0 + 0.05 * np.array([[r + c + k for k in range(4)] for r, c, _ in rows]))
    return {
        "samx": np.array([0.5 * c for _, c, _ in rows]),
        "samy": np.array([0.5 * r for r, _, _ in rows]),
        "counts": np.round(np.stack([s for *_, s in rows])).astype(np.int32),
        "icr": icr,
        "ocr": ocr,
    }


@pytest.fixture
def elements_ioc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tests/xrf_elements_ioc.py playing ``scan()`` (saved as scan.npz), points back to back."""
    np.savez(tmp_path / "scan.npz", **scan())
    argv = [str(IOC), "--points", str(tmp_path / "scan.npz"), "-q", "--period", "0"]
    yield from serve_ioc(argv, "XSP3:point", tmp_path, monkeypatch)


def test_epics_elements_corrected_summed_fitted_and_mapped(elements_ioc: Path) -> None:
    pvs = {"samx": "XSP3:samx", "samy": "XSP3:samy", "point": "XSP3:point"}
    for k in range(1, 5):
        pvs |= {f"mca{k}": f"XSP3:{k}:ARR{k}:ArrayData"}
        pvs |= {f"icr{k}": f"XSP3:C{k}:ICR", f"ocr{k}": f"XSP3:C{k}:OCR"}
    (elements_ioc / "pipeline.yaml").write_text(f"""\
name: xrf-elements-epics
nodes:
  beam:
    use: epics_source
    params:
      pvs: {pvs}
      mode: snapshot
      trigger: point
      initial: false
      stream: scan_0001
      messages: {len(SCALE)}
      timeout: 10
  dt:
    use: xrf.deadtime
    params:
      correction: icr_ocr
      spectrum: {MCA}
      icr: [icr1, icr2, icr3, icr4]
      ocr: [ocr1, ocr2, ocr3, ocr4]
      positions: [samx, samy]
  fit:
    use: xrf.fit
    replicas: 2
    params: {{config: {DATA / "Steel.cfg"}, mode: linear}}
  maps:
    use: map
    check_finite: false
    params:
      shape: [2, 3]
      fields: [area, area_sigma, chisq]
      x: positions.samx
      y: positions.samy
      grid: {{x: [0.0, 0.5], y: [0.0, 0.5], units: um}}
  nexus:
    use: nexus_writer
    params: {{path: out/maps.nxs, groups: {{maps: {{mode: replace}}}}, xas: null}}
connections:
  - beam.out -> dt.in
  - dt.out -> fit.in
  - fit.out -> maps.in
  - maps.out -> nexus.maps
""")
    done = run_cli("run", "pipeline.yaml", cwd=elements_ioc, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 6 pixels not measured" in done.stderr
    points = scan()
    factor = points["icr"] / points["ocr"]
    corrected = (points["counts"] * factor[:, :, None]).sum(axis=1)  # numpy, per point
    placed = [(r, c, corrected[i]) for i, (r, c) in enumerate(SCALE)]
    with h5py.File(elements_ioc / "out" / "maps.nxs", "r") as f:
        place(f["scan_0001/maps"], placed, "Steel.spe", (2, 3))


# -- ASAP::O: one dataset substream per element ----------------------------------------------


def test_asapo_dataset_of_element_substreams_summed_fitted_and_mapped(folder: Path, broker) -> None:
    fake: Fake = broker()
    points = scan()
    parts = []
    for i, (row, col) in enumerate(SCALE):
        for k in range(1, 5):
            counts = points["counts"][i, k - 1]
            meta = {"dtype": "<i4", "shape": [counts.size], "samx": 0.5 * col, "samy": 0.5 * row}
            parts.append((i + 1, k, counts, meta))
    fake.produce("scan_0009", parts, dataset=4, finish=(len(SCALE), None))
    params = source(fake.endpoint, dataset=True, data_name="spectrum")
    (folder / "pipeline.yaml").write_text(f"""\
nodes:
  spectra: {{use: asapo_source, params: {params}}}
  dt:
    use: xrf.deadtime
    params: {{correction: none, spectrum: [spectrum_1, spectrum_2, spectrum_3, spectrum_4]}}
  fit: {{use: xrf.fit, params: {{config: {DATA / "Steel.cfg"}, mode: linear}}}}
  maps:
    use: map
    check_finite: false
    params:
      shape: [2, 3]
      fields: [area, area_sigma, chisq]
      x: samx
      y: samy
      grid: {{x: [0.0, 0.5], y: [0.0, 0.5], units: um}}
  nexus:
    use: nexus_writer
    params: {{path: out/maps.nxs, groups: {{maps: {{mode: replace}}}}, xas: null}}
connections:
  - spectra.out -> dt.in
  - dt.out -> fit.in
  - fit.out -> maps.in
  - maps.out -> nexus.maps
""")
    done = run_cli("run", "pipeline.yaml", cwd=folder, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 of 6 pixels not measured" in done.stderr
    summed = points["counts"].astype(np.float64).sum(axis=1)  # numpy, per point
    placed = [(r, c, summed[i]) for i, (r, c) in enumerate(SCALE)]
    with h5py.File(folder / "out" / "maps.nxs", "r") as f:
        place(f["scan_0009/maps"], placed, "Steel.spe", (2, 3))
